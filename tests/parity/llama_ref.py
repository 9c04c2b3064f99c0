"""Llama 3 in plain single-device PyTorch: the numerics reference for titan.cpp.

Written from the spec in shared/reference/torchtitan.md §2-4 (torchtitan v0.2.2 behaviour),
independently of the C++ code it checks. Parameter names are torchtitan's FQNs, so a state
dict from either side loads into the other. Used by the parity tests and the bench peer.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace

# The pip wheel warns at import when NumPy is absent; we never use NumPy.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

IGNORE_INDEX = -100

# Llama 3.1 RoPE scaling, applied to every flavor.
ROPE_SCALING_FACTOR = 8.0
ROPE_LOW_FREQ_FACTOR = 1.0
ROPE_HIGH_FREQ_FACTOR = 4.0
ROPE_ORIGINAL_CONTEXT = 8192


@dataclass(frozen=True)
class ModelArgs:
    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int | None = None  # None means n_heads (no GQA)
    vocab_size: int = 128256
    multiple_of: int = 256
    ffn_dim_multiplier: float | None = None
    norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    max_seq_len: int = 2048
    use_scaled_rope: bool = True
    tied_embeddings: bool = False

    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


FLAVORS: dict[str, ModelArgs] = {
    "debugmodel": ModelArgs(dim=256, n_layers=6, n_heads=16, vocab_size=2048),
    "1B": ModelArgs(dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, ffn_dim_multiplier=1.5,
                    multiple_of=1024, tied_embeddings=True),
    "3B": ModelArgs(dim=3072, n_layers=28, n_heads=24, n_kv_heads=8, ffn_dim_multiplier=1.0,
                    multiple_of=1024, tied_embeddings=True),
    "8B": ModelArgs(dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, ffn_dim_multiplier=1.3,
                    multiple_of=1024),
    "70B": ModelArgs(dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, ffn_dim_multiplier=1.3,
                     multiple_of=4096),
    "405B": ModelArgs(dim=16384, n_layers=126, n_heads=128, n_kv_heads=8,
                      ffn_dim_multiplier=1.2, multiple_of=4096),
}


def flavor(name: str, **overrides) -> ModelArgs:
    if name not in FLAVORS:
        raise ValueError(f"unknown flavor {name!r}; choose one of {', '.join(FLAVORS)}")
    return replace(FLAVORS[name], **overrides)


def ffn_hidden_dim(args: ModelArgs) -> int:
    hidden = int(2 * (4 * args.dim) / 3)
    if args.ffn_dim_multiplier is not None:
        hidden = int(args.ffn_dim_multiplier * hidden)
    return args.multiple_of * ((hidden + args.multiple_of - 1) // args.multiple_of)


# ---- RoPE -------------------------------------------------------------------------------------

def rope_frequencies(head_dim: int, theta: float, scaled: bool = True) -> torch.Tensor:
    """Per-pair rotation frequencies, float32 [head_dim/2], as torchtitan computes them."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.float32)[: head_dim // 2] / head_dim
    freqs = 1.0 / (theta ** exponents)
    if not scaled:
        return freqs
    wavelen = 2 * math.pi / freqs
    long_wavelen = ROPE_ORIGINAL_CONTEXT / ROPE_LOW_FREQ_FACTOR  # beyond: divide by the factor
    short_wavelen = ROPE_ORIGINAL_CONTEXT / ROPE_HIGH_FREQ_FACTOR  # below: keep
    divided = torch.where(wavelen > long_wavelen, freqs / ROPE_SCALING_FACTOR, freqs)
    s = (ROPE_ORIGINAL_CONTEXT / wavelen - ROPE_LOW_FREQ_FACTOR) / (
        ROPE_HIGH_FREQ_FACTOR - ROPE_LOW_FREQ_FACTOR)
    blended = (1 - s) * divided / ROPE_SCALING_FACTOR + s * divided
    in_between = (wavelen >= short_wavelen) & (wavelen <= long_wavelen)
    return torch.where(in_between, blended, divided)


