#!/usr/bin/env python3
"""Qwen3 (dense) trains as Llama 3 does, through the model registry (float32, CPU):

- the debug model's loss and grad norm under FSDP(2), TP(2) and DDP(2) equal one process's over
  10 steps (1e-5 relative), and every parameter's update after the last step is within 1e-4 of
  one process's (L2 per tensor);
- the fused kernels (q/k norms included) and activation checkpointing give one process's losses;
- a run stopped after the step-5 save resumes bit for bit;
- pipeline parallelism with the tied debug model is refused with exit 2 on every rank;
- torchtitan's Qwen3 checkpoints (wq/wk rows in another order) are refused by convert from-dcp.

Usage: python3 tests/integration/test_qwen3.py --titan build/titan
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from launch import (Checks, check_refused, launch_into, read_state, run_layout, step_metrics,  # noqa: E402
                    worst_rel, worst_update_diff)

BASE = ["--job.config_file", "configs/qwen3/debug_model.toml", "--training.seq_len", "64", "--model.n_layers", "3",
        "--training.steps", "10", "--training.mixed_precision_param", "float32", "--debug.seed", "7",
        "--activation_checkpoint.mode", "none", "--metrics.log_freq", "1", "--lr_scheduler.warmup_steps", "2",
        "--compile.enable=false"]
TOL = 1e-5
UPDATE_TOL = 1e-4


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--titan", required=True)
    opts = ap.parse_args()
    titan = os.path.abspath(opts.titan)
    checks = Checks()
    check = checks.check
    tmp = tempfile.mkdtemp(prefix="titan_qwen3_")

    single = os.path.join(tmp, "single")
    env = {"TITAN_TEST_FINAL_STATE": os.path.join(single, "final"), "TITAN_TEST_INITIAL_STATE": os.path.join(single, "initial")}
    ref = run_layout(checks, titan, "Qwen3 one process", 1, BASE + ["--training.local_batch_size", "8"], single, env=env)
    if ref is None:
        return checks.summary()
    check("Qwen3 one process: 10 steps, the loss falls", len(ref) == 10 and ref[-1]["loss"] < ref[0]["loss"],
          str([r["loss"] for r in ref]))
    initial, final = read_state(os.path.join(single, "initial")), read_state(os.path.join(single, "final"))
    check("the model holds q_norm and k_norm in every block", all(
        f"layers.{i}.attention.{n}.weight" in final for i in range(3) for n in ("q_norm", "k_norm")), str(sorted(final)[:8]))

    layouts = [("FSDP(2)", 2, ["--training.local_batch_size", "4"]),
               ("TP(2)", 2, ["--training.local_batch_size", "8", "--parallelism.tensor_parallel_degree", "2",
                             "--parallelism.data_parallel_shard_degree", "1"]),
               ("DDP(2)", 2, ["--training.local_batch_size", "4", "--parallelism.data_parallel_replicate_degree", "2",
                              "--parallelism.data_parallel_shard_degree", "1"])]
    for name, world, extra in layouts:
        dump = os.path.join(tmp, name.replace("(", "_").replace(")", ""))
        got = run_layout(checks, titan, name, world, BASE + extra, dump,
                         env={"TITAN_TEST_FINAL_STATE": os.path.join(dump, "final")})
        if got is None:
            continue
        lw, gw = worst_rel(got, ref, "loss"), worst_rel(got, ref, "grad_norm")
        check(f"Qwen3 {name}: loss {lw:.1e} and grad norm {gw:.1e} of one process's (<= {TOL:g})",
              len(got) == 10 and lw <= TOL and gw <= TOL)
        worst, where = worst_update_diff(read_state(os.path.join(dump, "final")), final, initial)
        check(f"Qwen3 {name}: every parameter's update within {UPDATE_TOL:g} of one process's (worst {worst:.1e} {where})",
              worst <= UPDATE_TOL)

    for name, extra in [("fused kernels", ["--compile.enable=true"]),
                        ("full activation checkpointing", ["--activation_checkpoint.mode", "full"])]:
        dump = os.path.join(tmp, name.split()[0])
        got = run_layout(checks, titan, name, 1, BASE + ["--training.local_batch_size", "8"] + extra, dump)
        if got is not None:
            lw = worst_rel(got, ref, "loss")
            check(f"Qwen3 with {name}: one process's losses (rel {lw:.1e} <= {TOL:g})", len(got) == 10 and lw <= TOL)

    # Exact resume: the run saves at steps 5 and 10; without step-10 the same command resumes at 6.
    dump = os.path.join(tmp, "resume")
    ck = BASE + ["--training.local_batch_size", "8", "--checkpoint.enable", "--checkpoint.interval", "5"]
    first = run_layout(checks, titan, "Qwen3 with checkpoints", 1, ck, dump)
    if first is not None:
        shutil.rmtree(os.path.join(dump, "checkpoint", "step-10"))
        outs = launch_into(titan, 1, ck, dump)
        rows = step_metrics(dump)
        again = {r["step"]: r for r in rows}
        same = all(again[s]["loss"] == r["loss"] and again[s]["grad_norm"] == r["grad_norm"]
                   for s, r in ((r["step"], r) for r in first if r["step"] > 5))
        check("Qwen3 resumed from step 5: steps 6-10 bit for bit",
              outs[0][0] == 0 and "Resuming training from step 5" in outs[0][1] + outs[0][2] and same,
              (outs[0][2])[-400:])

    check_refused(checks, titan, "Qwen3 debug model (tied embeddings) with pipeline parallelism", 2,
                  BASE + ["--parallelism.pipeline_parallel_degree", "2", "--parallelism.pipeline_parallel_schedule",
                          "1F1B", "--training.local_batch_size", "8"], os.path.join(tmp, "pp"), "tied embeddings")
    r = subprocess.run([titan, "convert", "from-dcp", tmp, os.path.join(tmp, "from_dcp", "step-1"), "--model", "qwen3"],
                       capture_output=True, text=True, timeout=60)
    check("convert from-dcp --model qwen3: exit 2, not built yet", r.returncode == 2 and "not built yet" in r.stderr,
          r.stderr[-300:])
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
