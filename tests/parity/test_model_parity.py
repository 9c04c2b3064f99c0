#!/usr/bin/env python3
"""Parity of the C++ Llama 3 against llama_ref.py: logits, loss and every gradient.

Runs `DUMP_BIN --out DIR`, which writes DIR/case.json (model args per case) and DIR/case.pt
(weights, inputs and the C++ outputs), then recomputes everything in PyTorch and compares.

Usage: python3 tests/parity/test_model_parity.py --dump-bin PATH [--workdir DIR]
Exit: 0 all passed, 1 a check failed, 2 usage error, 77 skipped (no torch).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "integration"))
import launch  # noqa: E402,F401  (kills whatever this test leaves running when it ends)
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
try:
    import torch
except ImportError as error:
    print(f"SKIPPED: torch cannot be imported ({error})")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_ref  # noqa: E402

# max|ours - ref| <= TOLERANCE * max|ref|, per tensor, against each tensor's own scale (a
# gradient of magnitude 1e-4 is held to 1e-9): float32 reordering noise stays below 1e-6 of the
# scale (worst seen 6.2e-7), a wrong formula is off by a large fraction of it.
TOLERANCE = 1e-5
DUMP_TIMEOUT_S = 600


class Tally:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0
        self.worst_rel = 0.0
        self.worst_name = "(none)"
        self.worst_scaled = 0.0
        self.worst_scaled_name = "(none)"

    def record(self, name: str, ok: bool, detail: str = "") -> bool:
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        print(f"{'PASS' if ok else 'FAIL'}  {name}" + (f"  {detail}" if detail else ""),
              flush=True)
        return ok

    def compare(self, name: str, ours: torch.Tensor, ref: torch.Tensor) -> bool:
        if tuple(ours.shape) != tuple(ref.shape):
            return self.record(name, False, f"shape {tuple(ours.shape)} != ref {tuple(ref.shape)}")
        ours64, ref64 = ours.detach().double(), ref.detach().double()
        if not torch.isfinite(ours64).all():
            return self.record(name, False, "ours has non-finite values")
        if not torch.isfinite(ref64).all():
            return self.record(name, False, "reference has non-finite values")
        max_diff = (ours64 - ref64).abs().max().item() if ref64.numel() else 0.0
        max_ref = ref64.abs().max().item() if ref64.numel() else 0.0
        rel = max_diff / max(1.0, max_ref)
        scaled = max_diff / max_ref if max_ref > 0 else (0.0 if max_diff == 0 else float("inf"))
        if rel > self.worst_rel or self.worst_name == "(none)":
            self.worst_rel, self.worst_name = rel, name
        if scaled > self.worst_scaled or self.worst_scaled_name == "(none)":
            self.worst_scaled, self.worst_scaled_name = scaled, name
        detail = (f"max|diff|={max_diff:.3e}  max|ref|={max_ref:.3e}  rel={rel:.3e}  "
                  f"scaled={scaled:.3e}")
        ok = scaled <= TOLERANCE
        return self.record(name, ok, detail)

    def finish(self) -> int:
        if self.worst_name != "(none)":
            self.print_worst()
        print(f"{self.passed} passed, {self.failed} failed")
        return 0 if self.failed == 0 else 1

    def print_worst(self) -> None:
        print(f"worst error relative to max(1, max|ref|): {self.worst_rel:.3e} ({self.worst_name})")
        print(f"worst error relative to the tensor's own max|ref|: {self.worst_scaled:.3e} "
              f"({self.worst_scaled_name}), tolerance {TOLERANCE:.0e}")


def load_tensor_dict(path: str) -> dict[str, torch.Tensor]:
    """Loads what libtorch's torch::pickle_save wrote for a c10::Dict<std::string, Tensor>."""
    try:
        return torch.load(path, weights_only=True)
    except Exception:  # noqa: BLE001 - the typed dict carries a TorchScript type-tag global
        pass
    try:
        import torch.jit._pickle as jit_pickle
        with torch.serialization.safe_globals([jit_pickle.restore_type_tag]):
            return torch.load(path, weights_only=True)
    except Exception:  # noqa: BLE001
        return torch.load(path, weights_only=False)


def model_args_from_json(raw: dict) -> llama_ref.ModelArgs:
    known = {f.name for f in dataclasses.fields(llama_ref.ModelArgs)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"unknown model args {unknown}")
    return llama_ref.ModelArgs(**raw)


