#!/usr/bin/env python3
"""The MoE layer (titan/models/common/moe.h) against the PyTorch reference written from
torchtitan's (moe_ref.py): for each case moe_dump writes (Qwen3-MoE's router, DeepSeek-V3's with
node-limited groups and shared experts, torchtitan's defaults with a gate bias, every token on one
expert, the loop over experts, sizes grouped GEMMs cannot take, the fused grouped SwiGLU kernel on
DeepSeek-V3's router and with every token on one expert, forced load balance, no load balancing),
float32: the output and the gradients of the input and of every weight within 1e-5
(relative to the largest value), the tokens each expert counted exactly, and the expert bias after
one load-balancing update exactly.

Usage: python3 tests/parity/test_moe_parity.py --dump-bin build/moe_dump
Exit: 0 all passed, 1 a check failed, 77 skipped (no torch).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

try:
    import torch
except ImportError as error:
    print(f"SKIPPED: torch cannot be imported ({error})")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import moe_ref  # noqa: E402
from launch import Checks  # noqa: E402
from test_model_parity import load_tensor_dict  # noqa: E402

TOL = 1e-5
WEIGHTS = ["gate", "gate_bias", "w1", "w2", "w3", "shared_w1", "shared_w2", "shared_w3"]


def worst(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dump-bin", required=True)
    opts = ap.parse_args()
    checks = Checks()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "moe.pt")
        subprocess.run([opts.dump_bin, "--out", path], check=True)
        ours = load_tensor_dict(path)
    for case in sorted({key.split("/")[0] for key in ours}):
        t = {key.split("/", 1)[1]: v for key, v in ours.items() if key.startswith(case + "/")}
        (E, shared, k, softmax, norm, scale, before, groups, limited, _grouped, coeff, force, _bias,
         _hidden) = t["args"].tolist()
        w = {name: t[name].clone().requires_grad_(True) for name in WEIGHTS if name in t}
        x = t["x"].clone().requires_grad_(True)
        out, counts = moe_ref.moe_forward(
            x, w, t["expert_bias"] if coeff else None, top_k=int(k), score_before=bool(before),
            num_experts=int(E), softmax=bool(softmax), route_norm=bool(norm), route_scale=scale,
            groups=int(groups) or None, limited=int(limited) or None, force=bool(force))
        out.backward(t["go"])
        diffs = {"out": worst(t["out"], out.detach()), "grad_x": worst(t["grad_x"], x.grad)}
        for name, p in w.items():
            diffs["grad_" + name] = worst(t["grad_" + name], p.grad)
        bad = {name: f"{d:.1e}" for name, d in diffs.items() if not d <= TOL}
        checks.check(f"{case}: output and {len(diffs) - 1} gradients equal the reference's (worst "
                     f"{max(diffs.values()):.1e}, limit {TOL:g})", not bad, str(bad))
        empty = int((counts == 0).sum())
        checks.check(f"{case}: tokens per expert equal the reference's ({counts.long().tolist()}; {empty} experts got none)",
                     torch.equal(t["tokens_per_expert"], counts))
        want = moe_ref.update_expert_bias(t["expert_bias"], counts, coeff) if coeff else t["expert_bias"]
        checks.check(f"{case}: the expert bias after a load-balancing update equals the reference's",
                     torch.equal(t["expert_bias_after"], want),
                     f"{(t['expert_bias_after'] - want).abs().max().item():.1e}")
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
