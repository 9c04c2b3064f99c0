#!/usr/bin/env python3
"""DeepSeek-V3's debug model (two blocks: one dense, one of 8 experts with 2 shared, multi-head
latent attention; float32, CPU, sequence 64) trains as one process does, whatever the layout:

- one process: 10 steps, the loss falls; the start-up log names the model as torchtitan does
  (DeepSeekV3ModelArgs, "Total parameter count: dense N, sparse N, active N") and describes the
  latent attention; the expert bias moves in the MoE block only;
- FSDP(2), EP(2), FSDP(4)xEP(2), CP(2) (the padded values pass around the ring as the keys do), PP(2)
  1F1B (the dense block on one stage, the MoE block on the other), PP(2)xEP(2), TP(2),
  EP(2)xTP(2) (expert_tensor_parallel_degree 2), FSDP(2)xEP(2)xTP(2) with expert_tensor_parallel_degree
  1 (EP borrowing the tp ranks), TP(2) with a query latent (q_lora_rank 32 through a test hook)
  and full activation checkpointing give one process's loss and grad norm over 10 steps (1e-5 relative),
  every parameter's update within 1e-4 and the same expert bias;
- killed right after its step-5 save, the rerun's steps 6-10 equal the straight run bit for bit;
- debugmodel_flex_attn (block-causal attention) trains with fused kernels (YaRN, which starts
  past 4096 positions, is checked by tests/parity/test_deepseek_parity.py);
- titan generate runs the checkpoint, the key/value cache giving the tokens of rerunning the
  prefix;
- the debug model's Hugging Face export is refused with exit 2 (transformers' DeepSeek-V3 routes
  by sigmoid, the debug model by softmax).

Usage: python3 tests/integration/test_deepseek.py --titan build/titan
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from launch import scratch_dir  # noqa: E402
from launch import (Checks, check_moe_layout, launch_into, read_state, run_layout,  # noqa: E402
                    step_metrics)

BASE = ["--job.config_file", "configs/deepseek_v3/debug_model.toml", "--training.seq_len", "64", "--model.n_layers", "2",
        "--training.steps", "10", "--training.mixed_precision_param", "float32", "--debug.seed", "7",
        "--activation_checkpoint.mode", "none", "--metrics.log_freq", "1", "--lr_scheduler.warmup_steps", "2",
        "--compile.enable=false"]
LB4 = ["--training.local_batch_size", "4"]
LB2 = ["--training.local_batch_size", "2"]
CK = ["--checkpoint.enable", "--checkpoint.interval", "5"]
TOL = 1e-5
UPDATE_TOL = 1e-4


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--titan", required=True)
    opts = ap.parse_args()
    titan = os.path.abspath(opts.titan)
    checks = Checks()
    check = checks.check
    tmp = scratch_dir("titan_deepseek_")

    single = os.path.join(tmp, "single")
    env = {"TITAN_TEST_FINAL_STATE": os.path.join(single, "final"), "TITAN_TEST_INITIAL_STATE": os.path.join(single, "initial")}
    outs = launch_into(titan, 1, BASE + LB4 + CK, single, env=env)
    if outs[0][0] != 0:
        check("DeepSeek-V3 one process runs", False, outs[0][2][-800:])
        return checks.summary()
    ref = step_metrics(single)
    log = outs[0][1] + outs[0][2]
    check("DeepSeek-V3 one process: 10 steps, the loss falls", len(ref) == 10 and ref[-1]["loss"] < ref[0]["loss"],
          str([r["loss"] for r in ref]))
    check("the start-up log: torchtitan's DeepSeekV3ModelArgs and its dense/sparse/active count, the latent attention",
          "DeepSeekV3ModelArgs(max_batch_size=8, max_seq_len=64" in log and "n_dense_layers=1" in log
          and "Total parameter count: dense " in log and "multi-head latent attention" in log, log[-1500:])
    initial, final = read_state(os.path.join(single, "initial")), read_state(os.path.join(single, "final"))
    moved = float(final["layers.1.moe.expert_bias"].abs().max()) if final else 0.0
    check(f"the MoE block's expert bias moved (max |bias| {moved:.2e}); the dense block has none",
          moved > 0 and "layers.0.moe.expert_bias" not in final and "layers.0.feed_forward.w1.weight" in final)

    pp = ["--parallelism.pipeline_parallel_degree", "2", "--parallelism.pipeline_parallel_microbatch_size", "2",
          "--parallelism.pipeline_parallel_schedule", "1F1B"]
    layouts = [("FSDP(2)", 2, LB2),
               ("EP(2)", 2, LB2 + ["--parallelism.expert_parallel_degree", "2"]),
               # 4 experts a rank, sharded again by FSDP over the 2 ranks holding them.
               ("FSDP(4)xEP(2)", 4, ["--training.local_batch_size", "1", "--parallelism.expert_parallel_degree", "2"]),
               ("PP(2)xEP(2)", 4, LB2 + ["--parallelism.expert_parallel_degree", "2",
                                         "--parallelism.data_parallel_shard_degree", "2",
                                         "--parallelism.pipeline_parallel_degree", "2",
                                         "--parallelism.pipeline_parallel_microbatch_size", "1",
                                         "--parallelism.pipeline_parallel_schedule", "1F1B"]),
               ("CP(2)", 2, LB4 + ["--parallelism.context_parallel_degree", "2",
                                   "--parallelism.data_parallel_shard_degree", "1"]),
               ("PP(2) 1F1B", 2, LB4 + pp),
               ("full AC", 1, LB4 + ["--activation_checkpoint.mode", "full"]),
               # Tensor parallelism: the latent attention's heads split (wq_a, wkv_a and their
               # norms repeated on each rank), the experts on their hidden dimension.
               ("TP(2)", 2, LB4 + ["--parallelism.tensor_parallel_degree", "2"]),
               ("EP(2)xTP(2)", 4, LB2 + ["--parallelism.tensor_parallel_degree", "2",
                                         "--parallelism.expert_parallel_degree", "2",
                                         "--parallelism.expert_tensor_parallel_degree", "2"]),
               # ETP 1: EP borrows the tp ranks (each routing half the tokens), FSDP over the 2
               # ranks holding the same experts.
               ("FSDP(2)xEP(2)xTP(2) ETP 1", 4, LB2 + ["--parallelism.tensor_parallel_degree", "2",
                                                       "--parallelism.expert_parallel_degree", "2"])]
    for name, world, extra in layouts:
        dump = os.path.join(tmp, name.replace("(", "_").replace(")", "").replace(" ", "_"))
        check_moe_layout(checks, titan, f"DeepSeek-V3 {name}", world, BASE + extra, dump, ref, final, initial, TOL,
                         UPDATE_TOL)

    # A query latent (q_lora_rank 32, through a test hook: torchtitan's small flavors have none): under
    # TP(2) wq_a and q_norm are repeated on each tp rank, wq_b split by heads.
    qlat = {"TITAN_TEST_DEEPSEEK_Q_LORA_RANK": "32"}
    qsingle = os.path.join(tmp, "single_q_latent")
    outs = launch_into(titan, 1, BASE + LB4, qsingle,
                       env={**qlat, "TITAN_TEST_FINAL_STATE": os.path.join(qsingle, "final"),
                            "TITAN_TEST_INITIAL_STATE": os.path.join(qsingle, "initial")})
    qref = step_metrics(qsingle) if outs[0][0] == 0 else []
    check("DeepSeek-V3 with a query latent, one process: the log names q_lora_rank=32, 10 steps",
          len(qref) == 10 and "q_lora_rank=32" in outs[0][1] + outs[0][2], outs[0][2][-600:])
    if len(qref) == 10:
        check_moe_layout(checks, titan, "DeepSeek-V3 with a query latent, TP(2)", 2,
                         BASE + LB4 + ["--parallelism.tensor_parallel_degree", "2"],
                         os.path.join(tmp, "q_latent_TP_2"), qref, read_state(os.path.join(qsingle, "final")),
                         read_state(os.path.join(qsingle, "initial")), TOL, UPDATE_TOL, env=qlat)

    killed = os.path.join(tmp, "killed")
    launch_into(titan, 1, BASE + LB4 + CK, killed, env={"TITAN_TEST_DIE_AFTER_SAVE": "5"})
    outs = launch_into(titan, 1, BASE + LB4 + CK, killed)
    got = [r for r in step_metrics(killed) if r["step"] > 5]
    check("DeepSeek-V3 killed after its step-5 save: the rerun's steps 6-10 equal the straight run bit for bit",
          outs[0][0] == 0 and len(got) == 5 and all(g["loss"] == r["loss"] and g["grad_norm"] == r["grad_norm"]
                                                    for g, r in zip(got, ref[5:])),
          outs[0][2][-400:])

    dump = os.path.join(tmp, "documents")
    got = run_layout(checks, titan, "debugmodel_flex_attn with fused kernels", 1,
                     BASE + LB4 + ["--model.flavor", "debugmodel_flex_attn", "--compile.enable"], dump)
    check("debugmodel_flex_attn with fused kernels: block-causal attention, 10 steps, the loss falls",
          bool(got) and len(got) == 10 and got[-1]["loss"] < got[0]["loss"], str([r["loss"] for r in got or []]))

    step = os.path.join(single, "checkpoint", "step-10")
    runs = []
    for extra in ([], ["--no-kv-cache"]):
        r = subprocess.run([titan, "generate", "--checkpoint", step, "--prompt", "Once upon a time", "--max-new-tokens",
                            "8", "--ignore-eos", *extra], capture_output=True, text=True, errors="replace", timeout=300)
        runs.append(r)
    check("titan generate runs the DeepSeek-V3 checkpoint, the KV cache giving the text of rerunning the prefix",
          all(r.returncode == 0 for r in runs) and runs[0].stdout.startswith("Once upon a time")
          and len(runs[0].stdout) > len("Once upon a time") and runs[0].stdout == runs[1].stdout,
          runs[0].stderr[-400:] + runs[1].stderr[-400:] + repr([r.stdout for r in runs]))

    r = subprocess.run([titan, "convert", "to-hf", step, os.path.join(tmp, "hf")],
                       capture_output=True, text=True, errors="replace", timeout=120)
    check("titan convert to-hf of the softmax-routed debug model: exit 2, naming score_func, nothing written",
          r.returncode == 2 and 'score_func "softmax"' in r.stderr
          and not os.path.exists(os.path.join(tmp, "hf")), r.stderr[-400:])
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
