#!/usr/bin/env python3
"""PyTorch eager peer for the training-step benchmark: the same step titan.cpp times.

One step = zero_grad, forward, loss, backward, clip_grad_norm_(1.0), AdamW step, on the
Llama 3 of tests/parity/llama_ref.py with torchtitan's defaults. Prints one JSON line.

Usage: python3 bench/peer_train_step.py [--flavor debugmodel] [--dim D --n-layers L ...]
         [--batch 8] [--seq 512] [--steps 10] [--warmup 2] [--threads T] [--seed 0]
         [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "parity"))
import llama_ref  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="PyTorch eager Llama 3 training-step benchmark")
    p.add_argument("--flavor", default="debugmodel", choices=sorted(llama_ref.FLAVORS))
    p.add_argument("--dim", type=int)
    p.add_argument("--n-layers", type=int)
    p.add_argument("--n-heads", type=int)
    p.add_argument("--n-kv-heads", type=int)
    p.add_argument("--vocab-size", type=int)
    p.add_argument("--multiple-of", type=int)
    p.add_argument("--ffn-dim-multiplier", type=float)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="forward and loss under bf16 autocast (AMP)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile each transformer block and the loss, as torchtitan's compile.enable")
    opts = p.parse_args()
    if opts.steps < 1 or opts.warmup < 0 or opts.batch < 1 or opts.seq < 1:
        p.error("--steps, --batch and --seq must be positive and --warmup not negative")
    return opts


def build_optimizer(params) -> tuple[torch.optim.Optimizer, str]:
    """AdamW as torchtitan configures it; fused where this build supports it, else foreach."""
    hyper = dict(lr=8e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    params = list(params)
    try:
        return torch.optim.AdamW(params, fused=True, **hyper), "fused"
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(params, foreach=True, **hyper), "foreach"


def main() -> int:
    opts = parse_args()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed)
    device = torch.device(opts.device)

    overrides = {field: getattr(opts, field) for field in
                 ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of",
                  "ffn_dim_multiplier") if getattr(opts, field) is not None}
    args = llama_ref.flavor(opts.flavor, max_seq_len=max(opts.seq, 1), **overrides)
    with torch.device(device):
        model = llama_ref.Transformer(args)
    model.init_weights()
    optimizer, optimizer_impl = build_optimizer(model.parameters())
    loss_fn = llama_ref.loss
    if opts.compile:  # torchtitan's apply_compile: every block on its own, fullgraph, and the loss
        for i, block in enumerate(model.layers):
            model.layers[i] = torch.compile(block, fullgraph=True)
        loss_fn = torch.compile(llama_ref.loss)

    # One fixed batch: data loading is not what this measures.
    window = torch.randint(0, args.vocab_size, (opts.batch, opts.seq + 1), device=device)
    tokens, labels = window[:, :-1].contiguous(), window[:, 1:].contiguous()  # [B, T] each

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=opts.bf16):
            loss = loss_fn(model(tokens), labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        optimizer.step()
        return loss.item()  # also synchronises the device

    step_ms, last_loss = [], float("nan")
    for i in range(opts.warmup + opts.steps):
        start = time.perf_counter()
        last_loss = step()
        if i >= opts.warmup:
            step_ms.append((time.perf_counter() - start) * 1e3)

    median_ms = statistics.median(step_ms)
    result = {
        "impl": "pytorch-compile" if opts.compile else "pytorch-eager",
        "tokens_per_s": round(opts.batch * opts.seq / (median_ms / 1e3), 1),
        "step_ms_median": round(median_ms, 3),
        "step_ms_min": round(min(step_ms), 3),
        "batch": opts.batch,
        "seq": opts.seq,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "flavor": opts.flavor if not overrides else "custom",
        "model": {"dim": args.dim, "n_layers": args.n_layers, "n_heads": args.n_heads,
                  "n_kv_heads": args.kv_heads, "vocab_size": args.vocab_size,
                  "ffn_hidden": llama_ref.ffn_hidden_dim(args)},
        "params": llama_ref.num_params(model),
        "flops_per_token": llama_ref.flops_per_token(model, opts.seq),
        "optimizer": optimizer_impl,
        "steps": opts.steps,
        "warmup": opts.warmup,
        "device": str(device),
        "bf16": opts.bf16,
        "final_loss": round(last_loss, 5),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
