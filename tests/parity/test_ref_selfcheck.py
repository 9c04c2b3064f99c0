#!/usr/bin/env python3
"""Checks llama_ref.py against published facts, so the parity test's reference is itself right.

Parameter counts and FLOPs per token from the reference tables (§2, §4), RoPE frequencies
against a scalar re-derivation, and structural properties (causality, GQA, tying, loss).

Usage: python3 tests/parity/test_ref_selfcheck.py
Exit: 0 all passed, 1 a check failed, 77 skipped (no torch).
"""

from __future__ import annotations

import math
import os
import sys
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
try:
    import torch
except ImportError as error:
    print(f"SKIPPED: torch cannot be imported ({error})")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_ref as ref  # noqa: E402

# Reference §2: flavor -> (FFN hidden, parameter count).
EXPECTED = {
    "debugmodel": (768, 6_163_712),
    "1B": (8192, 1_235_814_400),
    "3B": (8192, 3_212_749_824),
    "8B": (14336, 8_030_261_248),
    "70B": (28672, 70_553_706_496),
    "405B": (53248, 405_853_388_800),
}
# Reference §4: (flavor, seq_len) -> FLOPs per token.
EXPECTED_FLOPS = {("debugmodel", 2048): 71_585_280, ("8B", 8192): 57_914_449_920}

TINY = ref.ModelArgs(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=50, multiple_of=16,
                     max_seq_len=64)


class Tally:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        print(f"{'PASS' if ok else 'FAIL'}  {name}" + (f"  {detail}" if detail else ""),
              flush=True)


def scalar_rope_frequency(i: int, head_dim: int, theta: float) -> float:
    """Llama 3.1 scaled frequency of pair i, in Python floats, straight from the spec."""
    freq = 1.0 / theta ** (2 * i / head_dim)
    wavelen = 2 * math.pi / freq
    if wavelen < 8192 / 4:
        return freq
    if wavelen > 8192 / 1:
        return freq / 8
    s = (8192 / wavelen - 1) / (4 - 1)
    return (1 - s) * freq / 8 + s * freq


def tiny_model(args: ref.ModelArgs = TINY, seed: int = 0) -> ref.Transformer:
    torch.manual_seed(seed)
    model = ref.Transformer(args)
    model.init_weights()
    return model


def check_flavors(t: Tally) -> None:
    for name, (hidden, params) in EXPECTED.items():
        args = ref.flavor(name)
        t.check(f"ffn_hidden/{name}", ref.ffn_hidden_dim(args) == hidden,
                f"{ref.ffn_hidden_dim(args)} (expected {hidden})")
        with torch.device("meta"):
            model = ref.Transformer(args)
        count = ref.num_params(model)
        t.check(f"params/{name}", count == params, f"{count:,} (expected {params:,})")
    for (name, seq_len), flops in EXPECTED_FLOPS.items():
        with torch.device("meta"):
            model = ref.Transformer(ref.flavor(name))
        got = ref.flops_per_token(model, seq_len)
        t.check(f"flops_per_token/{name}@{seq_len}", got == flops, f"{got:,} (expected {flops:,})")


