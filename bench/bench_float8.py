#!/usr/bin/env python3
"""Step time of float8 training (emulated on the CPU) against the same run in bf16, in one run.

The Llama 3 debug model's config (bf16 autocast on one process) trains `--steps` steps with and
without model.converters = ["float8"] for each recipe, alternating the runs `--repeats` times;
reported: the median step time of each (steps after the third), and the ratio to bf16. On a CPU
the float8 GEMMs are emulated: every converted matmul first finds each operand's absolute
maximum, scales, clamps and rounds it to float8, then multiplies the dequantized float32 values,
so float8 costs more than bf16 there; it pays only on a GPU with float8 GEMMs.

Usage: python3 bench/bench_float8.py --titan build/titan [--steps 10] [--seq 512] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--titan", required=True)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=2)
    opts = ap.parse_args()
    variants = {"bf16": [], "float8 tensorwise": ["--model.converters", "float8"],
                "float8 rowwise": ["--model.converters", "float8", "--quantize.linear.float8.recipe_name", "rowwise"]}
    times: dict[str, list[float]] = {k: [] for k in variants}
    tmp = tempfile.mkdtemp(prefix="titan_bench_float8_")
    cpu = "?"
    for _ in range(opts.repeats):
        for name, extra in variants.items():
            dump = os.path.join(tmp, name.replace(" ", "_"))
            shutil.rmtree(dump, ignore_errors=True)
            r = subprocess.run([os.path.abspath(opts.titan), "train", "--job.config_file", "configs/llama3/debug_model.toml",
                                "--training.steps", str(opts.steps), "--training.seq_len", str(opts.seq),
                                "--metrics.log_freq", "1", "--debug.seed", "7", "--job.dump_folder", dump, *extra],
                               cwd=ROOT, capture_output=True, text=True, check=True)
            for line in (r.stdout + r.stderr).splitlines():
                if "- CPU: " in line:
                    cpu = line.split("- CPU: ", 1)[1]
            rows = [json.loads(l) for l in open(os.path.join(dump, "metrics.jsonl")) if '"step"' in l]
            times[name] += [row["step_seconds"] for row in rows if row["step"] > 3]
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"CPU: {cpu}; debug model, seq {opts.seq}, local batch 8, {opts.steps} steps x {opts.repeats} runs each")
    base = statistics.median(times["bf16"])
    for name, t in times.items():
        m = statistics.median(t)
        print(f"{name:18}: median step {1000 * m:8.1f} ms  ({m / base:.2f}x bf16's)")


if __name__ == "__main__":
    main()
