#!/usr/bin/env python3
"""Where a training step's time goes, from a profiler trace that `titan train` wrote
(--profiling.enable_profiling): the self time of every ATen op and kernel, bucketed into
matmuls, attention, norms and activations, the loss, the optimizer, communication and the rest.

Usage: python3 bench/step_breakdown.py OUTPUT/profile_trace/iteration_N/rank0_trace.json [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict

BUCKETS = [  # (bucket, substrings of op names), first match wins
    ("attention", ["scaled_dot_product", "ScaledDotProduct", "flash_attention", "efficient_attention", "attention"]),
    ("matmuls", ["aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear"]),
    ("loss", ["cross_entropy", "log_softmax", "nll_loss", "logsumexp", "LinearCrossEntropy"]),
    ("norms and activations", ["RmsNorm", "SwiGLU", "Rope"]),
    ("optimizer", ["adam", "Adam", "_foreach", "linalg_vector_norm"]),
    ("communication", ["c10d", "gloo", "nccl", "all_gather", "reduce_scatter", "all_reduce", "comm:"]),
    ("norms and activations", ["rms_norm", "RmsNorm", "silu", "SwiGLU", "Rope", "rope", "aten::mul", "aten::add",
                               "aten::rsqrt", "aten::pow", "aten::mean", "aten::sigmoid", "view_as_complex",
                               "view_as_real", "aten::complex", "aten::div", "aten::sum", "aten::neg", "aten::exp",
                               "aten::embedding"]),
]


def bucket_of(name: str) -> str:
    for bucket, keys in BUCKETS:
        if any(k in name for k in keys):
            return bucket
    return "other"


# Ranges whose nested ops all count for the range's bucket (titan.cpp's kernels call ATen's mm).
GROUPS = ["titan::attention", "titan::cross_entropy", "ScaledDotProduct", "scaled_dot_product"]


def self_times(events: list[dict]) -> dict[str, float]:
    """Self time (us) per op name: duration minus the time of ops nested in it, per thread; an
    op nested in one of GROUPS counts under that group's name."""
    ops = [e for e in events if e.get("ph") == "X" and e.get("cat") in ("cpu_op", "kernel", "gpu_op", "user_annotation")]
    ops = [e for e in ops if e.get("cat") != "user_annotation" or any(g in e["name"] for g in GROUPS)]
    by_thread = defaultdict(list)
    for e in ops:
        by_thread[(e.get("pid"), e.get("tid"))].append(e)
    out: dict[str, float] = defaultdict(float)
    for evs in by_thread.values():
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack: list[list] = []  # [event, time of children, name it counts under]

        def close() -> None:
            done, child, name = stack.pop()
            out[name] += max(done["dur"] - child, 0.0)

        for e in evs:
            while stack and stack[-1][0]["ts"] + stack[-1][0]["dur"] <= e["ts"]:
                close()
            group = next((s[2] for s in stack if any(g in s[2] for g in GROUPS)), None)
            if stack:
                stack[-1][1] += e["dur"]
            stack.append([e, 0.0, group or e["name"]])
        while stack:
            close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("trace")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    opts = ap.parse_args()
    with open(opts.trace) as f:
        events = json.load(f)["traceEvents"]
    steps = [e for e in events if e.get("ph") == "X" and str(e.get("name", "")).startswith("ProfilerStep")]
    times = self_times(events)
    total = sum(times.values())
    buckets: dict[str, float] = defaultdict(float)
    for name, us in times.items():
        buckets[bucket_of(name)] += us
    if opts.json:
        print(json.dumps({b: round(100 * us / total, 1) for b, us in buckets.items()}))
        return 0
    print(f"{len(steps) or 1} step(s), {total / 1e3:.1f} ms of op self time")
    for b, us in sorted(buckets.items(), key=lambda kv: -kv[1]):
        print(f"  {b:24s} {us / 1e3:9.1f} ms  {100 * us / total:5.1f}%")
    print("top ops:")
    for name, us in sorted(times.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {name[:60]:60s} {us / 1e3:9.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
