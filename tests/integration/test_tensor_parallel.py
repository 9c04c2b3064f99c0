#!/usr/bin/env python3
"""Tensor parallelism (with sequence and loss parallelism) and 2D layouts on CPU processes
(Gloo): TP(2), TP(4), FSDP(2)xTP(2), DDP(2)xTP(2), HSDP(2x2)xTP(2) (8 processes), TP(2) with
gradient accumulation, with full and op-level activation checkpointing and with the logits
gathered (loss parallel off), PP(2)xTP(2),
against one process with the same global batch; async TP on TP(2), TP(4), FSDP(2)xTP(2), TP(2)
with full AC and PP(2)xTP(2), each equal to blocking TP bit for bit, its blocks' collectives sent point to point
forward and backward (counted in a profiled step); the initial parameters of every layout equal
one process's bit for bit; the 1B flavor materialised under FSDP(4) within 1.3x its shard;
the parallel styles against the unsharded computation; bad layouts.

Usage: python3 tests/integration/test_tensor_parallel.py --titan build/titan [--checks build/distributed_checks]
Prints one line per check and `N passed, N failed`; exits 0 only if none failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from launch import scratch_dir  # noqa: E402
from launch import LAYOUT_BASE as BASE  # noqa: E402
from launch import read_state, worst_update_diff  # noqa: E402
from launch import ROOT, Checks, check_refused, free_port, rank_env, rel, run_layout, worst_rel  # noqa: E402
from launch import launch_into as launch  # noqa: E402
from launch import step_metrics as metrics  # noqa: E402

TOL = 1e-5
PP = ["--parallelism.pipeline_parallel_degree", "2", "--parallelism.pipeline_parallel_schedule", "1F1B",
      "--parallelism.pipeline_parallel_microbatch_size", "2", "--parallelism.data_parallel_shard_degree", "1"]
UPDATE_TOL = 1e-4  # each parameter's update over the run, L2 (launch.worst_update_diff); noise is below 1e-5
checks = Checks()
check = checks.check


DISTRIBUTED_CHECKS = 14  # the PASS/FAIL lines tests/integration/distributed_checks.cpp prints


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--titan", required=True)
    ap.add_argument("--checks", help="the distributed_checks binary (parallel styles against the unsharded "
                                     "computation, FSDP with several microbatch graphs)")
    opts = ap.parse_args()
    titan = os.path.abspath(opts.titan)
    tmp = scratch_dir("titan_tp_")

    single = os.path.join(tmp, "single")
    (rc, out, err), = launch(titan, 1, BASE + ["--training.local_batch_size", "8"], single,
                             env={"TITAN_TEST_INITIAL_STATE": os.path.join(tmp, "init_single"),
                                  "TITAN_TEST_FINAL_STATE": os.path.join(single, "final_state")})
    if rc != 0:
        check("single-process reference run", False, err[-800:])
        return checks.summary()
    ref = metrics(single)
    initial = read_state(os.path.join(tmp, "init_single"))

    tp2 = ["--parallelism.tensor_parallel_degree", "2"]
    layouts = {
        "TP(2)": (2, tp2 + ["--training.local_batch_size", "8"]),
        "TP(4)": (4, ["--parallelism.tensor_parallel_degree", "4", "--training.local_batch_size", "8"]),
        "FSDP(2)xTP(2)": (4, tp2 + ["--training.local_batch_size", "4"]),
        "DDP(2)xTP(2)": (4, tp2 + ["--training.local_batch_size", "4", "--parallelism.data_parallel_replicate_degree", "2",
                                   "--parallelism.data_parallel_shard_degree", "1"]),
        "HSDP(2x2)xTP(2)": (8, tp2 + ["--training.local_batch_size", "2", "--parallelism.data_parallel_replicate_degree", "2"]),
        "TP(2) + grad accumulation": (2, tp2 + ["--training.local_batch_size", "4", "--training.global_batch_size", "8"]),
        "TP(2) + full AC": (2, tp2 + ["--training.local_batch_size", "8", "--activation_checkpoint.mode", "full"]),
        "TP(2) + op AC": (2, tp2 + ["--training.local_batch_size", "8", "--activation_checkpoint.mode", "selective",
                                    "--activation_checkpoint.selective_ac_option", "op"]),
        "TP(2), loss parallel off": (2, tp2 + ["--training.local_batch_size", "8", "--parallelism.disable_loss_parallel"]),
        "FSDP(2)xTP(2), no fused kernels": (4, tp2 + ["--training.local_batch_size", "4", "--no-compile.enable"]),
        "PP(2)xTP(2)": (4, tp2 + PP + ["--training.local_batch_size", "8"]),
    }
    # Async TP: the same layouts with the collectives pipelined with the matmuls.
    for name in ["TP(2)", "TP(4)", "FSDP(2)xTP(2)", "TP(2) + full AC", "PP(2)xTP(2)"]:
        world, extra = layouts[name]
        layouts[name + ", async TP"] = (world, extra + ["--parallelism.enable_async_tensor_parallel"])
    runs = {}
    for name, (world, extra) in layouts.items():
        dump = os.path.join(tmp, re.sub(r"[^A-Za-z0-9]+", "_", name))
        state = os.path.join(tmp, "init_" + re.sub(r"[^A-Za-z0-9]+", "_", name))
        start = time.time()
        got = run_layout(checks, titan, name, world, BASE + extra, dump,
                         env={"TITAN_TEST_INITIAL_STATE": state, "TITAN_TEST_FINAL_STATE": os.path.join(dump, "final_state")})
        if got is None:
            continue
        runs[name] = got
        worst_loss, worst_norm = worst_rel(got, ref, "loss"), worst_rel(got, ref, "grad_norm")
        check(f"{name}: 10 steps match one process (loss {worst_loss:.1e}, grad norm {worst_norm:.1e}, "
              f"step 1 loss {'identical' if got[0]['loss'] == ref[0]['loss'] else 'within ' + format(rel(got[0]['loss'], ref[0]['loss']), '.1e')}, "
              f"{time.time() - start:.0f} s)", len(got) == 10 and worst_loss <= TOL and worst_norm <= TOL)
        if name.startswith("PP("):  # a stage's state holds its own parameters (test_pipeline.py checks them)
            continue
        mine = read_state(state)
        check(f"{name}: initial parameters gathered equal one process's bit for bit",
              list(mine) == list(initial) and all(mine[n].view(torch.int32).equal(initial[n].view(torch.int32))
                                                  for n in initial),
              f"{len(mine)} vs {len(initial)} tensors")
        worst, where = worst_update_diff(read_state(os.path.join(dump, "final_state")),
                                         read_state(os.path.join(single, "final_state")), initial)
        check(f"{name}: the final parameters match one process's (update: worst {worst:.1e} of its L2 norm, {where})",
              worst <= UPDATE_TOL)

    if "TP(2)" in runs and "TP(2), loss parallel off" in runs:
        worst = max(rel(a["loss"], b["loss"]) for a, b in zip(runs["TP(2)"], runs["TP(2), loss parallel off"]))
        check(f"loss parallel on and off agree (worst {worst:.1e})", worst <= TOL)
    for name in [n for n in runs if n.endswith(", async TP")]:
        sync = runs.get(name[:-len(", async TP")])
        if sync is not None:
            check(f"{name}: the losses and grad norms of blocking TP, bit for bit",
                  [(s["loss"], s["grad_norm"]) for s in runs[name]] == [(s["loss"], s["grad_norm"]) for s in sync])
    # Async TP, forward and backward: a profiled step's trace holds the blocks' all-gathers and
    # reduce-scatters as ring sends (one per block per collective with TP(2): 4 in forward, 4 in
    # backward per layer); only the embedding's and the head's stay collectives.
    counts = {}
    for name, extra in [("blocking", []), ("async", ["--parallelism.enable_async_tensor_parallel"])]:
        dump = os.path.join(tmp, "profile_" + name)
        outs = launch(titan, 2, BASE + tp2 + ["--training.local_batch_size", "8", "--training.steps", "2",
                                              "--profiling.enable_profiling", "--profiling.profile_freq", "2",
                                              "--profiling.profiler_warmup", "1", "--profiling.profiler_active", "1",
                                              "--job.dump_folder", dump] + extra, dump)
        try:
            with open(os.path.join(dump, "profile_trace", "iteration_2", "rank0_trace.json")) as f:
                events = [e.get("name") for e in json.load(f)["traceEvents"]]
            counts[name] = {k: events.count("comm:" + k) for k in ("send", "all_gather", "reduce_scatter")}
        except (OSError, ValueError, KeyError) as e:
            check(f"profiled TP(2) {name} step", False, f"{e} {[o[0] for o in outs]} {outs[0][2][-300:]}")
    if len(counts) == 2:
        layers = 6  # configs/llama3/debug_model.toml
        check(f"async TP(2): a profiled step sends {counts['async']['send']} ring blocks, with "
              f"{counts['async']['all_gather']} all-gathers and {counts['async']['reduce_scatter']} reduce-scatters left "
              f"(blocking TP: {counts['blocking']['all_gather']} and {counts['blocking']['reduce_scatter']})",
              counts["async"] == {"send": 8 * layers, "all_gather": 2, "reduce_scatter": 2} and
              counts["blocking"] == {"send": 0, "all_gather": 2 + 4 * layers, "reduce_scatter": 2 + 4 * layers})
    if "TP(2)" in runs and "TP(2) + op AC" in runs:
        check("TP(2): op-level activation checkpointing gives the losses and grad norms of none, bit for bit",
              [(s["loss"], s["grad_norm"]) for s in runs["TP(2)"]] ==
              [(s["loss"], s["grad_norm"]) for s in runs["TP(2) + op AC"]])

    # ---- the parallel styles against the unsharded computation; FSDP with microbatches interleaved --
    if opts.checks:
        port = free_port()
        procs = [subprocess.Popen([os.path.abspath(opts.checks)], cwd=ROOT, env=rank_env(r, 2, port),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(2)]
        outs = [p.communicate(timeout=120)[0] for p in procs]
        printed = [line for line in outs[0].splitlines() if line.startswith(("PASS ", "FAIL "))]
        for line in printed:
            check(("style " if "FSDP" not in line else "") + line[5:], line.startswith("PASS"), line)
        # A check that stops being printed (a crash, a skipped branch) is a failure too.
        check(f"distributed_checks printed all {DISTRIBUTED_CHECKS} of its checks", len(printed) == DISTRIBUTED_CHECKS,
              f"{len(printed)} printed")
        check("distributed_checks: both ranks exit 0", all(p.returncode == 0 for p in procs), outs[0][-800:] + outs[1][-800:])
    else:
        checks.skip("parallel styles and FSDP microbatches", "no --checks binary given")

    # ---- the 1B flavor materialised under FSDP(4): each rank draws only its shard -----------------
    big = os.path.join(tmp, "big")
    start = time.time()
    outs = launch(titan, 4, ["--job.config_file", "configs/llama3/debug_model.toml", "--model.flavor", "1B",
                             "--training.seq_len", "16", "--training.local_batch_size", "1"], big, timeout=600,
                  env={"TITAN_TEST_STOP_AFTER_INIT": "1"})
    lines = [re.search(r"rank \d: Materialised this rank's parameters: ([\d.]+) GiB; peak resident memory grew by "
                       r"([\d.]+) GiB", o[1]) for o in outs]
    if all(o[0] == 0 for o in outs) and all(lines):
        ratios = [float(m.group(2)) / float(m.group(1)) for m in lines]
        check(f"1B under FSDP(4): per-rank peak memory during materialisation {max(ratios):.3f} x its shard "
              f"({float(lines[0].group(1)):.3f} GiB; {time.time() - start:.0f} s; at most 1.05)", max(ratios) <= 1.05)
    else:
        check("1B under FSDP(4) materialises", False, str([(o[0], o[2][-400:]) for o in outs]))

    # ---- bad layouts: every rank exits 2 within seconds, one message --------------------------------
    for name, world, extra, needle in [
        ("heads not divisible", 3, ["--parallelism.tensor_parallel_degree", "3", "--training.seq_len", "66"], "n_heads"),
        ("kv heads not divisible", 3, ["--parallelism.tensor_parallel_degree", "3", "--model.flavor", "3B",
                                       "--training.seq_len", "66"], "n_kv_heads"),
        ("sequence not divisible", 2, ["--parallelism.tensor_parallel_degree", "2", "--training.seq_len", "63"], "training.seq_len"),
        ("async TP with op-level AC", 2, ["--parallelism.tensor_parallel_degree", "2",
                                          "--parallelism.enable_async_tensor_parallel", "--activation_checkpoint.mode",
                                          "selective", "--activation_checkpoint.selective_ac_option", "op"],
         "enable_async_tensor_parallel"),
        ("mesh does not fit the world", 4, ["--parallelism.tensor_parallel_degree", "3"], "world size"),
    ]:
        check_refused(checks, titan, f"bad layout, {name}", world, BASE + extra, os.path.join(tmp, "bad"), needle)
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
