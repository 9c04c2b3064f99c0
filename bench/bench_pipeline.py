#!/usr/bin/env python3
"""Pipeline schedules on CPU processes: step time, each rank's idle share (time blocked on
messages over the schedule's time) against the schedule's bubble formula, the most microbatches
in flight and the peak memory growth during a schedule per rank, for GPipe, 1F1B,
Interleaved1F1B and ZBVZeroBubble (or InterleavedZeroBubble) at PP(2) and PP(4), with one
process on the same global batch as the peer, all in one run.

Usage: python3 bench/bench_pipeline.py [--titan build/titan] [--steps 8] [--seq 256]
                                       [--threads 1] [--out FILE.md]
Each process runs --threads threads; on a machine with fewer cores than processes the ranks share
cores and the idle shares say more about the machine than the schedule.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
from launch import launch_into, latest_run, read_jsonl  # noqa: E402

LINE = re.compile(r"Pipeline rank (\d+) \(stage ([\d, ]+)\): idle ([\d.]+)% of the schedule's time over (\d+) rounds "
                  r"\(its bubble at unit costs: ([\d.]+)%\), up to (\d+) microbatches in flight, peak memory ([\d.]+) GiB")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--titan", default="build/titan")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out")
    opts = ap.parse_args()
    titan = os.path.abspath(opts.titan)
    tmp = tempfile.mkdtemp(prefix="titan_bench_pp_")
    base = ["--job.config_file", "configs/llama3/debug_model.toml", "--model.n_layers", "8",
            "--training.seq_len", str(opts.seq), "--training.local_batch_size", "8", "--training.steps", str(opts.steps),
            "--training.mixed_precision_param", "float32", "--debug.seed", "7", "--activation_checkpoint.mode", "none",
            "--metrics.log_freq", "1000", "--parallelism.pipeline_parallel_microbatch_size", "1"]
    cores = os.cpu_count()
    lines = [f"# Pipeline schedules on CPU ({cores} cores, {opts.threads} thread(s) per process)", "",
             f"Debug model with 8 layers, seq {opts.seq}, local batch 8 in 8 microbatches of 1, float32, "
             f"{opts.steps} steps; times and idle shares from step 3 on.", "",
             "| layout | step s | vs one process | rank: idle % (formula %), in flight, peak GiB |", "|---|---|---|---|"]

    def run(name: str, world: int, extra: list[str]) -> float | None:
        dump = os.path.join(tmp, re.sub(r"[^A-Za-z0-9]+", "_", name))
        outs = launch_into(titan, world, base + extra, dump, timeout=1800)
        bad = [(r, o[0], o[2][-300:]) for r, o in enumerate(outs) if o[0] != 0]
        if bad:
            print(f"{name}: failed {bad[0]}", file=sys.stderr)
            return None
        rows = [r for r in latest_run(read_jsonl(os.path.join(dump, "metrics.jsonl"))) if "step" in r]
        step = statistics.median(r["step_seconds"] for r in rows[2:]) if len(rows) > 2 else rows[-1]["step_seconds"]
        ranks = []
        for _, out, err in outs:
            for m in LINE.finditer(out + err):
                ranks.append(f"r{m.group(1)}: {m.group(3)} ({m.group(5)}), {m.group(6)}, {float(m.group(7)):.3f}")
        run.results.append((name, step, "; ".join(ranks)))
        return step

    run.results = []
    peer = run("one process", 1, [])
    for degree in (2, 4):
        for schedule in ("GPipe", "1F1B", "Interleaved1F1B", "ZBVZeroBubble" if degree == 2 else "InterleavedZeroBubble"):
            run(f"PP({degree}) {schedule}", degree, ["--parallelism.pipeline_parallel_degree", str(degree),
                                                     "--parallelism.pipeline_parallel_schedule", schedule])
    for name, step, ranks in run.results:
        ratio = f"{step / peer:.2f}x" if peer else "n/a"
        lines.append(f"| {name} | {step:.3f} | {ratio} | {ranks or '-'} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if opts.out:
        with open(opts.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
