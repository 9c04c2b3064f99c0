#!/usr/bin/env python3
"""Float8 linear layers against torchao's Float8Linear (emulate=True), the reference of
titan.cpp's float8 numerics: for the tensorwise, rowwise and rowwise_with_gw_hp recipes, in
float32 and bfloat16, on one input with a zero row, an outlier and tiny gradients, the output,
the input gradient and the weight gradient equal torchao's (bit for bit is reported; the check
allows 1e-6 of each tensor's largest value). The same for MX (mxfp8) against torchao's mx_mm
(emulated kernels) with the mxfp8_cublas (floor) and mxfp8_cublas_rceil scales, on an input
with an all-zero block, an outlier and a tiny gradient. A missing torchao is a failure:
run_tests.sh installs it.

Usage: python3 tests/parity/test_float8_parity.py --dump-bin build/float8_dump
"""
import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_model_parity import load_tensor_dict  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dump-bin", required=True)
    opts = ap.parse_args()
    try:
        import torch
        from torchao.float8 import Float8LinearConfig
        from torchao.float8.float8_linear import Float8Linear
        from torchao.prototype.moe_training.mxfp8_linear import _to_mxfp8_then_scaled_mm
        from torchao.prototype.mx_formats.config import ScaleCalculationMode
        from torchao.quantization.quantize_.common.kernel_preference import KernelPreference
    except ImportError as e:
        print(f"FAIL torchao imports (run_tests.sh installs it): {e}")
        print("0 passed, 1 failed")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "float8.pt")
        subprocess.run([opts.dump_bin, "--out", path], check=True)
        ours = load_tensor_dict(path)
    passed = failed = 0
    cases = sorted({k.rsplit("/", 1)[0] for k in ours})
    for case in cases:
        recipe, dtype = case.split("/")
        t = {k.rsplit("/", 1)[1]: v for k, v in ours.items() if k.startswith(case + "/")}
        x = t["x"].clone().requires_grad_(True)
        if recipe.startswith("mxfp8"):
            w = t["w"].clone().requires_grad_(True)
            mode = ScaleCalculationMode.RCEIL if recipe.endswith("rceil") else ScaleCalculationMode.FLOOR
            out = _to_mxfp8_then_scaled_mm(x, w, KernelPreference.EMULATED, mode)
            out.backward(t["go"])
            weight_grad = w.grad
        else:
            config = dataclasses.replace(Float8LinearConfig.from_recipe_name(recipe), emulate=True)
            n, k = t["w"].shape
            linear = torch.nn.Linear(k, n, bias=False, dtype=t["w"].dtype)
            with torch.no_grad():
                linear.weight.copy_(t["w"])
            ref = Float8Linear.from_float(linear, config=config)
            out = ref(x)
            out.backward(t["go"])
            weight_grad = ref.weight.grad
        for name, theirs, mine in [("output", out.detach(), t["out"]), ("input gradient", x.grad, t["grad_x"]),
                                   ("weight gradient", weight_grad, t["grad_w"])]:
            same_dtype = theirs.dtype == mine.dtype
            diff = (theirs.double() - mine.double()).abs().max().item()
            scale = max(theirs.double().abs().max().item(), 1e-30)
            exact = same_dtype and torch.equal(theirs, mine)
            ok = same_dtype and diff <= 1e-6 * scale
            print(f"{'PASS' if ok else 'FAIL'} {recipe} {dtype}: {name} equals torchao's "
                  f"({'bit for bit' if exact else f'max diff {diff:.2e} of {scale:.2e}'}; {mine.dtype})", flush=True)
            passed, failed = passed + ok, failed + (not ok)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
