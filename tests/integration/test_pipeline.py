#!/usr/bin/env python3
"""Pipeline parallelism on CPU processes (Gloo): the debug model with 8 layers, 10 steps, fp32,
the same global batch as one process, loss and grad norm within 1e-5: PP(2) with every built-in
schedule, PP(4) with 1F1B and Interleaved1F1B, PP(2)xFSDP(2), PP(2)xTP(2), PP(2)xFSDP(2)xTP(2)
(8 processes), gradient accumulation, activation checkpointing inside the stages, validation
through the pipeline; a schedule CSV equal to 1F1B gives 1F1B's losses bit for bit; bad
pipeline configs exit 2 on every rank within seconds; ranks launched with different shapes are
refused before any data moves, naming both stages; a rank killed mid-schedule ends every rank,
and the flight recorder names the stages of the message that never came.

Usage: python3 tests/integration/test_pipeline.py --titan build/titan
Prints one line per check and `N passed, N failed`; exits 0 only if none failed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from launch import scratch_dir  # noqa: E402
from launch import LAYOUT_BASE, ROOT, Checks, check_refused, free_port, latest_run, rank_env, read_jsonl, rel  # noqa: E402
from launch import run_layout  # noqa: E402
from launch import launch_into as launch  # noqa: E402
from launch import read_state, worst_rel, worst_update_diff  # noqa: E402

TOL = 1e-5
UPDATE_TOL = 1e-4  # each parameter's update over the run, L2 (launch.worst_update_diff); noise is below 1e-5
BASE = LAYOUT_BASE + ["--model.n_layers", "8"]
VAL = ["--validation.enable", "--validation.dataset", "synthetic", "--validation.seq_len", "64",
       "--validation.freq", "5", "--validation.steps", "2", "--validation.local_batch_size", "4"]
checks = Checks()
check = checks.check


def pp(degree: int, schedule: str, microbatch: int = 2) -> list[str]:
    return ["--parallelism.pipeline_parallel_degree", str(degree), "--parallelism.pipeline_parallel_schedule", schedule,
            "--parallelism.pipeline_parallel_microbatch_size", str(microbatch)]


def validation_rows(dump: str) -> list[dict]:
    return [r for r in latest_run(read_jsonl(os.path.join(dump, "metrics.jsonl"))) if "validate_step" in r]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--titan", required=True)
    opts = ap.parse_args()
    titan = os.path.abspath(opts.titan)
    tmp = scratch_dir("titan_pp_")

    single = os.path.join(tmp, "single")
    (rc, _, err), = launch(titan, 1, BASE + VAL + ["--training.local_batch_size", "8"], single,
                           env={"TITAN_TEST_FINAL_STATE": os.path.join(single, "final_state"),
                                "TITAN_TEST_INITIAL_STATE": os.path.join(single, "initial_state")})
    if rc != 0:
        check("single-process reference run", False, err[-800:])
        return checks.summary()
    ref = [r for r in latest_run(read_jsonl(os.path.join(single, "metrics.jsonl"))) if "step" in r]
    initial = read_state(os.path.join(single, "initial_state"))  # every layout starts from these
    ref_val = validation_rows(single)

    lb8, lb4 = ["--training.local_batch_size", "8"], ["--training.local_batch_size", "4"]
    tp2 = ["--parallelism.tensor_parallel_degree", "2"]
    layouts = {
        "PP(2) GPipe": (2, pp(2, "GPipe") + lb8),
        "PP(2) 1F1B": (2, pp(2, "1F1B") + lb8),
        "PP(2) Interleaved1F1B": (2, pp(2, "Interleaved1F1B") + lb8),
        "PP(2) LoopedBFS": (2, pp(2, "LoopedBFS") + lb8),
        "PP(2) InterleavedZeroBubble": (2, pp(2, "InterleavedZeroBubble") + lb8),
        "PP(2) ZBVZeroBubble": (2, pp(2, "ZBVZeroBubble") + lb8),
        "PP(4) 1F1B": (4, pp(4, "1F1B") + lb8),
        "PP(4) Interleaved1F1B": (4, pp(4, "Interleaved1F1B", 1) + lb8),
        "PP(2)xFSDP(2) 1F1B": (4, pp(2, "1F1B", 1) + lb4),
        "PP(2)xFSDP(2) InterleavedZeroBubble": (4, pp(2, "InterleavedZeroBubble", 1) + lb4),
        "PP(2)xTP(2) 1F1B": (4, pp(2, "1F1B") + tp2 + lb8),
        "PP(2)xFSDP(2)xTP(2) Interleaved1F1B": (8, pp(2, "Interleaved1F1B", 1) + tp2 + lb4),
        "PP(2) 1F1B + gradient accumulation": (2, pp(2, "1F1B") + lb4 + ["--training.global_batch_size", "8"]),
        "PP(2) ZBVZeroBubble + full AC": (2, pp(2, "ZBVZeroBubble") + lb8 + ["--activation_checkpoint.mode", "full"]),
        "PP(2) 1F1B + op AC": (2, pp(2, "1F1B") + lb8 + ["--activation_checkpoint.mode", "selective",
                                                         "--activation_checkpoint.selective_ac_option", "op"]),
        "PP(2) 1F1B + validation": (2, pp(2, "1F1B") + lb8 + VAL),
    }
    runs = {}
    for name, (world, extra) in layouts.items():
        dump = os.path.join(tmp, re.sub(r"[^A-Za-z0-9]+", "_", name))
        start = time.time()
        got = run_layout(checks, titan, name, world, BASE + extra, dump,
                         env={"TITAN_TEST_FINAL_STATE": os.path.join(dump, "final_state")})
        if got is None:
            continue
        runs[name] = got
        # Every parameter at the end (each stage's, gathered over FSDP and TP), against one process's.
        worst, where = worst_update_diff(read_state(os.path.join(dump, "final_state")),
                                         read_state(os.path.join(single, "final_state")), initial)
        check(f"{name}: the final parameters match one process's (update: worst {worst:.1e} of its L2 norm, {where})",
              worst <= UPDATE_TOL)
        worst_loss, worst_norm = worst_rel(got, ref, "loss"), worst_rel(got, ref, "grad_norm")
        check(f"{name}: 10 steps match one process (loss {worst_loss:.1e}, grad norm {worst_norm:.1e}, "
              f"{time.time() - start:.0f} s)", len(got) == 10 and worst_loss <= TOL and worst_norm <= TOL)
        if "validation" in name:
            val = validation_rows(dump)
            worst = max((rel(a["validation_loss"], b["validation_loss"]) for a, b in zip(val, ref_val)), default=1.0)
            check(f"{name}: validation through the pipeline matches one process ({len(val)} passes, worst {worst:.1e})",
                  len(val) == len(ref_val) == 3 and worst <= TOL)

    # One host read per step (on a GPU, the one synchronisation), whatever the schedule and the number
    # of microbatches (the losses travel from the last stage on the device).
    syncs = {name: sorted({r["host_syncs"] for r in got}) for name, got in runs.items()}
    check(f"one host read per step in every pipeline layout, gradient accumulation included ({len(syncs)} runs)",
          len(syncs) > 0 and all(v == [1] for v in syncs.values()), str(syncs))

    # ---- checkpoints: a PP(2) run resumed at step 5 continues exactly; one process loads it ----------
    ck = ["--checkpoint.enable", "--checkpoint.interval", "5"]
    dump = os.path.join(tmp, "ck_pp")
    full = run_layout(checks, titan, "PP(2) 1F1B with checkpoints", 2, BASE + pp(2, "1F1B") + lb8 + ck, dump)
    if full is not None and "PP(2) 1F1B" in runs:
        shutil.rmtree(os.path.join(dump, "checkpoint", "step-10"))
        one = os.path.join(tmp, "ck_one")
        shutil.copytree(os.path.join(dump, "checkpoint"), os.path.join(one, "checkpoint"))
        resumed = run_layout(checks, titan, "PP(2) 1F1B resumed", 2, BASE + pp(2, "1F1B") + lb8 + ck, dump)
        if resumed is not None:
            check("PP(2): a run resumed from its step-5 checkpoint gives steps 6-10 of the uninterrupted run bit for bit",
                  [(r["loss"], r["grad_norm"]) for r in resumed] ==
                  [(r["loss"], r["grad_norm"]) for r in runs["PP(2) 1F1B"][5:]],
                  f"{[r['loss'] for r in resumed]} vs {[r['loss'] for r in runs['PP(2) 1F1B'][5:]]}")
        got = run_layout(checks, titan, "one process from the PP(2) checkpoint", 1, BASE + lb8 + ck, one)
        if got is not None:
            worst_loss = max((rel(a["loss"], b["loss"]) for a, b in zip(got, ref[5:])), default=1.0)
            check(f"one process loads the PP(2) checkpoint (resharded) and continues the curve (worst {worst_loss:.1e})",
                  len(got) == 5 and worst_loss <= TOL, str(got))

    # ---- a schedule table equal to 1F1B gives 1F1B's losses, bit for bit ------------------------------
    csv = os.path.join(tmp, "1f1b.csv")
    actions = subprocess.run([titan, "pp-schedule", "--schedule", "1F1B", "--stages", "2", "--microbatches", "4",
                              "--actions"], capture_output=True, text=True, cwd=ROOT).stdout
    rows = []
    for line in actions.splitlines():
        m = re.match(r"rank (\d+): (.*)", line)
        if m:
            rows.append(",".join(a for a in m.group(2).split() if "SEND" not in a and "RECV" not in a))
    with open(csv, "w") as f:
        f.write("\n".join(rows) + "\n")
    got = run_layout(checks, titan, "PP(2) from a CSV", 2,
                     BASE + pp(2, "1F1B") + lb8 + ["--parallelism.pipeline_parallel_schedule_csv", csv],
                     os.path.join(tmp, "csv"))
    if got is not None and "PP(2) 1F1B" in runs:
        check(f"a CSV table equal to 1F1B ({len(rows)} rows) gives 1F1B's losses and grad norms bit for bit",
              [(r["loss"], r["grad_norm"]) for r in got] == [(r["loss"], r["grad_norm"]) for r in runs["PP(2) 1F1B"]])

    # ---- bad configs: every rank exits 2 within seconds, one message ----------------------------------
    broken_csv = os.path.join(tmp, "broken.csv")
    with open(broken_csv, "w") as f:  # rank 1 never runs the backward of microbatch 3
        f.write(rows[0] + "\n" + ",".join(a for a in rows[1].split(",") if a != "1B3") + "\n")
    for name, world, extra, needle in [
        ("microbatches do not divide the batch", 2, pp(2, "1F1B", 3) + lb8, "pipeline_parallel_microbatch_size"),
        ("1F1B with fewer microbatches than stages", 4, pp(4, "1F1B", 1) + ["--training.local_batch_size", "2"],
         "microbatches"),
        ("layers that do not split for the schedule", 2, pp(2, "1F1B") + lb8 +
         ["--parallelism.pipeline_parallel_layers_per_stage", "3"], "pipeline_parallel_layers_per_stage"),
        ("a CSV with a backward missing", 2, pp(2, "1F1B") + lb8 +
         ["--parallelism.pipeline_parallel_schedule_csv", broken_csv], "backward of microbatch 3 of stage 1"),
    ]:
        check_refused(checks, titan, f"bad pipeline config, {name}", world, BASE + extra, os.path.join(tmp, "bad"), needle)

    # ---- ranks with different shapes: refused before any data moves, naming both stages --------------
    port = free_port()
    dump = os.path.join(tmp, "mismatch")
    procs = [subprocess.Popen([titan, "train", *BASE, *pp(2, "1F1B"), *lb8, "--job.dump_folder", dump,
                               "--training.seq_len", "64" if r == 0 else "32"],
                              cwd=ROOT, env=rank_env(r, 2, port), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(2)]
    start = time.time()
    outs = [p.communicate(timeout=120) for p in procs]
    took = time.time() - start
    errs = [o[1] for o in outs]
    check(f"ranks launched with different seq_len: both exit 2 in {took:.1f}s, naming stage 0's [2, 64, 256] and "
          f"stage 1's [2, 32, 256]",
          all(p.returncode == 2 for p in procs) and all("stage 0" in e and "stage 1" in e and "[2, 64, 256]" in e and
                                                        "[2, 32, 256]" in e for e in errs),
          str([(p.returncode, e[-500:]) for p, e in zip(procs, errs)]))

    # ---- a rank killed mid-schedule: every rank ends; the recorder names the stages ---------------------
    # The kill lands in a send/recv of the schedule most of the time, and sometimes in the step's
    # closing all-reduce; then the report names that collective instead, and the run is repeated
    # (up to 3 times) until one report names the stages of the message that never came.
    named, reports = False, []
    for attempt in range(3):
        port = free_port()
        dump = os.path.join(tmp, f"killed{attempt}")
        args = [*BASE, *pp(2, "1F1B"), *lb8, "--training.steps", "100000", "--job.dump_folder", dump,
                "--comm.train_timeout_seconds", "30"]
        procs = [subprocess.Popen([titan, "train", *args], cwd=ROOT, env=rank_env(r, 2, port), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for r in range(2)]
        metrics_file = os.path.join(dump, "metrics.jsonl")
        deadline = time.time() + 120
        while time.time() < deadline and not (os.path.exists(metrics_file) and len(read_jsonl(metrics_file)) >= 3):
            time.sleep(0.05)
        # Into the middle of the next step's schedule (a row is written as a step ends).
        rows = read_jsonl(metrics_file) if os.path.exists(metrics_file) else []
        time.sleep(0.5 * (rows[-1].get("step_seconds", 0.2) if rows else 0.2) * (1 + attempt) / 2)
        procs[1].send_signal(signal.SIGKILL)
        start = time.time()
        try:
            out0 = procs[0].communicate(timeout=90)
            took = time.time() - start
        except subprocess.TimeoutExpired:
            procs[0].kill()
            out0 = procs[0].communicate()
            took = -1.0
        procs[1].communicate()
        # What rank 0 said and how it ended, for a failure's detail (its exit status, stdout's end).
        ended = (f"rank 0 exit {procs[0].returncode}, {len(rows)} rows before the kill; stdout: {out0[0][-400:]!r}; "
                 f"stderr: ")
        check(f"rank 1 killed mid-schedule: rank 0 ends in {took:.1f}s with an error",
              took >= 0 and procs[0].returncode != 0, ended + out0[1][-600:])
        stages = re.search(r"pp (activations|gradients) stage \d -> stage \d", out0[1]) is not None
        collective = re.search(r"collective #\d+ of group '[^']+' \(\w+", out0[1]) is not None
        reports.append(ended + out0[1][-600:])
        if not (stages or collective):
            break  # a report that names neither: a failure, below
        if stages:
            named = True
            break
    check("the flight recorder report names the pipeline stages of the message that never came",
          named, " ||| ".join(reports)[-1500:])
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
