#!/usr/bin/env python3
"""Step time of float8 training (emulated on the CPU) against the same run in bf16, in one run.

The Llama 3 debug model's config (bf16 autocast on one process) trains `--steps` steps with and
without model.converters = ["float8"] for each recipe, alternating the runs `--repeats` times;
reported: the median step time of each (steps after the third), and the ratio to bf16. On a CPU
the float8 GEMMs are emulated: every converted matmul first finds each operand's absolute
maximum, scales, clamps and rounds it to float8, then multiplies the dequantized float32 values,
so float8 costs more than bf16 there; it pays only on a GPU with float8 GEMMs.

Then FSDP(2) (two processes, one thread each) in float8 tensorwise with the weights gathered in
bf16 and with the float8 all-gather (enable_fsdp_float8_all_gather and precomputed scales): the
all-gather bytes per step each rank sends (the communication statistics) and the step time.

Last, why the CPU emulates: ATen's CPU `_scaled_mm` (PyTorch's, one thread) against the
emulation (dequantize, float32 matmul) on one tensorwise product of the debug model's shapes.

Usage: python3 bench/bench_float8.py --titan build/titan [--steps 10] [--seq 512] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from launch import launch_into, step_metrics  # noqa: E402


def cpu_scaled_mm() -> None:
    import time

    import torch
    torch.set_num_threads(1)
    torch.manual_seed(0)
    m, k, n = 512, 256, 768
    a, b = torch.randn(m, k), torch.randn(n, k)
    sa, sb = 448 / a.abs().max(), 448 / b.abs().max()
    a8 = (a * sa).clamp(-448, 448).to(torch.float8_e4m3fn)
    b8 = (b * sb).clamp(-448, 448).to(torch.float8_e4m3fn)
    runs = {"ATen CPU _scaled_mm": lambda: torch._scaled_mm(a8, b8.t(), scale_a=sa.reciprocal(), scale_b=sb.reciprocal(),
                                                              out_dtype=torch.float32),
            "emulated (titan.cpp)": lambda: (a8.float() / sa) @ (b8.float() / sb).t()}
    took = {}
    for name, f in runs.items():
        f()
        t = time.perf_counter()
        for _ in range(2):
            f()
        took[name] = (time.perf_counter() - t) / 2
    for name, t in took.items():
        print(f"{name:22}: {1000 * t:10.1f} ms for ({m}x{k}) @ ({k}x{n}) in e4m3, tensorwise "
              f"({t / took['emulated (titan.cpp)']:.0f}x the emulation)")


def fsdp_all_gather(titan: str, steps: int, seq: int, repeats: int, tmp: str) -> None:
    f8 = ["--model.converters", "float8"]
    ag = ["--quantize.linear.float8.enable_fsdp_float8_all_gather",
          "--quantize.linear.float8.precompute_float8_dynamic_scale_for_fsdp"]
    variants = {"FSDP(2) float8, bf16 all-gather": f8, "FSDP(2) float8 all-gather": f8 + ag}
    times: dict[str, list[float]] = {k: [] for k in variants}
    gathered: dict[str, float] = {}
    for _ in range(repeats):
        for name, extra in variants.items():
            dump = os.path.join(tmp, name.replace(" ", "_"))
            shutil.rmtree(dump, ignore_errors=True)
            outs = launch_into(titan, 2, ["--job.config_file", "configs/llama3/debug_model.toml", "--training.steps",
                                          str(steps), "--training.seq_len", str(seq), "--training.local_batch_size", "4",
                                          "--metrics.log_freq", "1", "--debug.seed", "7", *extra], dump, timeout=1800)
            if any(o[0] != 0 for o in outs):
                raise SystemExit(f"{name} failed: {outs[0][2][-500:]}")
            rows = step_metrics(dump)
            times[name] += [r["step_seconds"] for r in rows if r["step"] > 3]
            gathered[name] = rows[-1]["comm_bytes"]["all_gather"] - rows[-2]["comm_bytes"]["all_gather"]
    base = statistics.median(times["FSDP(2) float8, bf16 all-gather"])
    b0 = gathered["FSDP(2) float8, bf16 all-gather"]
    for name, t in times.items():
        m = statistics.median(t)
        print(f"{name:32}: all-gather {gathered[name] / 1e6:7.3f} MB/step/rank ({gathered[name] / b0:.3f}x), "
              f"median step {1000 * m:8.1f} ms ({m / base:.2f}x)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--titan", required=True)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=2)
    opts = ap.parse_args()
    variants = {"bf16": [], "float8 tensorwise": ["--model.converters", "float8"],
                "float8 rowwise": ["--model.converters", "float8", "--quantize.linear.float8.recipe_name", "rowwise"],
                "MX mxfp8_cublas": ["--model.converters", "quantize.linear.mx"]}
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
    tmp = tempfile.mkdtemp(prefix="titan_bench_float8_fsdp_")
    fsdp_all_gather(os.path.abspath(opts.titan), opts.steps, opts.seq, opts.repeats, tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    cpu_scaled_mm()


if __name__ == "__main__":
    main()