def check_rope(t: Tally) -> None:
    theta = 500000.0
    for head_dim in (16, 64, 128):
        freqs = ref.rope_frequencies(head_dim, theta)
        expected = torch.tensor([scalar_rope_frequency(i, head_dim, theta)
                                 for i in range(head_dim // 2)], dtype=torch.float64)
        rel = ((freqs.double() - expected).abs() / expected).max().item()
        t.check(f"rope_freqs/scaled/hd{head_dim}", rel < 2e-6, f"max rel err {rel:.2e}")
    # hd 128 exercises all three bands, so the comparison above covers every branch.
    wavelen = [2 * math.pi * theta ** (2 * i / 128) for i in range(64)]
    bands = (sum(w < 2048 for w in wavelen), sum(2048 <= w <= 8192 for w in wavelen),
             sum(w > 8192 for w in wavelen))
    t.check("rope_freqs/hd128 covers every band", min(bands) > 0, f"keep/blend/divide = {bands}")
    plain = ref.rope_frequencies(64, theta, scaled=False).double()
    expected = torch.tensor([1.0 / theta ** (2 * i / 64) for i in range(32)], dtype=torch.float64)
    rel = ((plain - expected).abs() / expected).max().item()
    t.check("rope_freqs/unscaled/hd64", rel < 2e-6, f"max rel err {rel:.2e}")

    # Rotation of interleaved pairs (2i, 2i+1) by angle t*freq_i, checked element by element.
    torch.manual_seed(1)
    B, T, H, hd = 1, 5, 2, 8
    x = torch.randn(B, T, H, hd)
    freqs = ref.rope_frequencies(hd, theta)
    rotated = ref.apply_rope(x, ref.rope_table(freqs, T))
    worst = 0.0
    for pos in range(T):
        for h in range(H):
            for i in range(hd // 2):
                angle = pos * float(freqs[i])
                a, b = float(x[0, pos, h, 2 * i]), float(x[0, pos, h, 2 * i + 1])
                want = (a * math.cos(angle) - b * math.sin(angle),
                        a * math.sin(angle) + b * math.cos(angle))
                got = (float(rotated[0, pos, h, 2 * i]), float(rotated[0, pos, h, 2 * i + 1]))
                worst = max(worst, abs(got[0] - want[0]), abs(got[1] - want[1]))
    t.check("rope_apply/interleaved pairs", worst < 1e-5, f"max abs err {worst:.2e}")


def check_structure(t: Tally) -> None:
    # RMSNorm agrees with torch's own.
    x = torch.randn(3, 7, 32)
    ours = ref.RMSNorm(32, 1e-5)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
    theirs = torch.nn.RMSNorm(32, eps=1e-5)
    theirs.load_state_dict(ours.state_dict())
    diff = (ours(x) - theirs(x)).abs().max().item()
    t.check("rmsnorm matches torch.nn.RMSNorm", diff < 1e-6, f"max abs diff {diff:.2e}")

    # Causality: changing token t leaves logits before t alone and changes those from t on.
    model = tiny_model()
    tokens = torch.randint(0, TINY.vocab_size, (2, 12))
    changed = tokens.clone()
    changed[:, 6] = (changed[:, 6] + 1) % TINY.vocab_size
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    t.check("causal: past unaffected, future affected",
            torch.equal(a[:, :6], b[:, :6]) and not torch.allclose(a[:, 6:], b[:, 6:]))

    # GQA equals plain multi-head attention with each kv head's weights copied to its group.
    mha_args = ref.ModelArgs(**{**TINY.__dict__, "n_kv_heads": TINY.n_heads})
    mha = ref.Transformer(mha_args)
    state = model.state_dict()
    repeats, hd = TINY.n_heads // TINY.kv_heads, TINY.head_dim
    for key in list(state):
        if key.endswith(("attention.wk.weight", "attention.wv.weight")):
            per_head = state[key].view(TINY.kv_heads, hd, TINY.dim)
            state[key] = per_head.repeat_interleave(repeats, dim=0).reshape(-1, TINY.dim)
    mha.load_state_dict(state)
    with torch.no_grad():
        diff = (mha(tokens) - a).abs().max().item()
    t.check("gqa equals mha with repeated kv heads", diff < 1e-5, f"max abs diff {diff:.2e}")

    # Loss: mean over valid labels; ignored positions contribute nothing.
    logits = torch.randn(2, 5, 11)
    labels = torch.randint(0, 11, (2, 5))
    labels[0, 1] = labels[1, 4] = ref.IGNORE_INDEX
    got = ref.loss(logits, labels)
    terms = [-torch.log_softmax(logits[b, s], -1)[labels[b, s]]
             for b in range(2) for s in range(5) if labels[b, s] != ref.IGNORE_INDEX]
    want = torch.stack(terms).mean()
    t.check("loss is the mean over labels != -100", abs(got.item() - want.item()) < 1e-5,
            f"{got.item():.6f} vs {want.item():.6f}")

    # Tied embeddings share one tensor and one name; gradients from both uses accumulate there.
    tied = tiny_model(ref.ModelArgs(**{**TINY.__dict__, "tied_embeddings": True}))
    names = [n for n, _ in tied.named_parameters()]
    t.check("tied: output shares tok_embeddings.weight",
            tied.output.weight is tied.tok_embeddings.weight and "output.weight" not in names)

    # Initialisation follows §2.
    debug = tiny_model(ref.flavor("debugmodel"))
    last = debug.layers[-1]
    stds = {"tok_embeddings": (debug.tok_embeddings.weight.std().item(), 1.0),
            "wq": (debug.layers[0].attention.wq.weight.std().item(), 0.02),
            "last wo": (last.attention.wo.weight.std().item(), 0.02 / math.sqrt(2 * 6)),
            "output": (debug.output.weight.std().item(), None)}
    out_bound = 3 * 256 ** -0.5
    ok = all(abs(got - want) < 0.05 * want for got, want in stds.values() if want is not None)
    ok = ok and debug.output.weight.abs().max().item() <= out_bound + 1e-7
    t.check("init: std per §2 and output cut at 3 std", ok,
            ", ".join(f"{k} {v[0]:.4f}" for k, v in stds.items()))


def main() -> int:
    torch.set_num_threads(1)
    tally = Tally()
    check_flavors(tally)
    check_rope(tally)
    check_structure(tally)
    print(f"{tally.passed} passed, {tally.failed} failed")
    return 0 if tally.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
