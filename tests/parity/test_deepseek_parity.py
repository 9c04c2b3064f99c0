#!/usr/bin/env python3
"""DeepSeek-V3 (titan/models/deepseek_v3) against the PyTorch reference written from torchtitan's
(deepseek_ref.py): for each case deepseek_dump writes (queries without and with their latent,
YaRN off and on, softmax routing and node-limited sigmoid routing with shared experts, dense and
MoE blocks, fused kernels with block-causal attention), float32 with a random expert bias: the
logits, the loss and the gradient of every parameter within 1e-5 of each tensor's largest value.

Usage: python3 tests/parity/test_deepseek_parity.py --dump-bin build/deepseek_dump
Exit: 0 all passed, 1 a check failed, 77 skipped (no torch).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

try:
    import torch
    import torch.nn.functional as F
except ImportError as error:
    print(f"SKIPPED: torch cannot be imported ({error})")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import deepseek_ref  # noqa: E402
from launch import Checks  # noqa: E402
from test_model_parity import load_tensor_dict  # noqa: E402
from test_moe_parity import worst  # noqa: E402

TOL = 1e-5


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dump-bin", required=True)
    opts = ap.parse_args()
    checks = Checks()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([opts.dump_bin, "--out", tmp], check=True, stdout=subprocess.DEVNULL)
        ours = load_tensor_dict(os.path.join(tmp, "case.pt"))
        with open(os.path.join(tmp, "case.json")) as f:
            meta = json.load(f)
    for case in meta["cases"]:
        name, args = case["name"], case["args"]
        pre = name + "/"
        params = {k[len(pre + "param/"):]: v.clone().requires_grad_(True) for k, v in ours.items()
                  if k.startswith(pre + "param/")}
        buffers = {k[len(pre + "buffer/"):]: v for k, v in ours.items() if k.startswith(pre + "buffer/")}
        logits = deepseek_ref.forward(ours[pre + "tokens"], params, buffers, args, case["document_eos"])
        loss = F.cross_entropy(logits.flatten(0, 1), ours[pre + "labels"].flatten(), ignore_index=-100)
        loss.backward()
        diffs = {"logits": worst(ours[pre + "logits"], logits.detach()), "loss": worst(ours[pre + "loss"], loss.detach())}
        for fqn, p in params.items():
            diffs["grad " + fqn] = worst(ours[pre + "grad/" + fqn], p.grad)
        bad = {k: f"{d:.1e}" for k, d in diffs.items() if not d <= TOL}
        worst_name = max(diffs, key=diffs.get)
        checks.check(f"{name}: logits, loss and the gradients of {len(params)} parameters equal the reference's "
                     f"(worst {diffs[worst_name]:.1e} at {worst_name}, limit {TOL:g})", not bad, str(bad))
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
