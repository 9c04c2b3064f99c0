#!/usr/bin/env python3
"""A DeepSeek-V3 training step, titan.cpp against PyTorch eager in one run.

The debug model's blocks (dim 256, 16 heads, multi-head latent attention with a 512-wide key/value
latent; 8 experts of 256 with 2 shared, top 3) with --layers blocks (the first dense), float32 on
the CPU, the same threads and the same batch for both:

- titan.cpp: `titan train` on configs/deepseek_v3/debug_model.toml (ATen's ops, compile.enable
  false; and its fused kernels, compile.enable true), each step's time from metrics.jsonl;
- PyTorch: the model of tests/parity/deepseek_ref.py (written from torchtitan's), its routed
  experts run as torch._grouped_mm as torchtitan runs them, with torch.optim.AdamW (foreach) and
  the same cross-entropy loss, on random tokens.

The median step of --steps after --warmup. Reported: milliseconds per step, tokens per second and
the ratio against the PyTorch peer.

Usage: python3 bench/bench_deepseek.py [--bin build/titan] [--layers 2] [--batch 4] [--seq 256]
       [--steps 12] [--warmup 4] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "parity"))
import deepseek_ref  # noqa: E402
import moe_ref  # noqa: E402
sys.path.insert(0, os.path.join(ROOT, "bench"))
from bench_moe import grouped_experts  # noqa: E402


def grouped_moe_forward(x, w, expert_bias, *, top_k, score_before, **router):
    """moe_ref.moe_forward with the routed experts as torch._grouped_mm (torchtitan's path)."""
    B, T, D = x.shape
    flat = x.view(-1, D)
    top, experts, counts = moe_ref.route(flat, w["gate"], w.get("gate_bias"), expert_bias, top_k=top_k, **router)
    order = torch.argsort(experts.view(-1), stable=True)
    routed = flat[order // top_k]
    out_sorted = grouped_experts(routed, w["w1"], w["w2"], w["w3"], counts.long())
    pairs = torch.zeros_like(out_sorted)
    pairs[order] = out_sorted
    combined = torch.bmm(top.view(-1, 1, top_k), pairs.view(-1, top_k, D)).squeeze(1)
    if "shared_w1" in w:
        combined = moe_ref.swiglu(flat, w["shared_w1"], w["shared_w2"], w["shared_w3"]) + combined
    return combined.view(B, T, D), counts


def titan_steps(binary, layers, batch, seq, steps, compile_on, threads) -> list[float]:
    with tempfile.TemporaryDirectory() as dump:
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), TITAN_PEAK_CACHE="off")
        subprocess.run([binary, "train", "--job.config_file", "configs/deepseek_v3/debug_model.toml",
                        "--model.n_layers", str(layers), "--training.local_batch_size", str(batch),
                        "--training.seq_len", str(seq), "--training.steps", str(steps),
                        "--training.mixed_precision_param", "float32", "--activation_checkpoint.mode", "none",
                        f"--compile.enable={'true' if compile_on else 'false'}", "--metrics.log_freq", "1",
                        "--job.dump_folder", dump], cwd=ROOT, env=env, check=True, capture_output=True)
        rows = [json.loads(line) for line in open(os.path.join(dump, "metrics.jsonl")) if '"step"' in line]
        return [r["step_seconds"] * 1000 for r in rows]


