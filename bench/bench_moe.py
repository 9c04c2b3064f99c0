#!/usr/bin/env python3
"""The MoE layer, forward and backward, against PyTorch eager in one run.

titan.cpp's layer (build/bench_moe: grouped GEMMs; the fused grouped SwiGLU kernel that
compile.enable selects; the loop over experts) against the PyTorch
reference of tests/parity/moe_ref.py run two ways: with torch._grouped_mm for the experts, as
torchtitan does (in float32 here, where torchtitan casts to bf16), and with its loop over experts.
Shapes: Qwen3-MoE's debug model (dim 256, experts of 768, 64 experts, top 8) and a 30B-A3B layer at
reduced width (dim 512 instead of 2048, experts of 768, 128 experts, top 8). Softmax router with
normalised top-k, no shared expert, float32, the same number of threads for both; the median of
--repeats steps after one untimed, the peer and titan.cpp's grouped and fused paths interleaved
over --rounds rounds (this machine's speed drifts). Each shape runs twice: with glibc malloc's
defaults, and with freed memory kept in the heap for both sides (MALLOC_MMAP_MAX_=0), which
spares the page faults of every step's fresh expert gradients. Reported: milliseconds, tokens per
second, and ratios.

Usage: python3 bench/bench_moe.py --bin build/bench_moe [--tokens 2048] [--repeats 5] [--threads 2] [--rounds 3]
       [--shapes debug,30B-A3B-512] [--device cuda --dtype bfloat16 --shapes 16B]
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


def peer_ms(tokens, dim, hidden, experts, top_k, repeats, grouped, device="cpu", dtype="float32") -> float:
    torch.manual_seed(0)
    on = dict(device=device, dtype=getattr(torch, dtype))
    w = {"gate": (torch.randn(experts, dim) * 0.02).to(**on).requires_grad_(),
         "w1": (torch.randn(experts, hidden, dim) * 0.02).to(**on).requires_grad_(),
         "w2": (torch.randn(experts, dim, hidden) * 0.02).to(**on).requires_grad_(),
         "w3": (torch.randn(experts, hidden, dim) * 0.02).to(**on).requires_grad_()}
    x0, go = torch.randn(1, tokens, dim).to(**on), torch.randn(1, tokens, dim).to(**on)
    bias = torch.zeros(experts, device=device)
    wait = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    times = []
    for i in range(repeats + 1):
        for p in w.values():
            p.grad = None
        x = x0.clone().requires_grad_()
        wait()
        start = time.perf_counter()
        if grouped:  # the experts as torchtitan runs them; the routing and combine of moe_ref
            top, chosen, counts = moe_ref.route(x.view(-1, dim), w["gate"], None, bias, num_experts=experts,
                                                top_k=top_k, softmax=True, route_norm=True, route_scale=1.0)
            order = torch.argsort(chosen.view(-1), stable=True)
            routed = x.view(-1, dim)[order // top_k]
            out_sorted = grouped_experts(routed, w["w1"], w["w2"], w["w3"], counts.long())
            pairs = torch.zeros_like(out_sorted)
            pairs[order] = out_sorted
            out = torch.bmm(top.view(-1, 1, top_k), pairs.view(-1, top_k, dim).float()).to(x.dtype)
            out = out.squeeze(1).view(1, tokens, dim)
        else:
            out, _ = moe_ref.moe_forward(x, w, bias, top_k=top_k, score_before=False, num_experts=experts,
                                         softmax=True, route_norm=True, route_scale=1.0)
        out.backward(go)
        wait()
        if i:
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def titan_ms(binary, tokens, dim, hidden, experts, top_k, repeats, threads, mode, env=None, device="cpu",
             dtype="float32") -> float:
    cmd = [binary, "--tokens", str(tokens), "--dim", str(dim), "--hidden", str(hidden), "--experts", str(experts),
           "--top-k", str(top_k), "--repeats", str(repeats), "--threads", str(threads), "--device", device,
           "--dtype", dtype] + ([mode] if mode else [])
    return float(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout.strip())


def peer_subprocess_ms(tokens, dim, hidden, experts, top_k, repeats, threads, grouped, env=None, device="cpu",
                       dtype="float32") -> float:
    """The peer in a process of its own (so that it runs under the same allocator settings)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--peer", ",".join(map(str, (tokens, dim, hidden, experts, top_k))),
           "--repeats", str(repeats), "--threads", str(threads), "--device", device, "--dtype", dtype] + \
        ([] if grouped else ["--peer-loop"])
    return float(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout.strip())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bench_moe"))
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3,
                    help="the grouped-GEMM peer and titan.cpp's grouped and fused paths run this many times, "
                         "interleaved; each row is the median over the rounds")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda: one GPU, the grouped-GEMM paths only")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--shapes", default="debug,30B-A3B-512",
                    help="comma-separated, of: debug, 30B-A3B-512 (the 30B-A3B layer at dim 512), 16B "
                         "(DeepSeek-V3 16B's routed experts: dim 2048, experts of 1408, 64 experts, top 6)")
    ap.add_argument("--peer", help=argparse.SUPPRESS)
    ap.add_argument("--peer-loop", action="store_true", help=argparse.SUPPRESS)
    opts = ap.parse_args()
    torch.set_num_threads(opts.threads)
    if opts.peer:
        tokens, dim, hidden, experts, top_k = map(int, opts.peer.split(","))
        print(peer_ms(tokens, dim, hidden, experts, top_k, opts.repeats, grouped=not opts.peer_loop,
                      device=opts.device, dtype=opts.dtype))
        return
    if opts.device != "cpu":
        gpu_main(opts)
        return
    # glibc returns blocks above 32 MB to the system when they are freed, so every step's fresh
    # gradients (each expert weight's, 100-200 MB here) fault their pages in again: a large cost on
    # both sides. The second setting keeps freed memory in the heap, the same for both.
    kept = dict(os.environ, MALLOC_MMAP_MAX_="0", MALLOC_TRIM_THRESHOLD_=str(1 << 40))
    print(f"MoE layer forward + backward, float32, {opts.tokens} tokens, {opts.threads} threads, median of "
          f"{opts.repeats} steps, the fast rows the median of {opts.rounds} interleaved rounds")
    for name, dim, hidden, experts, top_k in shapes(opts.shapes):
        args = (opts.tokens, dim, hidden, experts, top_k, opts.repeats)
        for alloc, env in [("glibc malloc's defaults", None), ("freed memory kept in the heap (MALLOC_MMAP_MAX_=0)", kept)]:
            fast = {"peer": [], "grouped": [], "fused": []}
            for _ in range(opts.rounds):
                fast["peer"].append(peer_subprocess_ms(*args, opts.threads, True, env))
                fast["grouped"].append(titan_ms(opts.bin, *args, opts.threads, None, env))
                fast["fused"].append(titan_ms(opts.bin, *args, opts.threads, "--fused", env))
            rows = [("PyTorch eager, torch._grouped_mm", statistics.median(fast["peer"])),
                    ("titan.cpp, grouped GEMMs", statistics.median(fast["grouped"])),
                    ("titan.cpp, fused grouped SwiGLU", statistics.median(fast["fused"]))]
            if env is None:  # the loops once, with the defaults
                rows.insert(1, ("PyTorch eager, loop over experts", peer_subprocess_ms(*args, opts.threads, False)))
                rows.append(("titan.cpp, loop over experts", titan_ms(opts.bin, *args, opts.threads, "--loop")))
            base = rows[0][1]
            print(f"{name} (dim {dim}, experts of {hidden}, {experts} experts, top {top_k}), {alloc}:")
            for label, ms in rows:
                print(f"  {label:34s}: {ms:9.1f} ms  {opts.tokens / ms * 1000:10.0f} tokens/s  "
                      f"({base / ms:.2f}x the grouped-GEMM peer)")
            ratios = sorted(p / f for p, f in zip(fast["peer"], fast["fused"]))
            print(f"  fused / peer per round: {', '.join(f'{r:.2f}x' for r in ratios)}")


