#!/usr/bin/env python3
"""Step time of async tensor parallelism against blocking TP, in one run.

The Llama 3 debug model (float32) trains `--steps` steps on TP(2) (two processes, one thread
each) with parallelism.enable_async_tensor_parallel off and on, alternating `--repeats` times;
reported: the median step time of each (steps after the third), the ratio, and the all-gather
and reduce-scatter bytes each rank sends per step (the communication statistics, which count
async TP's point-to-point rings as the collectives they stand for). Async TP pays where a
transfer can run beside a matmul (a GPU's copy engines and NCCL); on a CPU both compete for the
same cores.

Usage: python3 bench/bench_async_tp.py --titan build/titan [--steps 10] [--seq 512] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from launch import launch_into, step_metrics  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--titan", required=True)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=2)
    opts = ap.parse_args()
    base = ["--job.config_file", "configs/llama3/debug_model.toml", "--training.steps", str(opts.steps),
            "--training.seq_len", str(opts.seq), "--training.local_batch_size", "8", "--training.mixed_precision_param",
            "float32", "--parallelism.tensor_parallel_degree", "2", "--parallelism.data_parallel_shard_degree", "1",
            "--metrics.log_freq", "1", "--debug.seed", "7"]
    variants = {"blocking TP(2)": [], "async TP(2)": ["--parallelism.enable_async_tensor_parallel"]}
    times: dict[str, list[float]] = {k: [] for k in variants}
    losses: dict[str, list[float]] = {}
    sent: dict[str, float] = {}
    tmp = tempfile.mkdtemp(prefix="titan_bench_async_tp_")
    for _ in range(opts.repeats):
        for name, extra in variants.items():
            dump = os.path.join(tmp, name.replace(" ", "_").replace("(", "").replace(")", ""))
            shutil.rmtree(dump, ignore_errors=True)
            outs = launch_into(os.path.abspath(opts.titan), 2, base + extra, dump, timeout=1800)
            if any(o[0] != 0 for o in outs):
                raise SystemExit(f"{name} failed: {outs[0][2][-500:]}")
            rows = step_metrics(dump)
            times[name] += [r["step_seconds"] for r in rows if r["step"] > 3]
            losses[name] = [r["loss"] for r in rows]
            b, a = rows[-1]["comm_bytes"], rows[-2]["comm_bytes"]
            sent[name] = (b["all_gather"] - a["all_gather"]) + (b["reduce_scatter"] - a["reduce_scatter"])
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"debug model, float32, seq {opts.seq}, local batch 8, TP(2), {opts.steps} steps x {opts.repeats} runs each")
    ref = statistics.median(times["blocking TP(2)"])
    for name, t in times.items():
        m = statistics.median(t)
        print(f"{name:15}: median step {1000 * m:8.1f} ms ({m / ref:.2f}x blocking), all-gather + reduce-scatter "
              f"{sent[name] / 1e6:.2f} MB per step per rank")
    print("losses equal bit for bit:", losses["blocking TP(2)"] == losses["async TP(2)"])


if __name__ == "__main__":
    main()