def rope_table(freqs: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Unit complex rotations e^{i t f}: complex64 [seq_len, head_dim/2]."""
    positions = torch.arange(seq_len, device=freqs.device)  # int64, promoted to float32 below
    angles = torch.outer(positions, freqs).float()  # [T, hd/2]
    return torch.polar(torch.ones_like(angles), angles)


def apply_rope(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """x: [B, T, heads, hd]; elements (2i, 2i+1) of each head form one complex number."""
    B, T, heads, hd = x.shape
    pairs = torch.view_as_complex(x.float().reshape(B, T, heads, hd // 2, 2))  # [B,T,h,hd/2]
    rotated = pairs * table[:T].view(1, T, 1, hd // 2)
    return torch.view_as_real(rotated).flatten(3).type_as(x)  # [B,T,h,hd]


# ---- modules ----------------------------------------------------------------------------------

class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., dim] -> [..., dim]
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


class Attention(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_heads = args.n_heads
        self.n_kv_heads = args.kv_heads
        self.head_dim = args.head_dim
        if self.n_heads % self.n_kv_heads != 0:
            raise ValueError(
                f"n_heads {self.n_heads} not divisible by n_kv_heads {self.n_kv_heads}")
        self.wq = nn.Linear(args.dim, self.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(args.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(args.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(self.n_heads * self.head_dim, args.dim, bias=False)

    def forward(self, x: torch.Tensor, table: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T, _ = x.shape  # x: [B, T, dim]; mask: [B, 1, T, T] bool (True: attend), else causal
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim)
        q, k = apply_rope(q, table), apply_rope(k, table)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, heads, T, hd]
        repeats = self.n_heads // self.n_kv_heads
        if repeats > 1:  # kv head j serves query heads j*repeats .. (j+1)*repeats-1
            k = k.repeat_interleave(repeats, dim=1)
            v = v.repeat_interleave(repeats, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                             scale=1.0 / math.sqrt(self.head_dim))
        out = out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)
        return self.wo(out)  # [B, T, dim]


class FeedForward(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        hidden = ffn_hidden_dim(args)
        self.w1 = nn.Linear(args.dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, args.dim, bias=False)
        self.w3 = nn.Linear(args.dim, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B,T,dim] -> [B,T,dim]
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(self, layer_id: int, args: ModelArgs):
        super().__init__()
        self.layer_id = layer_id
        self.attention = Attention(args)
        self.feed_forward = FeedForward(args)
        self.attention_norm = RMSNorm(args.dim, args.norm_eps)
        self.ffn_norm = RMSNorm(args.dim, args.norm_eps)

    def forward(self, x: torch.Tensor, table: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), table, mask)  # [B,T,dim]
        return h + self.feed_forward(self.ffn_norm(h))


def document_mask(tokens: torch.Tensor, eos: int) -> torch.Tensor:
    """torchtitan's block-causal mask for tokens [B,T]: a position's document is the number of EOS
    strictly before it (an EOS ends its own document); key j is seen by query i when j <= i in
    the same document. -> [B,1,T,T] bool."""
    is_eos = tokens == eos
    is_eos[:, -1] = True
    cumulative = torch.cumsum(is_eos.long(), dim=1)
    doc = torch.zeros_like(cumulative)
    doc[:, 1:] = cumulative[:, :-1]
    T = tokens.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    return ((doc.unsqueeze(2) == doc.unsqueeze(1)) & causal).unsqueeze(1)


class Transformer(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(TransformerBlock(i, args) for i in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
        if args.tied_embeddings:
            self.output.weight = self.tok_embeddings.weight

    def forward(self, tokens: torch.Tensor, document_eos: int | None = None) -> torch.Tensor:
        """[B,T] int64 -> [B,T,V]; with `document_eos`, block-causal attention (document_mask)."""
        T = tokens.shape[1]
        mask = None if document_eos is None else document_mask(tokens, document_eos)
        if T > self.args.max_seq_len:
            raise ValueError(f"sequence length {T} exceeds max_seq_len {self.args.max_seq_len}")
        freqs = rope_frequencies(self.args.head_dim, self.args.rope_theta,
                                 self.args.use_scaled_rope).to(tokens.device)
        table = rope_table(freqs, T)  # [T, hd/2]
        h = self.tok_embeddings(tokens)  # [B, T, dim]
        for layer in self.layers:
            h = layer(h, table, mask)
        return self.output(self.norm(h))

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """torchtitan's initialisation (reference §2), with depth-scaled output projections."""
        def trunc(w: torch.Tensor, std: float, bound: float) -> None:
            nn.init.trunc_normal_(w, mean=0.0, std=std, a=-bound, b=bound, generator=generator)

        nn.init.normal_(self.tok_embeddings.weight, generator=generator)
        for layer in self.layers:
            depth_std = 0.02 / math.sqrt(2 * (layer.layer_id + 1))
            attn, ffn = layer.attention, layer.feed_forward
            for w in (attn.wq.weight, attn.wk.weight, attn.wv.weight, ffn.w1.weight):
                trunc(w, 0.02, 2.0)
            for w in (attn.wo.weight, ffn.w2.weight, ffn.w3.weight):
                trunc(w, depth_std, 2.0)
            layer.attention_norm.weight.fill_(1.0)
            layer.ffn_norm.weight.fill_(1.0)
        self.norm.weight.fill_(1.0)
        if not self.args.tied_embeddings:
            std = self.args.dim ** -0.5
            trunc(self.output.weight, std, 3 * std)


# ---- loss and accounting ----------------------------------------------------------------------

def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross entropy over labels != -100, in float32. logits [B,T,V], labels [B,T]."""
    total = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(0, 1),
                            reduction="sum", ignore_index=IGNORE_INDEX)
    return total / (labels != IGNORE_INDEX).sum()


def num_params(model: nn.Module) -> int:
    """Distinct parameters: a tied embedding/output matrix counts once."""
    return sum(p.numel() for p in model.parameters())


def flops_per_token(model: Transformer, seq_len: int) -> int:
    """6*(N - N_embedding) + 12*L*H*hd*T (reference §4).

    N counts distinct parameters, so with tied embeddings the shared matrix drops out entirely,
    as torchtitan's formula has it.
    """
    args = model.args
    n_embedding = model.tok_embeddings.weight.numel()
    attention = 12 * args.n_layers * args.n_heads * args.head_dim * seq_len
    return 6 * (num_params(model) - n_embedding) + attention