def peer_steps(layers, batch, seq, steps, model_json) -> list[float]:
    """The same model in PyTorch eager: weights from titan.cpp's initial shapes, AdamW, cross entropy."""
    args = model_json
    torch.manual_seed(0)
    shapes = {}
    D, H = args["dim"], args["n_heads"]
    nope, r, vd, lora = args["qk_nope_head_dim"], args["qk_rope_head_dim"], args["v_head_dim"], args["kv_lora_rank"]
    m = args["moe_args"]
    E, hid, S = m["num_experts"], args["moe_inter_dim"], m["num_shared_experts"] * args["moe_inter_dim"]
    shapes["tok_embeddings.weight"] = (args["vocab_size"], D)
    for i in range(layers):
        p = f"layers.{i}."
        shapes.update({p + "attention.wq.weight": (H * (nope + r), D), p + "attention.wkv_a.weight": (lora + r, D),
                       p + "attention.kv_norm.weight": (lora,), p + "attention.wkv_b.weight": (H * (nope + vd), lora),
                       p + "attention.wo.weight": (D, H * vd), p + "attention_norm.weight": (D,),
                       p + "ffn_norm.weight": (D,)})
        if i < args["n_dense_layers"]:
            F_ = args["inter_dim"]
            shapes.update({p + "feed_forward.w1.weight": (F_, D), p + "feed_forward.w2.weight": (D, F_),
                           p + "feed_forward.w3.weight": (F_, D)})
        else:
            shapes.update({p + "moe.router.gate.weight": (E, D), p + "moe.experts.w1": (E, hid, D),
                           p + "moe.experts.w2": (E, D, hid), p + "moe.experts.w3": (E, hid, D),
                           p + "moe.shared_experts.w1.weight": (S, D), p + "moe.shared_experts.w2.weight": (D, S),
                           p + "moe.shared_experts.w3.weight": (S, D)})
    shapes.update({"norm.weight": (D,), "output.weight": (args["vocab_size"], D)})
    params = {n: (torch.ones(s) if n.endswith("norm.weight") else torch.randn(s) * 0.02).requires_grad_()
              for n, s in shapes.items()}
    buffers = {f"layers.{i}.moe.expert_bias": torch.zeros(E) for i in range(args["n_dense_layers"], layers)}
    opt = torch.optim.AdamW(params.values(), lr=8e-4, eps=1e-8, weight_decay=0.1, foreach=True)
    moe_ref.moe_forward = grouped_moe_forward  # deepseek_ref's MoE blocks run torchtitan's grouped path
    times = []
    for _ in range(steps):
        tokens = torch.randint(0, args["vocab_size"], (batch, seq))
        labels = torch.randint(0, args["vocab_size"], (batch, seq))
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits = deepseek_ref.forward(tokens, params, buffers, args)
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params.values(), 1.0)
        opt.step()
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "titan"))
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    opts = ap.parse_args()
    torch.set_num_threads(opts.threads)
    # torchtitan's debugmodel flavor, as titan.cpp's checkpoints record it (ModelArgs::to_json).
    args = {"vocab_size": 2048, "dim": 256, "inter_dim": 1024, "moe_inter_dim": 256, "n_layers": opts.layers,
            "n_dense_layers": 1, "n_heads": 16, "norm_eps": 1e-5, "q_lora_rank": 0, "kv_lora_rank": 512,
            "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128, "max_seq_len": opts.seq,
            "original_seq_len": 4096, "rope_theta": 10000.0, "rope_factor": 40, "beta_fast": 32, "beta_slow": 1,
            "mscale": 0.7,
            "moe_args": {"num_experts": 8, "num_shared_experts": 2, "top_k": 3, "score_func": "softmax",
                         "route_norm": False, "route_scale": 1.0, "score_before_experts": False}}
    tokens = opts.batch * opts.seq
    median = lambda xs: statistics.median(xs[opts.warmup:])  # noqa: E731
    rows = [("PyTorch eager (torch._grouped_mm experts)", median(peer_steps(opts.layers, opts.batch, opts.seq,
                                                                             opts.steps, args))),
            ("titan.cpp, ATen ops", median(titan_steps(opts.bin, opts.layers, opts.batch, opts.seq, opts.steps,
                                                      False, opts.threads))),
            ("titan.cpp, fused kernels", median(titan_steps(opts.bin, opts.layers, opts.batch, opts.seq, opts.steps,
                                                           True, opts.threads)))]
    print(f"DeepSeek-V3 debug model, {opts.layers} blocks, batch {opts.batch} x {opts.seq}, float32, "
          f"{opts.threads} threads, median step of {opts.steps - opts.warmup} after {opts.warmup}")
    base = rows[0][1]
    for label, ms in rows:
        print(f"  {label:42s}: {ms:8.1f} ms  {tokens / ms * 1000:8.0f} tokens/s  ({base / ms:.2f}x the PyTorch peer)")


if __name__ == "__main__":
    main()
