#!/usr/bin/env python3
"""Communication volume and step time of parallel layouts on CPU processes (Gloo).

For FSDP(2), FSDP(4), HSDP(2x2), DDP(2), TP(2) and FSDP(2)xTP(2) (and one process as the peer),
trains the debug model for a few steps with the same global batch, reads each rank 0's
metrics.jsonl and prints: bytes sent per step per rank by collective kind against the
theoretical ring volume, and the median step time against the single process measured in the
same run.

Usage: python3 bench/bench_distributed.py [--titan build/titan] [--seq 256] [--global-batch 8] [--steps 6]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from launch import latest_run, launch, read_jsonl  # noqa: E402


def run(titan, world, args, dump, threads):
    outs = launch(titan, world, args + ["--job.dump_folder", dump], threads=threads)
    for rc, _, err in outs:
        if rc != 0:
            sys.exit(f"run failed: {err[-500:]}")
    return latest_run(read_jsonl(os.path.join(dump, "metrics.jsonl")))


def padded_numel(shapes, w):
    total = 0
    for shape in shapes:
        rows = shape[0]
        per = -(-rows // w)
        rest = 1
        for d in shape[1:]:
            rest *= d
        total += per * w * rest
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--titan", default=os.path.join(ROOT, "build", "titan"))
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--global-batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=6)
    opts = ap.parse_args()
    titan = os.path.abspath(opts.titan)
    base = ["--job.config_file", "configs/llama3/debug_model.toml", "--training.seq_len", str(opts.seq),
            "--training.steps", str(opts.steps), "--training.mixed_precision_param", "float32",
            "--debug.seed", "1", "--activation_checkpoint.mode", "none", "--metrics.log_freq", "100"]
    dim, layers, vocab, hidden = 256, 6, 2048, 768
    block = [(dim, dim)] * 4 + [(hidden, dim), (dim, hidden), (hidden, dim)] + [(dim,)] * 2
    units = {"tok_embeddings": [(vocab, dim)], "output": [(dim,), (vocab, dim)]}
    for i in range(layers):
        units[f"layers.{i}"] = block
    all_shapes = [s for u in units.values() for s in u]
    tmp = tempfile.mkdtemp(prefix="titan_bench_dist_")
    g = opts.global_batch
    tp2 = ["--parallelism.tensor_parallel_degree", "2"]
    layouts = [("1 process", 1, [], None),
               ("FSDP(2)", 2, [], ("fsdp", 2, 1, 1)),
               ("FSDP(4)", 4, [], ("fsdp", 4, 1, 1)),
               ("HSDP(2x2)", 4, ["--parallelism.data_parallel_replicate_degree", "2"], ("hsdp", 2, 2, 1)),
               ("DDP(2)", 2, ["--parallelism.data_parallel_replicate_degree", "2",
                              "--parallelism.data_parallel_shard_degree", "1"], ("ddp", 1, 2, 1)),
               ("TP(2)", 2, tp2, ("tp", 1, 1, 2)),
               ("FSDP(2)xTP(2)", 4, tp2, ("fsdp", 2, 1, 2))]
    ref_time = None
    print(f"debug model, seq {opts.seq}, global batch {g}, float32, {opts.steps} steps; 2 cores shared by all ranks")
    print(f"{'layout':14} {'step s':>8} {'vs 1 proc':>9}  {'all-gather MB':>16} {'reduce-scatter MB':>18} {'all-reduce MB':>16}")
    for name, world, extra, kind in layouts:
        tp = kind[3] if kind else 1
        dp = world // tp
        threads = max(1, (os.cpu_count() or 2) // world)
        m = run(titan, world, base + extra + ["--training.local_batch_size", str(g // dp)],
                os.path.join(tmp, name.replace(" ", "_").replace("(", "").replace(")", "")), threads)
        step_s = statistics.median(r["step_seconds"] for r in m[1:])
        if ref_time is None:
            ref_time = step_s
        a, b = m[2]["comm_bytes"], m[3]["comm_bytes"]
        got = {k: (b[k] - a[k]) / 1e6 for k in a}
        theo = {"all_gather": 0.0, "reduce_scatter": 0.0, "all_reduce": 0.0}
        if kind:
            mode, shard, rep, tp = kind
            # Tensor-parallel shares: column-wise wq wk wv w1 w3 and the vocabulary rows split their
            # rows, row-wise wo w2 their columns; the norms are whole.
            def share(shape, i):
                if len(shape) == 1 or tp == 1:
                    return shape
                return (shape[0], shape[1] // tp) if i in (3, 5) else (shape[0] // tp, shape[1])
            local = {u: [share(sh, i) if u.startswith("layers.") else (sh if len(sh) == 1 else (sh[0] // tp, sh[1]))
                         for i, sh in enumerate(shapes)] for u, shapes in units.items()}
            local_all = [sh for u in local.values() for sh in u]
            if mode in ("fsdp", "hsdp"):
                # forward gathers every unit; backward re-gathers all but the output unit
                fwd = padded_numel(local_all, shard)
                bwd = fwd - padded_numel(local["output"], shard)
                theo["all_gather"] += (fwd + bwd) * 4 * (shard - 1) / shard / 1e6
                theo["reduce_scatter"] += fwd * 4 * (shard - 1) / shard / 1e6
                if rep > 1:
                    theo["all_reduce"] += fwd / shard * 4 * 2 * (rep - 1) / rep / 1e6
            elif mode == "ddp":
                theo["all_reduce"] += padded_numel(all_shapes, 1) * 4 * 2 * (rep - 1) / rep / 1e6
            if tp > 1:
                # Per block 2 sequence gathers and 2 reduce-scatters forward, their duals backward;
                # the embedding's reduce-scatter and the head's gather, with their duals; the loss's
                # max and sums (3 floats a token) and the norms' partial gradients all-reduced.
                act = (g // dp) * opts.seq * dim * 4 * (tp - 1) / tp / 1e6
                theo["all_gather"] += (4 * layers + 2) * act
                theo["reduce_scatter"] += (4 * layers + 2) * act
                theo["all_reduce"] += (3 * (g // dp) * opts.seq + (2 * layers + 1) * dim) * 4 * 2 * (tp - 1) / tp / 1e6
        cells = [f"{got[k]:7.2f} / {theo[k]:6.2f}" for k in ("all_gather", "reduce_scatter", "all_reduce")]
        print(f"{name:14} {step_s:8.3f} {step_s / ref_time:8.2f}x  {cells[0]:>16} {cells[1]:>18} {cells[2]:>16}")
    print("(MB per step per rank: measured / theoretical ring volume; measured includes the few bytes of the "
          "token-count, loss and grad-norm reductions)")


if __name__ == "__main__":
    main()
