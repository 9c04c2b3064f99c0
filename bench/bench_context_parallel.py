#!/usr/bin/env python3
"""Context parallelism on CPU processes, in one run:

1. Peak memory per rank: the Llama 3 debug model (float32, fused kernels, `--layers` layers, one
   sequence per step) at each of `--seqs` on CP 1, 2 and 4, each rotate method. The peak is the
   training log's `memory:` of the second step (the peak resident memory over that step alone,
   reset after the first), with glibc returning every block of 128 KiB or more to the system when
   it is freed (MALLOC_MMAP_THRESHOLD_), so that resident memory follows the live tensors. The
   same layout at seq 512 gives the part that does not grow with the sequence (libtorch,
   parameters, optimizer state); the rest is what the sequence costs: activations, gathered keys
   and values, logits.
2. The memory estimate (`--job.dry_run`): the longest seq_len whose per-rank estimate fits
   `--budget-gib`, for CP 1, 2, 4 and 8, with activation checkpointing off and full.
3. Ring ("alltoall") against "allgather" on CP(2) at `--ring-seq`: the median step time and the
   bytes each rank sends per step, against the formula: keys and values of every layer,
   forward and backward, (cp-1) x B x Hk x T/cp x hd x 4 bytes each.

The processes share this machine's cores (CP(c) runs c processes of cores/c threads each), so
the step times compare methods, not CP degrees.

Usage: python3 bench/bench_context_parallel.py --titan build/titan [--seqs 8192,16384,32768] [--layers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KV_HEADS, HEAD_DIM = 16, 16  # the debug model's


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(titan: str, world: int, args: list[str], dump: str) -> tuple[float, list[dict]]:
    """Runs `titan train` on `world` ranks; returns rank 0's peak memory in its last logged step
    (GiB) and its step rows."""
    port = free_port()
    threads = max(1, (os.cpu_count() or 2) // world)
    procs = []
    for rank in range(world):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                   LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   OMP_NUM_THREADS=str(threads), MALLOC_MMAP_THRESHOLD_="131072")
        procs.append(subprocess.Popen([titan, "train", "--metrics.disable_color_printing"] + args + ["--job.dump_folder", dump],
                                      env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate()[0] for p in procs]
    for rank, p in enumerate(procs):
        if p.returncode != 0:
            sys.exit(f"rank {rank} of {args} failed: {logs[rank][-800:]}")
    peaks = re.findall(r"memory:\s*([\d.]+)GiB", logs[0])
    rows = [json.loads(line) for line in open(os.path.join(dump, "metrics.jsonl")) if line.strip()]
    return float(peaks[-1]), [r for r in rows if "step" in r]


def base_args(seq: int, layers: int, steps: int) -> list[str]:
    return ["--job.config_file", "configs/llama3/debug_model.toml", "--model.n_layers", str(layers),
            "--training.seq_len", str(seq), "--training.local_batch_size", "1", "--training.steps", str(steps),
            "--training.mixed_precision_param", "float32", "--activation_checkpoint.mode", "none",
            "--metrics.log_freq", "1", "--debug.seed", "7", "--lr_scheduler.warmup_steps", "1"]


def estimate_gib(titan: str, seq: int, cp: int, ac: str) -> float | None:
    """The dry run's per-rank estimate for the debug model at `seq` on CP(cp), or None if refused."""
    out = subprocess.run([titan, "train", "--job.config_file", "configs/llama3/debug_model.toml", "--job.dry_run",
                          "--training.seq_len", str(seq), "--training.local_batch_size", "1",
                          "--training.mixed_precision_param", "float32", "--activation_checkpoint.mode", ac,
                          "--parallelism.context_parallel_degree", str(cp), "--job.dump_folder",
                          tempfile.mkdtemp(prefix="titan_cp_dry_")], cwd=ROOT, capture_output=True, text=True)
    m = re.search(r"Memory per rank \(estimate\): ([\d.]+) GiB", out.stdout + out.stderr)
    return float(m.group(1)) if m else None


