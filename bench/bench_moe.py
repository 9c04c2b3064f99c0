#!/usr/bin/env python3
"""The MoE layer, forward and backward, against PyTorch eager in one run.

titan.cpp's layer (build/bench_moe: grouped GEMMs; the fused grouped SwiGLU kernel that
compile.enable selects; the loop over experts) against the PyTorch
reference of tests/parity/moe_ref.py run two ways: with torch._grouped_mm for the experts, as
torchtitan does (in float32 here, where torchtitan casts to bf16), and with its loop over experts.
Shapes: Qwen3-MoE's debug model (dim 256, experts of 768, 64 experts, top 8) and a 30B-A3B layer at
reduced width (dim 512 instead of 2048, experts of 768, 128 experts, top 8). Softmax router with
normalised top-k, no shared expert, float32, the same number of threads for both; the median of
--repeats runs after one untimed. Reported: milliseconds, tokens per second, and ratios.

Usage: python3 bench/bench_moe.py --bin build/bench_moe [--tokens 2048] [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "parity"))
import moe_ref  # noqa: E402


def grouped_experts(x, w1, w2, w3, counts):
    offsets = torch.cumsum(counts, 0).to(torch.int32)
    h = F.silu(torch._grouped_mm(x, w1.transpose(-2, -1), offs=offsets))
    h = h * torch._grouped_mm(x, w3.transpose(-2, -1), offs=offsets)
    return torch._grouped_mm(h, w2.transpose(-2, -1), offs=offsets)


def peer_ms(tokens, dim, hidden, experts, top_k, repeats, grouped) -> float:
    torch.manual_seed(0)
    w = {"gate": (torch.randn(experts, dim) * 0.02).requires_grad_(),
         "w1": (torch.randn(experts, hidden, dim) * 0.02).requires_grad_(),
         "w2": (torch.randn(experts, dim, hidden) * 0.02).requires_grad_(),
         "w3": (torch.randn(experts, hidden, dim) * 0.02).requires_grad_()}
    x0, go = torch.randn(1, tokens, dim), torch.randn(1, tokens, dim)
    bias = torch.zeros(experts)
    times = []
    for i in range(repeats + 1):
        for p in w.values():
            p.grad = None
        x = x0.clone().requires_grad_()
        start = time.perf_counter()
        if grouped:  # the experts as torchtitan runs them; the routing and combine of moe_ref
            top, chosen, counts = moe_ref.route(x.view(-1, dim), w["gate"], None, bias, num_experts=experts,
                                                top_k=top_k, softmax=True, route_norm=True, route_scale=1.0)
            order = torch.argsort(chosen.view(-1), stable=True)
            routed = x.view(-1, dim)[order // top_k]
            out_sorted = grouped_experts(routed, w["w1"], w["w2"], w["w3"], counts.long())
            pairs = torch.zeros_like(out_sorted)
            pairs[order] = out_sorted
            out = torch.bmm(top.view(-1, 1, top_k), pairs.view(-1, top_k, dim)).squeeze(1).view(1, tokens, dim)
        else:
            out, _ = moe_ref.moe_forward(x, w, bias, top_k=top_k, score_before=False, num_experts=experts,
                                         softmax=True, route_norm=True, route_scale=1.0)
        out.backward(go)
        if i:
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def titan_ms(binary, tokens, dim, hidden, experts, top_k, repeats, threads, mode) -> float:
    cmd = [binary, "--tokens", str(tokens), "--dim", str(dim), "--hidden", str(hidden), "--experts", str(experts),
           "--top-k", str(top_k), "--repeats", str(repeats), "--threads", str(threads)] + ([mode] if mode else [])
    return float(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bench_moe"))
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    opts = ap.parse_args()
    torch.set_num_threads(opts.threads)
    print(f"MoE layer forward + backward, float32, {opts.tokens} tokens, {opts.threads} threads, "
          f"median of {opts.repeats}")
    for name, dim, hidden, experts, top_k in [("Qwen3-MoE debug", 256, 768, 64, 8),
                                              ("30B-A3B layer, dim 512", 512, 768, 128, 8)]:
        args = (opts.tokens, dim, hidden, experts, top_k, opts.repeats)
        rows = [("PyTorch eager, torch._grouped_mm", peer_ms(*args, grouped=True)),
                ("PyTorch eager, loop over experts", peer_ms(*args, grouped=False)),
                ("titan.cpp, grouped GEMMs", titan_ms(opts.bin, *args, opts.threads, None)),
                ("titan.cpp, fused grouped SwiGLU", titan_ms(opts.bin, *args, opts.threads, "--fused")),
                ("titan.cpp, loop over experts", titan_ms(opts.bin, *args, opts.threads, "--loop"))]
        base = rows[0][1]
        print(f"{name} (dim {dim}, experts of {hidden}, {experts} experts, top {top_k}):")
        for label, ms in rows:
            print(f"  {label:34s}: {ms:9.1f} ms  {opts.tokens / ms * 1000:10.0f} tokens/s  "
                  f"({base / ms:.2f}x the grouped-GEMM peer)")


if __name__ == "__main__":
    main()
