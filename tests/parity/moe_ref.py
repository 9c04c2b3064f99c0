"""A mixture-of-experts layer in PyTorch, written from torchtitan v0.2.2's models/moe (MoEArgs,
TokenChoiceTopKRouter, TokenReorderer, GroupedExperts with the for-loop path, MoE, and the
load-balancing update of components/optimizer.py), as the reference of tests/parity/test_moe_parity.py.
The experts run one at a time in the input's dtype."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def swiglu(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, w3: torch.Tensor) -> torch.Tensor:
    return F.linear(F.silu(F.linear(x, w1)) * F.linear(x, w3), w2)


def route(x, gate, gate_bias, expert_bias, *, num_experts, top_k, softmax, route_norm, route_scale,
          groups=None, limited=None, force=False):
    """x [N, D] -> (gate values [N, k] float32, experts [N, k] int64, tokens per expert [E])."""
    logits = F.linear(x, gate, gate_bias)
    scores = F.softmax(logits.float(), dim=1) if softmax else torch.sigmoid(logits.float())
    choice = scores if expert_bias is None else scores + expert_bias
    if groups:
        per_group = choice.view(-1, groups, num_experts // groups)
        best_two = per_group.topk(2, dim=-1).values.sum(dim=-1)
        kept = best_two.topk(limited, dim=-1, sorted=False).indices
        dropped = torch.ones_like(best_two, dtype=torch.bool).scatter(1, kept, False)
        choice = per_group.masked_fill(dropped.unsqueeze(-1), float("-inf")).view(-1, num_experts)
    experts = choice.topk(top_k, dim=-1, sorted=False).indices
    if force:
        n = scores.size(0)
        experts = torch.arange(n * top_k, dtype=torch.int64).view(n, top_k) % num_experts
    top = scores.gather(1, experts)
    if route_norm:
        top = top / (top.sum(dim=-1, keepdim=True) + 1e-20)
    top = top * route_scale
    counts = torch.histc(experts.view(-1).float(), bins=num_experts, min=0, max=num_experts)
    return top, experts, counts


def moe_forward(x, w: dict, expert_bias, *, top_k, score_before, **router):
    """x [B, T, D] -> ([B, T, D], tokens per expert)."""
    B, T, D = x.shape
    flat = x.view(-1, D)
    top, experts, counts = route(flat, w["gate"], w.get("gate_bias"), expert_bias, top_k=top_k, **router)
    order = torch.argsort(experts.view(-1), stable=True)
    routed = flat[order // top_k]
    if score_before:
        routed = (routed.float() * top.view(-1)[order].reshape(-1, 1)).to(x.dtype)
    pieces, start = [], 0
    for e, n in enumerate(counts.long().tolist()):
        pieces.append(swiglu(routed[start:start + n], w["w1"][e], w["w2"][e], w["w3"][e]))
        start += n
    out_sorted = torch.cat(pieces)
    pairs = torch.zeros_like(out_sorted)
    pairs[order] = out_sorted
    pairs = pairs.view(-1, top_k, D)
    if score_before:
        combined = pairs.sum(dim=1)
    else:
        combined = torch.bmm(top.view(-1, 1, top_k), pairs.float()).to(x.dtype).squeeze(1)
    if "shared_w1" in w:
        combined = swiglu(flat, w["shared_w1"], w["shared_w2"], w["shared_w3"]) + combined
    return combined.view(B, T, D), counts


def update_expert_bias(expert_bias: torch.Tensor, tokens: torch.Tensor, coeff: float) -> torch.Tensor:
    """The bias after one load-balancing step (torchtitan's optimizer pre-step hook)."""
    delta = coeff * torch.sign(tokens.mean() - tokens)
    return expert_bias + (delta - delta.mean())