SHAPES = {"debug": ("Qwen3-MoE debug", 256, 768, 64, 8), "30B-A3B-512": ("30B-A3B layer, dim 512", 512, 768, 128, 8),
          "16B": ("DeepSeek-V3 16B routed experts", 2048, 1408, 64, 6)}


def shapes(names: str):
    return [SHAPES[n] for n in names.split(",")]


def gpu_main(opts) -> None:
    """One GPU: the peer's and titan.cpp's grouped GEMMs (the fused kernel is the CPU's), interleaved."""
    print(f"MoE layer forward + backward on {torch.cuda.get_device_name(0)}, {opts.dtype}, {opts.tokens} tokens, "
          f"median of {opts.repeats} steps, then of {opts.rounds} interleaved rounds")
    for name, dim, hidden, experts, top_k in shapes(opts.shapes):
        args = (opts.tokens, dim, hidden, experts, top_k, opts.repeats)
        peer, ours = [], []
        for _ in range(opts.rounds):
            peer.append(peer_subprocess_ms(*args, opts.threads, True, None, opts.device, opts.dtype))
            ours.append(titan_ms(opts.bin, *args, opts.threads, None, None, opts.device, opts.dtype))
        p, o = statistics.median(peer), statistics.median(ours)
        print(f"{name} (dim {dim}, experts of {hidden}, {experts} experts, top {top_k}):")
        print(f"  PyTorch eager, torch._grouped_mm  : {p:9.2f} ms  {opts.tokens / p * 1000:10.0f} tokens/s")
        print(f"  titan.cpp, grouped GEMMs          : {o:9.2f} ms  {opts.tokens / o * 1000:10.0f} tokens/s  "
              f"({p / o:.2f}x the peer; per round {', '.join(f'{a / b:.2f}x' for a, b in zip(peer, ours))})")


if __name__ == "__main__":
    main()