def check_case(tally: Tally, name: str, raw_args: dict, data: dict[str, torch.Tensor]) -> None:
    try:
        args = model_args_from_json(raw_args)
        model = llama_ref.Transformer(args)
    except Exception as error:  # noqa: BLE001 - report and go on with the other cases
        tally.record(f"{name}/build", False, f"cannot build reference model: {error}")
        return

    # Weights: exactly the reference's distinct parameters. A tied model may also carry
    # output.weight, but only as a bit-exact copy of tok_embeddings.weight.
    param_prefix = f"{name}/param/"
    given = {k[len(param_prefix):]: v for k, v in data.items() if k.startswith(param_prefix)}
    params = dict(model.named_parameters())
    missing = sorted(set(params) - set(given))
    allowed_extra = {"output.weight"} if args.tied_embeddings else set()
    unexpected = sorted(set(given) - set(params) - allowed_extra)
    wrong_shape = sorted(n for n in set(params) & set(given)
                         if tuple(given[n].shape) != tuple(params[n].shape))
    if missing or unexpected or wrong_shape:
        tally.record(f"{name}/load_weights", False,
                     f"missing={missing} unexpected={unexpected} wrong_shape={wrong_shape}")
        return
    with torch.no_grad():
        for fqn, p in params.items():
            p.copy_(given[fqn].to(torch.float32))
    tally.record(f"{name}/load_weights", True, f"{len(params)} tensors, strict")
    if args.tied_embeddings and "output.weight" in given:
        tally.record(f"{name}/tied_output_weight",
                     torch.equal(given["output.weight"], given["tok_embeddings.weight"]),
                     "output.weight must equal tok_embeddings.weight")

    tokens, labels = data.get(f"{name}/tokens"), data.get(f"{name}/labels")
    if tokens is None or labels is None:
        tally.record(f"{name}/inputs", False, "tokens or labels missing")
        return
    inputs_ok = (tokens.dtype == torch.int64 and labels.dtype == torch.int64
                 and tokens.dim() == 2 and tokens.shape == labels.shape
                 and int(tokens.min()) >= 0 and int(tokens.max()) < args.vocab_size
                 and int((labels != llama_ref.IGNORE_INDEX).sum()) > 0)
    n_ignored = int((labels == llama_ref.IGNORE_INDEX).sum())
    if not tally.record(f"{name}/inputs", inputs_ok,
                        f"tokens {tuple(tokens.shape)}, {n_ignored} labels ignored"):
        return

    logits = model(tokens)
    loss = llama_ref.loss(logits, labels)
    loss.backward()

    for key, ref in ((f"{name}/logits", logits), (f"{name}/loss", loss)):
        if key not in data:
            tally.record(key, False, "missing from case.pt")
        else:
            tally.compare(key, data[key], ref)

    grad_prefix = f"{name}/grad/"
    grads = {k[len(grad_prefix):]: v for k, v in data.items() if k.startswith(grad_prefix)}
    extra = sorted(set(grads) - set(params))
    if extra:
        tally.record(f"{name}/grad_keys", False, f"unexpected gradients {extra}")
    for fqn, p in params.items():
        key = f"{grad_prefix}{fqn}"
        if fqn not in grads:
            tally.record(key, False, "missing from case.pt")
        else:
            tally.compare(key, grads[fqn], p.grad)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dump-bin", required=True, help="C++ program that writes the cases")
    parser.add_argument("--workdir", help="where the cases go (default: a temporary folder)")
    opts = parser.parse_args()
    if not os.access(opts.dump_bin, os.X_OK):
        print(f"error: --dump-bin {opts.dump_bin} is not an executable file; build it first",
              file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory(prefix="titan_parity_") as scratch:
        workdir = opts.workdir or scratch
        os.makedirs(workdir, exist_ok=True)
        tally = Tally()
        command = [opts.dump_bin, "--out", workdir]
        try:
            run = subprocess.run(command, capture_output=True, text=True, timeout=DUMP_TIMEOUT_S)
            dump_ok, detail = run.returncode == 0, f"exit {run.returncode}"
            output = run.stdout + run.stderr
        except (OSError, subprocess.TimeoutExpired) as error:
            dump_ok, detail, output = False, str(error), ""
        if not tally.record("dump: " + " ".join(command), dump_ok, detail):
            print(output[-4000:])
            return tally.finish()

        try:
            with open(os.path.join(workdir, "case.json")) as f:
                cases = json.load(f)["cases"]
            data = load_tensor_dict(os.path.join(workdir, "case.pt"))
            read_ok, detail = bool(cases) and isinstance(data, dict), f"{len(cases)} cases"
        except Exception as error:  # noqa: BLE001
            read_ok, detail = False, f"{type(error).__name__}: {error}"
        if not tally.record("read case.json and case.pt", read_ok, detail):
            return tally.finish()

        names = [case["name"] for case in cases]
        orphans = sorted(k for k in data if k.split("/", 1)[0] not in names)
        tally.record("case.pt keys all belong to a case", not orphans, f"orphans={orphans[:5]}"
                     if orphans else f"{len(data)} tensors")
        for case in cases:
            check_case(tally, case["name"], case["args"], data)
        return tally.finish()


if __name__ == "__main__":
    sys.exit(main())