def longest_fitting(titan: str, cp: int, ac: str, budget: float) -> int:
    unit = 2 * cp * 1024  # head-tail chunks, in thousands of tokens
    lo, hi = 0, 1
    while (e := estimate_gib(titan, hi * unit, cp, ac)) is not None and e <= budget:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        e = estimate_gib(titan, mid * unit, cp, ac)
        lo, hi = (mid, hi) if e is not None and e <= budget else (lo, mid)
    return lo * unit


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--titan", required=True)
    ap.add_argument("--seqs", default="8192,16384,32768")
    ap.add_argument("--cps", default="1,2,4")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--budget-gib", type=float, default=8.0)
    ap.add_argument("--ring-seq", type=int, default=16384)
    ap.add_argument("--ring-steps", type=int, default=4)
    opts = ap.parse_args()
    titan = os.path.abspath(opts.titan)
    tmp = tempfile.mkdtemp(prefix="titan_bench_cp_")
    seqs = [int(s) for s in opts.seqs.split(",")]
    cps = [int(c) for c in opts.cps.split(",")]

    print(f"## 1. Peak memory of a training step per rank (GiB), debug model with {opts.layers} layers, "
          f"1 x seq tokens per step, float32, AC off\n")
    variants = [(1, "allgather")] + [(c, m) for c in cps if c > 1 for m in ("allgather", "alltoall")]
    label = {v: f"CP({v[0]})" + (f" {v[1]}" if v[0] > 1 else "") for v in variants}
    print("| seq | " + " | ".join(f"{label[v]}: peak, above seq 512" for v in variants) + " |")
    print("|---|" + "---|" * len(variants))

    def cp_args(v: tuple[int, str]) -> list[str]:
        return ["--parallelism.context_parallel_degree", str(v[0]), "--parallelism.context_parallel_rotate_method", v[1]]

    floor = {v: train(titan, v[0], base_args(512, opts.layers, opts.steps) + cp_args(v),
                      os.path.join(tmp, f"floor_{v[0]}_{v[1]}"))[0] for v in variants}
    grown = {}
    for seq in seqs:
        cells = []
        for v in variants:
            peak, _ = train(titan, v[0], base_args(seq, opts.layers, opts.steps) + cp_args(v),
                            os.path.join(tmp, f"mem_{seq}_{v[0]}_{v[1]}"))
            grown[(seq, v)] = peak - floor[v]
            cells.append(f"{peak:.3f}, {grown[(seq, v)]:.3f}")
        print(f"| {seq} | " + " | ".join(cells) + " |", flush=True)
    print("\nWhat the sequence costs, relative to CP(1) at the same seq:")
    for seq in seqs:
        print(f"- seq {seq}: " + ", ".join(f"{label[v]} {grown[(seq, v)] / grown[(seq, variants[0])]:.2f}"
                                           for v in variants[1:]))

    print(f"\n## 2. Longest seq_len whose estimate fits {opts.budget_gib:g} GiB per rank (debug model, 6 layers, "
          f"1 sequence, float32)\n")
    print("| activation checkpointing | " + " | ".join(f"CP({c})" for c in [1, 2, 4, 8]) + " |")
    print("|---|---|---|---|---|")
    for ac in ["none", "full"]:
        print(f"| {ac} | " + " | ".join(f"{longest_fitting(titan, c, ac, opts.budget_gib):,}" for c in [1, 2, 4, 8]) + " |")

    print(f"\n## 3. CP(2) at seq {opts.ring_seq}: ring (alltoall) against allgather\n")
    n = opts.ring_seq // 2 * KV_HEADS * HEAD_DIM  # one rank's keys (or values) in one layer, B = 1
    formula = opts.layers * 4 * n * 4
    print("| rotate method | median step (s) | all-gather bytes per step | reduce-scatter bytes per step |")
    print("|---|---|---|---|")
    for method in ["allgather", "alltoall"]:
        _, rows = train(titan, 2, base_args(opts.ring_seq, opts.layers, opts.ring_steps) +
                        ["--parallelism.context_parallel_degree", "2", "--parallelism.context_parallel_rotate_method",
                         method], os.path.join(tmp, f"ring_{method}"))
        times = [r["step_seconds"] for r in rows[1:]]
        ag = rows[-1]["comm_bytes"]["all_gather"] - rows[-2]["comm_bytes"]["all_gather"]
        rs = rows[-1]["comm_bytes"]["reduce_scatter"] - rows[-2]["comm_bytes"]["reduce_scatter"]
        print(f"| {method} | {statistics.median(times):.3f} | {ag:,.0f} | {rs:,.0f} |")
    print(f"\nKeys and values by the formula, layers x 4 x (cp-1) x B x Hk x T/cp x hd x 4 B = {formula:,} bytes a step "
          f"(the all-gather column also holds FSDP's parameter gathers and the loss rows).")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
