#!/usr/bin/env python3
"""Multi-process training on CPU (Gloo): FSDP(2), FSDP(4), HSDP(2x2) and DDP(2) against one
process with the same global batch; the reshard settings; activation checkpointing and
gradient accumulation under FSDP; memory per rank; bad layouts and a killed rank; a torchrun
launch.

Usage: python3 tests/integration/test_distributed.py --titan build/titan
Prints one line per check and `N passed, N failed`; exits 0 only if none failed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from launch import scratch_dir  # noqa: E402
from launch import LAYOUT_BASE as BASE  # noqa: E402
from launch import ROOT, Checks, free_port, latest_run, rank_env, read_jsonl, read_state, rel, run_layout  # noqa: E402
from launch import worst_rel, worst_update_diff  # noqa: E402
from launch import launch_into as launch  # noqa: E402
from launch import step_metrics as metrics  # noqa: E402
TOL = 1e-5
UPDATE_TOL = 1e-4  # each parameter's update over the run, L2 (launch.worst_update_diff); noise is below 1e-5
# Validation every 5 steps over 2 batches of the same global size as training.
VAL = ["--validation.enable", "--validation.dataset", "synthetic", "--validation.seq_len", "64",
       "--validation.freq", "5", "--validation.steps", "2"]
checks = Checks()
check = checks.check


def validations(dump: str) -> list[dict]:
    return [r for r in latest_run(read_jsonl(os.path.join(dump, "metrics.jsonl"))) if "validate_step" in r]


def step_rows(path: str) -> list[dict]:
    return [r for r in latest_run(read_jsonl(path)) if "step" in r]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--titan", required=True)
    titan = os.path.abspath(ap.parse_args().titan)
    tmp = scratch_dir("titan_dist_")

    single_dump = os.path.join(tmp, "single")
    final = "final_state"  # TITAN_TEST_FINAL_STATE: the gathered parameters at the end, in the dump folder
    (rc, out, err), = launch(titan, 1, BASE + ["--training.local_batch_size", "8", "--validation.local_batch_size", "8"]
                             + VAL, single_dump, env={"TITAN_TEST_FINAL_STATE": os.path.join(single_dump, final),
                                  "TITAN_TEST_INITIAL_STATE": os.path.join(single_dump, "initial_state")})
    if rc != 0:
        check("single-process reference run", False, err[-800:])
        return 1
    ref = metrics(single_dump)
    initial = read_state(os.path.join(single_dump, "initial_state"))  # every layout starts from these

    layouts = {
        "FSDP(2)": (2, ["--training.local_batch_size", "4", "--validation.local_batch_size", "4"] + VAL),
        "FSDP(4)": (4, ["--training.local_batch_size", "2"]),
        "HSDP(2x2)": (4, ["--training.local_batch_size", "2", "--parallelism.data_parallel_replicate_degree", "2"]),
        "DDP(2)": (2, ["--training.local_batch_size", "4", "--parallelism.data_parallel_replicate_degree", "2",
                       "--parallelism.data_parallel_shard_degree", "1"]),
        "FSDP(2) reshard always": (2, ["--training.local_batch_size", "4",
                                       "--parallelism.fsdp_reshard_after_forward", "always"]),
        "FSDP(2) reshard never": (2, ["--training.local_batch_size", "4",
                                      "--parallelism.fsdp_reshard_after_forward", "never"]),
        "FSDP(2) + full AC": (2, ["--training.local_batch_size", "4", "--activation_checkpoint.mode", "full"]),
        "FSDP(2) + op AC": (2, ["--training.local_batch_size", "4", "--activation_checkpoint.mode", "selective",
                                "--activation_checkpoint.selective_ac_option", "op"]),
        "FSDP(2) + grad accumulation": (2, ["--training.local_batch_size", "2", "--training.global_batch_size", "8"]),
        "FSDP(2) + grad accumulation, one reduce per step": (
            2, ["--training.local_batch_size", "2", "--training.global_batch_size", "8",
                "--no-parallelism.fsdp_sync_every_microbatch"]),
    }
    runs = {}
    for name, (world, extra) in layouts.items():
        dump = os.path.join(tmp, name.replace(" ", "_").replace("(", "").replace(")", "").replace("+", ""))
        got = run_layout(checks, titan, name, world, BASE + extra, dump,
                         env={"TITAN_TEST_FINAL_STATE": os.path.join(dump, final)})
        if got is None:
            continue
        runs[name] = got
        # Not only two numbers per step: every parameter at the end, against one process's.
        worst, where = worst_update_diff(read_state(os.path.join(dump, final)),
                                         read_state(os.path.join(single_dump, final)), initial)
        check(f"{name}: the final parameters match one process's (update: worst {worst:.1e} of its L2 norm, {where})",
              worst <= UPDATE_TOL)
        worst_loss, worst_norm = worst_rel(got, ref, "loss"), worst_rel(got, ref, "grad_norm")
        check(f"{name}: 10 steps match one process (loss {worst_loss:.1e}, grad norm {worst_norm:.1e})",
              len(got) == 10 and worst_loss <= TOL and worst_norm <= TOL)
        check(f"{name}: step 1 loss identical", got[0]["loss"] == ref[0]["loss"],
              f"{got[0]['loss']!r} vs {ref[0]['loss']!r}")

    # The step's values reach the host in one read (on a GPU, the one synchronisation): whatever the
    # layout and the number of microbatches.
    syncs = {name: sorted({r["host_syncs"] for r in got}) for name, got in runs.items()}
    syncs["one process"] = sorted({r["host_syncs"] for r in ref})
    check(f"one host read per step in every layout, with and without gradient accumulation ({len(syncs)} runs)",
          all(v == [1] for v in syncs.values()), str(syncs))

    acc, once = "FSDP(2) + grad accumulation", "FSDP(2) + grad accumulation, one reduce per step"
    if acc in runs and once in runs:
        per_step = [runs[k][4]["comm_bytes"]["reduce_scatter"] - runs[k][3]["comm_bytes"]["reduce_scatter"] for k in (acc, once)]
        check(f"FSDP(2), 2 microbatches: reducing once per step halves the reduce-scatter bytes ({per_step[1] / 1e6:.2f} "
              f"vs {per_step[0] / 1e6:.2f} MB)", abs(per_step[1] * 2 - per_step[0]) <= 0.01 * per_step[0])

    if "FSDP(2)" in runs and "FSDP(2) + op AC" in runs:
        same = [(s["loss"], s["grad_norm"]) for s in runs["FSDP(2) + op AC"]] == [
            (s["loss"], s["grad_norm"]) for s in runs["FSDP(2)"]]
        check("FSDP(2): op-level activation checkpointing gives the losses and grad norms of none, bit for bit", same)

    if "FSDP(2)" in runs:
        dump = os.path.join(tmp, "FSDP2")
        got, want = validations(dump), validations(single_dump)
        worst = max((rel(g["validation_loss"], w["validation_loss"]) for g, w in zip(got, want)), default=1.0)
        check(f"FSDP(2): validation at steps 1, 5, 10 matches one process (worst {worst:.1e})",
              [g["validate_step"] for g in got] == [1, 5, 10] == [w["validate_step"] for w in want] and worst <= TOL,
              f"{got} vs {want}")

    if all(k in runs for k in ("FSDP(2)", "FSDP(2) reshard always", "FSDP(2) reshard never")):
        same = all([s["loss"] for s in runs[k]] == [s["loss"] for s in runs["FSDP(2)"]]
                   for k in ("FSDP(2) reshard always", "FSDP(2) reshard never"))
        check("reshard_after_forward default/always/never give identical losses", same)

    single_bytes = ref[0]["state_bytes"]
    for name, shards in (("FSDP(2)", 2), ("FSDP(4)", 4), ("HSDP(2x2)", 2)):
        if name in runs:
            ratio = runs[name][0]["state_bytes"] * shards / single_bytes
            check(f"{name}: parameter+gradient+optimizer bytes per rank = total/{shards} (ratio {ratio:.3f})",
                  abs(ratio - 1) <= 1e-3)  # exact: the debug model needs no padding at these degrees

    # ---- nothing is gathered at the end of a run -----------------------------------------------------
    # Each rank's peak memory after its last step line (the kernel's ru_maxrss of a process counts from
    # the last reset of its peak, which every step line makes) against its memory after that step: the
    # end of the run adds nothing. Gathering the whole model there, as a run once did, adds twice the
    # parameters. A large vocabulary makes the parameters (P) large against the noise.
    dump = os.path.join(tmp, "end_peak")
    args = BASE + ["--model.vocab_size", "65536", "--training.local_batch_size", "2", "--training.steps", "3",
                   "--metrics.log_freq", "1", "--metrics.save_for_all_ranks", "--job.dump_folder", dump]
    port = free_port()
    procs = [subprocess.Popen([titan, "train", *args], cwd=ROOT, env=rank_env(r, 2, port), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for r in range(2)]
    end_peaks, codes = [], []
    for p in procs:
        _, status, usage = os.wait4(p.pid, 0)
        codes.append(os.waitstatus_to_exitcode(status))
        end_peaks.append(usage.ru_maxrss * 1024.0)
    if codes == [0, 0]:
        last = [step_rows(os.path.join(dump, f))[-1] for f in ("metrics.jsonl", "metrics_rank1.jsonl")]
        params = last[0]["state_bytes"] / 2  # FSDP(2): parameters, gradients and two moments of half the model
        rises = [peak - row["rss_gib"] * 2**30 for peak, row in zip(end_peaks, last)]
        check(f"FSDP(2): the end of a run adds no memory (after the last step: {rises[0] / 2**20:+.1f} and "
              f"{rises[1] / 2**20:+.1f} MiB; the model is {params / 2**20:.0f} MiB)",
              all(r < params / 4 for r in rises))
    else:
        check("FSDP(2): the end of a run adds no memory", False, f"exit codes {codes}")

    # ---- bf16 parameters under FSDP train ----------------------------------------------------------
    # Forced bf16, sized for a CPU that emulates it (32 tokens per rank and step).
    bf16 = [a if a != "float32" else "bfloat16" for a in BASE] + [
        "--training.cpu_bf16", "always", "--training.seq_len", "16", "--optimizer.lr", "3e-3"]
    dump = os.path.join(tmp, "bf16")
    outs = launch(titan, 2, bf16 + ["--training.local_batch_size", "2"], dump)
    ok = all(o[0] == 0 for o in outs)
    m = metrics(dump) if ok else []
    check("FSDP(2) in bfloat16 trains", ok and m[-1]["loss"] < m[0]["loss"] - 1.0
          and "parameters in bfloat16" in outs[0][1] + outs[0][2], outs[0][2][-400:])

    # ---- bad layout: every rank exits 2 quickly, one message ------------------------------------------
    start = time.time()
    outs = launch(titan, 2, BASE + ["--parallelism.data_parallel_shard_degree", "3"], os.path.join(tmp, "bad"), 60)
    took = time.time() - start
    check(f"degrees not matching the world size: every rank exits 2 in {took:.1f}s",
          all(o[0] == 2 for o in outs) and took < 20 and all("but there are 2 processes" in o[2] for o in outs),
          str([(o[0], o[2][-200:]) for o in outs]))

    # ---- one rank killed: the others exit non-zero within the train timeout ---------------------------
    port = free_port()
    procs = []
    for rank in range(2):
        env = rank_env(rank, 2, port)
        procs.append(subprocess.Popen([titan, "train", *BASE, "--training.steps", "100000", "--metrics.log_freq", "1",
                                       "--comm.train_timeout_seconds", "20", "--training.local_batch_size", "4",
                                       "--job.dump_folder", os.path.join(tmp, f"kill{rank}")],
                                      cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    # Two steps done (rank 0's metrics), or two minutes: never an endless wait.
    kill_metrics = os.path.join(tmp, "kill0", "metrics.jsonl")
    deadline = time.time() + 120
    while time.time() < deadline and procs[0].poll() is None:
        if os.path.exists(kill_metrics) and sum(1 for _ in open(kill_metrics)) >= 2:
            break
        time.sleep(0.1)
    procs[1].kill()
    start = time.time()
    try:
        procs[0].communicate(timeout=40)
        took = time.time() - start
        check(f"a killed rank: the other exits non-zero ({procs[0].returncode}) in {took:.1f}s",
              procs[0].returncode not in (0, None) and took < 25)
    except subprocess.TimeoutExpired:
        procs[0].kill()
        check("a killed rank: the other exits", False, "hung")
    procs[1].communicate()

    # ---- torchrun --no-python ----------------------------------------------------------------------------
    if True:  # torch is installed wherever these tests run
        env = dict(os.environ, OMP_NUM_THREADS="1")
        p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                            "--no-python", titan, "train", *BASE, "--training.steps", "2",
                            "--training.local_batch_size", "4", "--job.dump_folder", os.path.join(tmp, "torchrun")],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        check("torchrun --no-python launches 2 ranks", p.returncode == 0 and "launched by torchrun" in p.stdout
              and "Training completed" in p.stdout, (p.stdout + p.stderr)[-600:])

    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
