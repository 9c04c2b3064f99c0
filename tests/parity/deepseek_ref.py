"""DeepSeek-V3 in PyTorch, written from torchtitan v0.2.2's models/deepseek_v3 (DeepSeekV3ModelArgs,
precompute_freqs_cis with YaRN, apply_rotary_emb on complex pairs, multi-head latent attention
with its softmax-scale correction, dense first blocks, MoE blocks, the final RMSNorm without an
epsilon), as the reference of tests/parity/test_deepseek_parity.py. The MoE layers are
moe_ref.py's. Weights are given by titan.cpp's FQNs, which are torchtitan's."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

import moe_ref


def rope_table(args: dict) -> torch.Tensor:
    """Complex rotations (max_seq_len, qk_rope_head_dim / 2), YaRN past original_seq_len."""
    dim, base, seq = args["qk_rope_head_dim"], args["rope_theta"], args["max_seq_len"]
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    if seq > args["original_seq_len"]:
        def correction_dim(rotations: float) -> float:
            return dim * math.log(args["original_seq_len"] / (rotations * 2 * math.pi)) / (2 * math.log(base))

        low = max(math.floor(correction_dim(args["beta_fast"])), 0)
        high = min(math.ceil(correction_dim(args["beta_slow"])), dim - 1)
        if low == high:
            high += 0.001
        ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
        smooth = 1 - ramp
        freqs = freqs / args["rope_factor"] * (1 - smooth) + freqs * smooth
    angles = torch.outer(torch.arange(seq), freqs)
    return torch.polar(torch.ones_like(angles), angles)


def rotate(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """x (B, T, H, r): adjacent pairs as complex numbers, times the table's rows [0, T)."""
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    out = torch.view_as_real(pairs * table[: x.shape[1]].view(1, x.shape[1], 1, -1)).flatten(3)
    return out.to(x.dtype)


def softmax_scale(args: dict) -> float:
    scale = (args["qk_nope_head_dim"] + args["qk_rope_head_dim"]) ** -0.5
    if args["max_seq_len"] > args["original_seq_len"]:
        m = 0.1 * args["mscale"] * math.log(args["rope_factor"]) + 1.0
        scale = scale * m * m
    return scale


def attention_mask(tokens: torch.Tensor, eos: int) -> torch.Tensor:
    """(B, 1, T, T): causal, and within documents when eos >= 0 (an EOS ends its document)."""
    B, T = tokens.shape
    causal = torch.ones(T, T, dtype=torch.bool).tril().expand(B, T, T)
    if eos < 0:
        return causal.unsqueeze(1)
    doc = torch.cumsum((tokens == eos).long(), dim=1) - (tokens == eos).long()  # EOS belongs to its document
    same = doc.unsqueeze(2) == doc.unsqueeze(1)
    return (causal & same).unsqueeze(1)


def mla(x: torch.Tensor, p: dict, pre: str, args: dict, table: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    B, T, _ = x.shape
    eps = args["norm_eps"]
    nope, r, vd, lora = args["qk_nope_head_dim"], args["qk_rope_head_dim"], args["v_head_dim"], args["kv_lora_rank"]
    if args["q_lora_rank"] == 0:
        q = F.linear(x, p[pre + "wq.weight"])
    else:
        latent = F.linear(x, p[pre + "wq_a.weight"])
        q = F.linear(F.rms_norm(latent, (latent.shape[-1],), p[pre + "q_norm.weight"], eps), p[pre + "wq_b.weight"])
    q = q.view(B, T, -1, nope + r)
    H = q.shape[2]
    q_nope, q_pe = torch.split(q, [nope, r], dim=-1)
    q = torch.cat([q_nope, rotate(q_pe, table)], dim=-1)
    kv = F.linear(x, p[pre + "wkv_a.weight"])
    kv, k_pe = torch.split(kv, [lora, r], dim=-1)
    k_pe = rotate(k_pe.unsqueeze(2), table)
    kv = F.linear(F.rms_norm(kv, (lora,), p[pre + "kv_norm.weight"], eps), p[pre + "wkv_b.weight"])
    k_nope, v = torch.split(kv.view(B, T, -1, nope + vd), [nope, vd], dim=-1)
    k = torch.cat([k_nope, k_pe.expand(-1, -1, H, -1)], dim=-1)
    scores = q.transpose(1, 2) @ k.transpose(1, 2).transpose(-1, -2) * softmax_scale(args)
    scores = scores.masked_fill(~mask, float("-inf"))
    o = torch.softmax(scores, dim=-1) @ v.transpose(1, 2)
    return F.linear(o.transpose(1, 2).reshape(B, T, -1), p[pre + "wo.weight"])


def forward(tokens: torch.Tensor, p: dict, buffers: dict, args: dict, document_eos: int = -1) -> torch.Tensor:
    """tokens (B, T) -> logits (B, T, vocab)."""
    eps = args["norm_eps"]
    table = rope_table(args)
    mask = attention_mask(tokens, document_eos)
    moe = args["moe_args"]
    h = F.embedding(tokens, p["tok_embeddings.weight"])
    for i in range(args["n_layers"]):
        pre = f"layers.{i}."
        x = F.rms_norm(h, (h.shape[-1],), p[pre + "attention_norm.weight"], eps)
        h = h + mla(x, p, pre + "attention.", args, table, mask)
        x = F.rms_norm(h, (h.shape[-1],), p[pre + "ffn_norm.weight"], eps)
        if i < args["n_dense_layers"]:
            ff = moe_ref.swiglu(x, p[pre + "feed_forward.w1.weight"], p[pre + "feed_forward.w2.weight"],
                                p[pre + "feed_forward.w3.weight"])
        else:
            w = {"gate": p[pre + "moe.router.gate.weight"], "w1": p[pre + "moe.experts.w1"],
                 "w2": p[pre + "moe.experts.w2"], "w3": p[pre + "moe.experts.w3"]}
            if moe["num_shared_experts"] > 0:
                for n in ("w1", "w2", "w3"):
                    w["shared_" + n] = p[pre + f"moe.shared_experts.{n}.weight"]
            ff, _ = moe_ref.moe_forward(
                x, w, buffers.get(pre + "moe.expert_bias"), top_k=moe["top_k"],
                score_before=moe["score_before_experts"], num_experts=moe["num_experts"],
                softmax=moe["score_func"] == "softmax", route_norm=moe["route_norm"], route_scale=moe["route_scale"],
                groups=moe.get("num_expert_groups"), limited=moe.get("num_limited_groups"))
        h = h + ff
    h = F.rms_norm(h, (h.shape[-1],), p["norm.weight"], None)  # torchtitan's final norm: no epsilon given
    return F.linear(h, p["output.weight"])
