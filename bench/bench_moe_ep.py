#!/usr/bin/env python3
"""Expert parallelism on CPU processes, in one run: Qwen3's MoE debug model (`--layers` layers of
64 experts, top 8, float32, fused kernels, sequence `--seq`, `--batch` sequences per step) trained
on one process, on FSDP(2) and on EP(2), the same global batch and seed:

1. the median step time of steps 3 to `--steps` (the processes share this machine's cores: one
   process runs all of them, a 2-rank layout 2 processes of half as many threads each);
2. each rank's bytes per step by collective (metrics.jsonl's comm_bytes), and EP(2)'s all-to-all
   bytes against what its routing sent: 2 x (rows dispatched + rows combined) x dim x 4 bytes per
   layer, plus the counts (E/2 int64 per layer), which the run logs per layer as max/mean load
   only, so the formula is checked exactly with round-robin routing (debug.moe_force_load_balance)
   and printed for the learned routing;
3. peak memory per rank (the log's `memory:` of the last step, with glibc returning freed blocks
   of 128 KiB or more to the system, as bench_context_parallel.py runs it).

Usage: python3 bench/bench_moe_ep.py --titan build/titan [--layers 2] [--seq 256] [--batch 4] [--steps 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_context_parallel import train  # noqa: E402  (runs `titan train` on N ranks)

DIM, EXPERTS, TOP_K = 256, 64, 8  # debugmodel_moe


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--titan", required=True)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=8)
    opts = ap.parse_args()
    titan = os.path.abspath(opts.titan)
    tmp = tempfile.mkdtemp(prefix="titan_bench_ep_")
    base = ["--job.config_file", "configs/qwen3/debug_model_moe.toml", "--model.n_layers", str(opts.layers),
            "--training.seq_len", str(opts.seq), "--training.global_batch_size", str(opts.batch),
            "--training.steps", str(opts.steps), "--training.mixed_precision_param", "float32",
            "--activation_checkpoint.mode", "none", "--metrics.log_freq", "1", "--debug.seed", "7",
            "--lr_scheduler.warmup_steps", "1"]
    layouts = [("one process", 1, ["--training.local_batch_size", str(opts.batch)]),
               ("FSDP(2)", 2, ["--training.local_batch_size", str(opts.batch // 2)]),
               ("EP(2)", 2, ["--training.local_batch_size", str(opts.batch // 2),
                             "--parallelism.expert_parallel_degree", "2"])]
    print(f"Qwen3 MoE debug model, {opts.layers} layers, {opts.batch} x {opts.seq} tokens per step, float32, "
          f"{os.cpu_count()} cores shared by the ranks; median of steps 3-{opts.steps}\n")
    print("| layout | median step | vs one process | peak memory rank 0 | all-gather | reduce-scatter | "
          "all-reduce | all-to-all (bytes per step per rank) |")
    print("|---|---|---|---|---|---|---|---|")
    base_ms = None
    for name, world, extra in layouts:
        peak, rows = train(titan, world, base + extra, os.path.join(tmp, name.replace(" ", "_").replace("(", "")
                                                                    .replace(")", "")))
        ms = statistics.median(r["step_seconds"] for r in rows[2:]) * 1000
        base_ms = base_ms or ms
        per = {k: rows[-1]["comm_bytes"][k] - rows[-2]["comm_bytes"][k]
               for k in ("all_gather", "reduce_scatter", "all_reduce", "all_to_all")}
        print(f"| {name} | {ms:.1f} ms | {base_ms / ms:.2f}x | {peak:.2f} GiB | {per['all_gather']:,.0f} | "
              f"{per['reduce_scatter']:,.0f} | {per['all_reduce']:,.0f} | {per['all_to_all']:,.0f} |")

    # The formula, exactly, with round-robin routing: each rank's (batch/2 x seq) tokens pick 8
    # experts each, round-robin over 64, so half the rows go to the other rank.
    _, rows = train(titan, 2, base + layouts[2][2] + ["--debug.moe_force_load_balance"], os.path.join(tmp, "rr"))
    per_step = rows[-1]["comm_bytes"]["all_to_all"] - rows[-2]["comm_bytes"]["all_to_all"]
    pairs = opts.batch // 2 * opts.seq * TOP_K
    want = opts.layers * (2 * 2 * (pairs // 2) * DIM * 4 + EXPERTS // 2 * 8)
    print(f"\nEP(2) round-robin routing: all-to-all {per_step:,.0f} bytes per step per rank; formula "
          f"{opts.layers} layers x (2 x 2 x {pairs // 2} rows x {DIM} x 4 B + {EXPERTS // 2} x 8 B) = {want:,}: "
          f"{'equal' if per_step == want else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
