#!/usr/bin/env python3
"""Document masking (attn_mask_type = "block_causal": the flavors debugmodel_flex_attn and
debugmodel_varlen_attn) on CPU processes:

- both flavors train the debug model 10 steps with the same losses (titan.cpp runs one kernel for
  both), different from causal attention's, and the log says where documents split;
- against one process with the same global batch, 10 steps, fp32, 1e-5 relative: FSDP(2),
  DDP(2), TP(2), async TP(2), PP(2) 1F1B, TP(2) with full activation checkpointing, FSDP(2) with
  op-level selective checkpointing, and FSDP(2)xTP(2) in float8 (against one process in float8);
- killed right after its step-5 save, a block-causal run resumes bit for bit;
- the ATen path (fused kernels off) gives the fused kernel's losses (1e-5).

Usage: python3 tests/integration/test_documents.py --titan build/titan
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from launch import LAYOUT_BASE  # noqa: E402
from launch import Checks, launch_into, run_layout, scratch_dir, step_metrics, worst_rel  # noqa: E402

FLEX = ["--model.flavor", "debugmodel_flex_attn"]
BASE = LAYOUT_BASE + ["--metrics.log_freq", "1"]
TOL = 1e-5


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--titan", required=True)
    titan = os.path.abspath(ap.parse_args().titan)
    checks = Checks()
    check = checks.check
    tmp = scratch_dir("titan_documents_")
    lb8 = ["--training.local_batch_size", "8"]

    outs = launch_into(titan, 1, BASE + lb8 + FLEX, os.path.join(tmp, "flex"))
    if outs[0][0] != 0:
        check("debugmodel_flex_attn trains", False, outs[0][2][-600:])
        return checks.summary()
    one = step_metrics(os.path.join(tmp, "flex"))
    log = outs[0][1] + outs[0][2]
    check("the log says attention is block-causal and where documents split",
          "block-causal: documents split at EOS id" in log and "attn_mask_type='block_causal'" in log,
          "\n".join(line for line in log.splitlines() if "ttention" in line or "ModelArgs" in line))
    varlen = run_layout(checks, titan, "debugmodel_varlen_attn", 1, BASE + lb8 + ["--model.flavor",
                                                                               "debugmodel_varlen_attn"],
                        os.path.join(tmp, "varlen"))
    causal = run_layout(checks, titan, "debugmodel", 1, BASE + lb8, os.path.join(tmp, "causal"))
    if varlen is not None:
        check("debugmodel_varlen_attn gives debugmodel_flex_attn's losses bit for bit",
              [r["loss"] for r in varlen] == [r["loss"] for r in one])
    if causal is not None:
        gap = worst_rel(one, causal, "loss")
        check(f"block-causal losses differ from causal ones (worst {gap:.1e}: the documents are masked)", gap > 1e-4)
    aten = run_layout(checks, titan, "block-causal, fused kernels off", 1, BASE + lb8 + FLEX + ["--compile.enable=false"],
                      os.path.join(tmp, "aten"))
    if aten is not None:
        lw, gw = worst_rel(aten, one, "loss"), worst_rel(aten, one, "grad_norm")
        check(f"ATen's masked attention (fused kernels off): loss {lw:.1e}, grad norm {gw:.1e} of the fused kernel's "
              f"(<= {TOL:g})", len(aten) == 10 and lw <= TOL and gw <= TOL)

    tp2 = ["--parallelism.tensor_parallel_degree", "2"]
    pp = ["--parallelism.pipeline_parallel_degree", "2", "--parallelism.pipeline_parallel_schedule", "1F1B",
          "--parallelism.pipeline_parallel_microbatch_size", "2", "--parallelism.data_parallel_shard_degree", "1"]
    layouts = [
        ("FSDP(2)", 2, ["--training.local_batch_size", "4"]),
        ("DDP(2)", 2, ["--training.local_batch_size", "4", "--parallelism.data_parallel_replicate_degree", "2",
                       "--parallelism.data_parallel_shard_degree", "1"]),
        ("TP(2)", 2, lb8 + tp2 + ["--parallelism.data_parallel_shard_degree", "1"]),
        ("async TP(2)", 2, lb8 + tp2 + ["--parallelism.data_parallel_shard_degree", "1",
                                        "--parallelism.enable_async_tensor_parallel"]),
        ("PP(2)", 2, lb8 + pp),
        ("TP(2) + full AC", 2, lb8 + tp2 + ["--parallelism.data_parallel_shard_degree", "1",
                                            "--activation_checkpoint.mode", "full"]),
        ("FSDP(2) + op-level AC", 2, ["--training.local_batch_size", "4", "--activation_checkpoint.mode", "selective",
                                      "--activation_checkpoint.selective_ac_option", "op"]),
    ]
    for name, world, extra in layouts:
        got = run_layout(checks, titan, f"block-causal {name}", world, BASE + FLEX + extra,
                         os.path.join(tmp, name.replace(" ", "_").replace("(", "").replace(")", "")))
        if got is not None:
            lw, gw = worst_rel(got, one, "loss"), worst_rel(got, one, "grad_norm")
            check(f"block-causal {name}: loss {lw:.1e}, grad norm {gw:.1e} of one process (<= {TOL:g})",
                  len(got) == 10 and lw <= TOL and gw <= TOL)

    # Float8 with the documents: FSDP(2)xTP(2) against one process in float8 (the first step
    # within 1e-6, 10 steps within 1e-3: integration.float8 says why TP drifts in float8).
    f8 = ["--model.converters", "float8", "--training.local_batch_size", "4", "--training.global_batch_size", "8"]
    one_f8 = run_layout(checks, titan, "block-causal float8, one process", 1, BASE + FLEX + f8,
                        os.path.join(tmp, "f8_one"))
    got = run_layout(checks, titan, "block-causal float8 FSDP(2)xTP(2)", 4, BASE + FLEX + f8[:2] + tp2 +
                     ["--training.local_batch_size", "4"], os.path.join(tmp, "f8_fsdp_tp"))
    if one_f8 is not None and got is not None:
        first = max(worst_rel(got[:1], one_f8[:1], k) for k in ("loss", "grad_norm"))
        worst = max(worst_rel(got, one_f8, k) for k in ("loss", "grad_norm"))
        check(f"block-causal float8 FSDP(2)xTP(2): step 1 {first:.1e} (<= 1e-6), 10 steps {worst:.1e} (<= 1e-3) of "
              f"one process in float8", len(got) == 10 and first <= 1e-6 and worst <= 1e-3)

    # Exact resume: killed right after the step-5 save, steps 6-10 bit for bit.
    ck = ["--checkpoint.enable", "--checkpoint.interval", "5"]
    dump = os.path.join(tmp, "resume")
    first = launch_into(titan, 1, BASE + lb8 + FLEX + ck, dump, env={"TITAN_TEST_DIE_AFTER_SAVE": "5"})
    again = launch_into(titan, 1, BASE + lb8 + FLEX + ck, dump)
    resumed = [r for r in step_metrics(dump) if r["step"] > 5]
    check("block-causal killed right after the step-5 save: steps 6-10 bit for bit",
          first[0][0] == -signal.SIGKILL and again[0][0] == 0 and
          [(r["step"], r["loss"], r["grad_norm"]) for r in resumed] ==
          [(r["step"], r["loss"], r["grad_norm"]) for r in one[5:]],
          f"{first[0][0]} {again[0][0]} {[(r['step'], r['loss']) for r in resumed]}")
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
