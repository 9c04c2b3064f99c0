#!/usr/bin/env python3
"""Qwen3's mixture-of-experts debug model trains as one process does, whatever the layout
(float32, CPU, one layer of 64 experts, top 8, sequence 64):

- DDP(2), PP(2) 1F1B, gradient accumulation, full and op-level activation checkpointing give
  one process's loss and grad norm over 10 steps (1e-5 relative), every parameter's update
  within 1e-4 of one process's, and the same expert bias
  (the tokens per expert are summed over the data-parallel ranks before each update, and an
  activation checkpoint's recompute does not count them again);
- metrics.jsonl holds each MoE layer's max/mean tokens per expert, the log its summary, and the
  start-up log torchtitan's "Total parameter count: dense N, sparse N, active N" line;
- one process killed right after its step-5 save resumes bit for bit (the expert bias is in the
  checkpoint), and FSDP(2) continues its step 5 within 1e-5;
- load balancing: over 60 steps of a one-layer model the max/mean load of the last 10 steps is
  lower with the expert-bias update than without it (both printed);
- float8 converts the attention's linear layers and trains;
- expert parallelism: EP(2), EP(4), FSDP(4)xEP(2) (each rank's experts sharded again over the
  2 ranks that hold the same ones), EP(2) over CP(2), HSDP(2x2) with EP(2), PP(2)xEP(2) and EP(2)
  with full AC against one process as above; EP(2) killed after its step-5 save resumes bit for
  bit, and its checkpoint continues in one process, in EP(4) and in FSDP(4)xEP(2), whose own
  checkpoint continues in one process, as EP(2)xTP(2)'s (both ETPs) do; with round-robin routing
  the all-to-all bytes per step equal the formula;
- TP(2) (the experts split on their hidden dimension, the router repeated on each rank),
  EP(2)xTP(2) with expert_tensor_parallel_degree 2 (experts split over tp too) and with 1 (EP
  borrowing the tp ranks: each routes half the tokens to whole experts) against one process as
  above;
- EP borrowing TP(4) with ep 2 and no FSDP, EP degrees not dividing dp_shard x cp or the
  experts, EP on a dense model and DeepEP are refused with exit 2 on every rank, naming the
  setting;
- titan generate runs the trained checkpoint.

Usage: python3 tests/integration/test_moe.py --titan build/titan
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from launch import scratch_dir  # noqa: E402
from launch import (Checks, check_moe_layout, check_refused, launch_into, read_state, run_layout,  # noqa: E402
                    step_metrics, worst_rel)

BASE = ["--job.config_file", "configs/qwen3/debug_model_moe.toml", "--training.seq_len", "64", "--model.n_layers", "1",
        "--training.steps", "10", "--training.mixed_precision_param", "float32", "--debug.seed", "7",
        "--activation_checkpoint.mode", "none", "--metrics.log_freq", "1", "--lr_scheduler.warmup_steps", "2",
        "--compile.enable=false"]
LB4 = ["--training.local_batch_size", "4"]
LB2 = ["--training.local_batch_size", "2"]
EP2 = ["--parallelism.expert_parallel_degree", "2"]
CK = ["--checkpoint.enable", "--checkpoint.interval", "5"]
TP2 = ["--parallelism.tensor_parallel_degree", "2"]
TOL = 1e-5
UPDATE_TOL = 1e-4


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--titan", required=True)
    opts = ap.parse_args()
    titan = os.path.abspath(opts.titan)
    checks = Checks()
    check = checks.check
    tmp = scratch_dir("titan_moe_")

    single = os.path.join(tmp, "single")
    env = {"TITAN_TEST_FINAL_STATE": os.path.join(single, "final"), "TITAN_TEST_INITIAL_STATE": os.path.join(single, "initial")}
    outs = launch_into(titan, 1, BASE + LB4 + CK, single, env=env)
    if outs[0][0] != 0:
        check("Qwen3 MoE one process runs", False, outs[0][2][-800:])
        return checks.summary()
    ref = step_metrics(single)
    log = outs[0][1] + outs[0][2]
    check("Qwen3 MoE one process: 10 steps, the loss falls", len(ref) == 10 and ref[-1]["loss"] < ref[0]["loss"],
          str([r["loss"] for r in ref]))
    check("the start-up log counts as torchtitan: dense, sparse and active parameters",
          "Total parameter count: dense " in log and ", sparse " in log and ", active " in log, log[-1500:])
    loads = [r.get("moe_load", {}) for r in ref]
    check("metrics.jsonl: each step's max/mean tokens per expert of layers.0 (>= 1)",
          all(set(x) == {"layers.0"} and all(v >= 1 for v in x.values()) for x in loads), str(loads[:2]))
    check("the log summarises the load each step", log.count("moe load (max/mean tokens per expert)") == 10, log[-800:])
    initial, final = read_state(os.path.join(single, "initial")), read_state(os.path.join(single, "final"))
    moved = float(final["layers.0.moe.expert_bias"].abs().max()) if final else 0.0
    check(f"the expert bias moved from zero (max |bias| {moved:.2e}), its sum stayed 0",
          moved > 0 and abs(float(final["layers.0.moe.expert_bias"].sum())) < 1e-6)
    check("the experts are stored as torchtitan's (E, H, D) tensors",
          final and tuple(final["layers.0.moe.experts.w1"].shape) == (64, 768, 256)
          and tuple(final["layers.0.moe.router.gate.weight"].shape) == (64, 256), str(sorted(final)[:6]) if final else "")

    pp = ["--parallelism.pipeline_parallel_degree", "2", "--parallelism.pipeline_parallel_microbatch_size", "2",
          "--parallelism.pipeline_parallel_schedule", "1F1B"]
    # FSDP gathering every expert (FSDP(2), CP(2) without EP) is checked by integration.deepseek;
    # here FSDP(4)xEP(2) gathers them over efsdp, and EP(2) over CP(2) splits the sequences.
    layouts = [("DDP(2)", 2, LB2 + ["--parallelism.data_parallel_replicate_degree", "2",
                                    "--parallelism.data_parallel_shard_degree", "1"]),
               ("PP(2) 1F1B", 2, LB4 + pp),
               ("gradient accumulation 2", 1, LB2 + ["--training.global_batch_size", "4"]),
               ("full AC", 1, LB4 + ["--activation_checkpoint.mode", "full"]),
               ("op-level AC", 1, LB4 + ["--activation_checkpoint.mode", "selective",
                                         "--activation_checkpoint.selective_ac_option", "op"]),
               # Expert parallelism: each rank keeps half (a quarter) of every layer's experts.
               ("EP(2)", 2, LB2 + EP2 + CK),  # its checkpoints: below
               ("EP(4)", 4, ["--training.local_batch_size", "1", "--parallelism.expert_parallel_degree", "4"]),
               # Each rank keeps a quarter: its half of the experts, sharded by FSDP over the 2 ranks holding them.
               ("FSDP(4)xEP(2)", 4, ["--training.local_batch_size", "1"] + EP2 + CK),
               ("EP(2) over CP(2)", 2, LB4 + ["--parallelism.context_parallel_degree", "2",
                                              "--parallelism.data_parallel_shard_degree", "1"] + EP2),
               ("HSDP(2x2) with EP(2)", 4, ["--training.local_batch_size", "1",
                                            "--parallelism.data_parallel_replicate_degree", "2",
                                            "--parallelism.data_parallel_shard_degree", "2"] + EP2),
               ("PP(2)xEP(2)", 4, LB2 + EP2 + ["--parallelism.data_parallel_shard_degree", "2",
                                               "--parallelism.pipeline_parallel_degree", "2",
                                               "--parallelism.pipeline_parallel_microbatch_size", "1",
                                               "--parallelism.pipeline_parallel_schedule", "1F1B"]),
               ("EP(2) with full AC", 2, LB2 + EP2 + ["--activation_checkpoint.mode", "full"]),
               # Tensor parallelism: the experts split on their hidden dimension, the router repeated.
               ("TP(2)", 2, LB4 + TP2),
               ("EP(2)xTP(2)", 4, LB2 + EP2 + TP2 + ["--parallelism.expert_tensor_parallel_degree", "2"] + CK),
               # torchtitan's default ETP 1: EP borrows the tp ranks, each routing half the tokens to
               # whole experts (no FSDP: each rank keeps its own).
               ("EP(2)xTP(2) ETP 1", 2, LB4 + EP2 + TP2 + ["--parallelism.data_parallel_shard_degree", "1"] + CK)]
    for name, world, extra in layouts:
        dump = os.path.join(tmp, name.replace("(", "_").replace(")", "").replace(" ", "_"))
        check_moe_layout(checks, titan, f"Qwen3 MoE {name}", world, BASE + extra, dump, ref, final, initial, TOL,
                         UPDATE_TOL)

    # Exact resume: killed right after the step-5 save, rerun into the same folder.
    killed = os.path.join(tmp, "killed")
    first = launch_into(titan, 1, BASE + LB4 + CK, killed, env={"TITAN_TEST_DIE_AFTER_SAVE": "5"})
    meta_path = os.path.join(killed, "checkpoint", "step-5", "metadata.json")
    meta = json.load(open(meta_path)) if os.path.exists(meta_path) else {}
    check("the step-5 checkpoint holds the expert bias",
          "model.layers.0.moe.expert_bias" in meta.get("tensors", {}), str(first[0][2][-300:]))
    outs = launch_into(titan, 1, BASE + LB4 + CK, killed)
    got = [r for r in step_metrics(killed) if r["step"] > 5]
    check("Qwen3 MoE killed after its step-5 save: the rerun's steps 6-10 equal the straight run bit for bit",
          outs[0][0] == 0 and len(got) == 5 and all(g["loss"] == r["loss"] and g["grad_norm"] == r["grad_norm"]
                                                    for g, r in zip(got, ref[5:])),
          outs[0][2][-400:] + str([(g["loss"], r["loss"]) for g, r in zip(got, ref[5:])]))
    moved = os.path.join(tmp, "fsdp_from_5")
    os.makedirs(os.path.join(moved, "checkpoint"))
    shutil.copytree(os.path.join(single, "checkpoint", "step-5"), os.path.join(moved, "checkpoint", "step-5"))
    outs = launch_into(titan, 2, BASE + LB2 + CK, moved)
    got = [r for r in step_metrics(moved) if r["step"] > 5]
    ok = all(o[0] == 0 for o in outs) and len(got) == 5
    lw = worst_rel(got, ref[5:], "loss") if ok else float("inf")
    check(f"FSDP(2) continues one process's step 5 (loss within {lw:.1e} of the straight run, <= {TOL:g})",
          ok and lw <= TOL, outs[0][2][-400:])

    # Expert parallelism's checkpoint: EP(2) killed right after its step-5 save resumes bit for bit;
    # its step 5 continues in one process.
    ep_straight = step_metrics(os.path.join(tmp, "EP_2"))
    if len(ep_straight) == 10:
        killed = os.path.join(tmp, "ep_killed")
        launch_into(titan, 2, BASE + LB2 + EP2 + CK, killed, env={"TITAN_TEST_DIE_AFTER_SAVE": "5"})
        outs = launch_into(titan, 2, BASE + LB2 + EP2 + CK, killed)
        got = [r for r in step_metrics(killed) if r["step"] > 5]
        check("EP(2) killed after its step-5 save: the rerun's steps 6-10 equal the straight run bit for bit",
              all(o[0] == 0 for o in outs) and len(got) == 5
              and all(g["loss"] == r["loss"] and g["grad_norm"] == r["grad_norm"] for g, r in zip(got, ep_straight[5:])),
              outs[0][2][-400:])
        LB1 = ["--training.local_batch_size", "1"]
        for source, name, world, extra in [("EP_2", "one process", 1, LB4),
                                           ("EP_2", "EP(4)", 4, LB1 + ["--parallelism.expert_parallel_degree", "4"]),
                                           ("EP_2", "FSDP(4)xEP(2)", 4, LB1 + EP2),
                                           ("FSDP_4xEP_2", "one process", 1, LB4),
                                           ("EP_2xTP_2", "one process", 1, LB4),
                                           ("EP_2xTP_2_ETP_1", "one process", 1, LB4)]:
            label = {"EP_2": "EP(2)", "FSDP_4xEP_2": "FSDP(4)xEP(2)", "EP_2xTP_2": "EP(2)xTP(2)",
                     "EP_2xTP_2_ETP_1": "EP(2)xTP(2) ETP 1"}[source]
            dump = os.path.join(tmp, source + "_into_" + name.replace(" ", "_").replace("(", "").replace(")", ""))
            os.makedirs(os.path.join(dump, "checkpoint"))
            shutil.copytree(os.path.join(tmp, source, "checkpoint", "step-5"), os.path.join(dump, "checkpoint", "step-5"))
            outs = launch_into(titan, world, BASE + extra + CK, dump)
            got = [r for r in step_metrics(dump) if r["step"] > 5]
            ok = all(o[0] == 0 for o in outs) and len(got) == 5
            lw = worst_rel(got, ref[5:], "loss") if ok else float("inf")
            check(f"{label}'s step-5 checkpoint continues in {name} (loss within {lw:.1e} of one process's, <= {TOL:g})",
                  ok and lw <= TOL, outs[0][2][-400:])

    # All-to-all bytes per step against the formula. Round-robin routing (debug.moe_force_load_balance)
    # sends each of a rank's 2 x 64 tokens to 8 experts, 8 x 128 / 2 = 512 rows to the other rank:
    # dispatch and combine in forward, and both again in backward, 2048 rows of 256 float32 values
    # in the layer; plus the counts, 32 int64.
    dump = os.path.join(tmp, "ep_bytes")
    rows = run_layout(checks, titan, "EP(2) round-robin", 2, BASE + LB2 + EP2 + ["--debug.moe_force_load_balance"], dump)
    if rows:
        per_step = [b["comm_bytes"]["all_to_all"] - a["comm_bytes"]["all_to_all"] for a, b in zip(rows, rows[1:])]
        want = 2048 * 256 * 4 + 32 * 8
        check(f"EP(2): all-to-all bytes per step per rank {per_step[-1]:,.0f} = 2048 rows x 256 x 4 B + "
              f"32 counts x 8 B = {want:,}", all(b == want for b in per_step), str(per_step))
        loads = [r["moe_load"] for r in rows]
        check("debug.moe_force_load_balance: every expert gets the same tokens (max/mean 1.00)",
              all(abs(v - 1.0) < 1e-9 for x in loads for v in x.values()), str(loads[:2]))

    # Load balancing: the bias update against the same run without it (a test hook).
    lb = BASE + LB4 + ["--training.steps", "60", "--metrics.log_freq", "100",
                       "--optimizer.lr", "3e-3"]
    balanced, unbalanced = os.path.join(tmp, "balanced"), os.path.join(tmp, "unbalanced")
    a = run_layout(checks, titan, "load balancing on", 1, lb, balanced)
    b = run_layout(checks, titan, "load balancing off", 1, lb, unbalanced, env={"TITAN_TEST_MOE_NO_LOAD_BALANCE": "1"})
    if a and b:
        on = sum(r["moe_load"]["layers.0"] for r in a[-10:]) / 10
        off = sum(r["moe_load"]["layers.0"] for r in b[-10:]) / 10
        print(f"max/mean tokens per expert over steps 51-60: {on:.3f} with the bias update, {off:.3f} without")
        check(f"load balancing: max/mean load {on:.2f} with the bias update < {off:.2f} without it", on < off)

    check_refused(checks, titan, "EP(2) borrowing TP(4) without FSDP (experts sharded by FSDP over tp ranks alone)", 4,
                  BASE + LB4 + EP2 + ["--parallelism.tensor_parallel_degree", "4"], os.path.join(tmp, "etp1"),
                  "parallelism.expert_parallel_degree = 2 borrowing tensor_parallel_degree = 4 without FSDP")
    check_refused(checks, titan, "EP(3) on 4 FSDP ranks", 4,
                  BASE + ["--training.local_batch_size", "1", "--parallelism.expert_parallel_degree", "3"],
                  os.path.join(tmp, "ep_fsdp"), "parallelism.expert_parallel_degree = 3 does not divide dp_shard x cp")
    check_refused(checks, titan, "EP(3), which does not divide 64 experts", 3,
                  BASE + ["--training.local_batch_size", "1", "--parallelism.expert_parallel_degree", "3"],
                  os.path.join(tmp, "ep3"), "does not divide the 64 experts")
    check_refused(checks, titan, "EP(2) on the dense debug model", 2,
                  BASE[:2] + ["--model.flavor", "debugmodel"] + BASE[2:] + LB2 + EP2, os.path.join(tmp, "ep_dense"),
                  "which has no mixture-of-experts layers")
    check_refused(checks, titan, "DeepEP's all-to-all", 2,
                  BASE + LB2 + EP2 + ["--parallelism.expert_parallel_comm_backend", "deepep"],
                  os.path.join(tmp, "deepep"), "expert_parallel_comm_backend")

    # Float8: the attention's 4 linear layers per block; the experts stay in high precision.
    dump = os.path.join(tmp, "float8")
    outs = launch_into(titan, 1, BASE + LB4 + ["--model.converters", "float8", "--training.steps", "3"], dump)
    got = step_metrics(dump)
    check("Qwen3 MoE with float8: 4 linear layers converted (wq wk wv wo), 3 finite steps",
          outs[0][0] == 0 and "4 linear layers converted" in outs[0][1] + outs[0][2] and len(got) == 3
          and all(r["loss"] == r["loss"] for r in got), (outs[0][1] + outs[0][2])[-600:])

    step = os.path.join(single, "checkpoint", "step-10")
    r = subprocess.run([titan, "generate", "--checkpoint", step, "--prompt", "Once upon a time", "--max-new-tokens",
                        "8"], capture_output=True, text=True, errors="replace", timeout=300)
    check("titan generate runs the trained MoE checkpoint (exit 0, text after the prompt)",
          r.returncode == 0 and r.stdout.startswith("Once upon a time") and len(r.stdout) > len("Once upon a time"),
          r.stderr[-400:])
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
