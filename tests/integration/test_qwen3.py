#!/usr/bin/env python3
"""Qwen3 (dense) trains as Llama 3 does, through the model registry (float32, CPU):

- the debug model's loss and grad norm under FSDP(2), TP(2) and DDP(2) equal one process's over
  10 steps (1e-5 relative), and every parameter's update after the last step is within 1e-4 of
  one process's (L2 per tensor);
- the fused kernels (q/k norms included) and activation checkpointing give one process's losses;
- pipeline parallelism with the tied debug model: PP(2) with 1F1B (the table on both ends, its two
  copies' gradients summed) and with ZBVZeroBubble (both ends on rank 0), and PP(2)xFSDP(2), give
  one process's losses and updates, and the two copies of the table end equal bit for bit;
- every rank of PP(2) killed with SIGKILL at a random moment after the step-5 save: the rerun
  resumes and steps 6-10 equal the uninterrupted run bit for bit; one process killed right after
  the save resumes bit for bit too; PP(2)'s step 5 continues in one process within 1e-5;
- torchtitan's Qwen3 checkpoint (DCP, wq/wk rows and q/k norms in Hugging Face's order) of the
  debug model's shape: convert from-dcp --flavor reorders weights and Adam moments alike, and the
  weights exported with to-hf equal transformers' byte for byte; without --flavor, and loaded by
  training unconverted, it is refused with exit 2 naming the fix.

Usage: python3 tests/integration/test_qwen3.py --titan build/titan
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from launch import scratch_dir  # noqa: E402
from launch import (Checks, kill_at_random_moment, launch_into, read_state, run_layout, step_metrics,  # noqa: E402
                    worst_rel, worst_update_diff)

BASE = ["--job.config_file", "configs/qwen3/debug_model.toml", "--training.seq_len", "64", "--model.n_layers", "3",
        "--training.steps", "10", "--training.mixed_precision_param", "float32", "--debug.seed", "7",
        "--activation_checkpoint.mode", "none", "--metrics.log_freq", "1", "--lr_scheduler.warmup_steps", "2",
        "--compile.enable=false"]
PP = ["--parallelism.pipeline_parallel_degree", "2", "--parallelism.pipeline_parallel_microbatch_size", "2",
      "--parallelism.pipeline_parallel_schedule"]
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
    tmp = scratch_dir("titan_qwen3_")

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
                              "--parallelism.data_parallel_shard_degree", "1"]),
               ("PP(2) 1F1B", 2, PP + ["1F1B", "--training.local_batch_size", "8"]),
               ("PP(2) ZBVZeroBubble", 2, PP + ["ZBVZeroBubble", "--training.local_batch_size", "8"]),
               ("PP(2)xFSDP(2)", 4, PP + ["1F1B", "--training.local_batch_size", "4",
                                          "--parallelism.data_parallel_shard_degree", "2"])]
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
        if name.startswith("PP(2) 1F1B"):  # the last stage's copy of the tied table
            first, last = (read_state(os.path.join(dump, f"final.pp{k}")) for k in (0, 1))
            table = "tok_embeddings.weight"
            check("Qwen3 PP(2) 1F1B: both ends hold the tied table and their copies end equal bit for bit",
                  table in first and table in last and bool((first[table] == last[table]).all()))

    for name, extra in [("fused kernels", ["--compile.enable=true"]),
                        ("full activation checkpointing", ["--activation_checkpoint.mode", "full"])]:
        dump = os.path.join(tmp, name.split()[0])
        got = run_layout(checks, titan, name, 1, BASE + ["--training.local_batch_size", "8"] + extra, dump)
        if got is not None:
            lw = worst_rel(got, ref, "loss")
            check(f"Qwen3 with {name}: one process's losses (rel {lw:.1e} <= {TOL:g})", len(got) == 10 and lw <= TOL)

    # Exact resume after a kill. PP(2) (the tied table on both ends, saved once) saves at steps 5 and
    # 10 straight through; a second run is killed at a random moment after its step-5 save and rerun.
    rng = random.Random(int(os.environ.get("TITAN_TEST_SEED", str(time.time_ns()))))
    pp_ck = BASE + PP + ["1F1B", "--training.local_batch_size", "8"] + CK
    straight = run_layout(checks, titan, "Qwen3 PP(2) with checkpoints", 2, pp_ck, os.path.join(tmp, "pp_straight"))
    if straight is not None:
        dump = os.path.join(tmp, "pp_killed")
        step_time = sorted(r["step_seconds"] for r in straight)[len(straight) // 2]
        codes, logged, moment = kill_at_random_moment(titan, 2, pp_ck, dump, rng, step_time)
        if all(c == -signal.SIGKILL for c in codes) and 5 <= logged < 10:
            outs = launch_into(titan, 2, pp_ck, dump)
            got = [r for r in step_metrics(dump) if r["step"] > 5]
            same = len(got) == 5 and all(g["loss"] == r["loss"] and g["grad_norm"] == r["grad_norm"]
                                         for g, r in zip(got, straight[5:]))
            check(f"Qwen3 PP(2): {moment}; the rerun resumes from step 5 and steps 6-10 equal the uninterrupted "
                  "run bit for bit", all(o[0] == 0 for o in outs) and
                  "Resuming training from step 5" in outs[0][1] + outs[0][2] and same,
                  str([(g["step"], g["loss"]) for g in got]) + outs[0][2][-300:])
        else:
            check("Qwen3 PP(2): every rank killed at a random moment after the step-5 save", False,
                  f"{moment}, exits {codes}")
        # The same step 5, continued in one process: the table saved once loads into the tied model.
        dump = os.path.join(tmp, "pp_to_one")
        got = run_layout(checks, titan, "Qwen3 PP(2) step 5 in one process", 1, BASE + [
            "--training.local_batch_size", "8", "--checkpoint.enable", "--checkpoint.initial_load_path",
            os.path.join(tmp, "pp_straight", "checkpoint", "step-5"), "--no-checkpoint.initial_load_model_only"], dump)
        if got is not None:
            lw = max(abs(g["loss"] - r["loss"]) / r["loss"] for g, r in zip(got, ref[5:]))
            check(f"Qwen3 PP(2)'s step 5 continued in one process: steps 6-10 within {TOL:g} of one process's "
                  f"(rel {lw:.1e})", len(got) == 5 and got[0]["step"] == 6 and lw <= TOL)

    # One process killed right after its step-5 save resumes bit for bit.
    dump = os.path.join(tmp, "resume")
    ck = BASE + ["--training.local_batch_size", "8"] + CK
    first = run_layout(checks, titan, "Qwen3 with checkpoints", 1, ck, os.path.join(tmp, "resume_straight"))
    if first is not None:
        outs = launch_into(titan, 1, ck, dump, env={"TITAN_TEST_DIE_AFTER_SAVE": "5"})
        killed = outs[0][0] == -signal.SIGKILL
        outs = launch_into(titan, 1, ck, dump)
        again = [r for r in step_metrics(dump) if r["step"] > 5]
        same = len(again) == 5 and all(g["loss"] == r["loss"] and g["grad_norm"] == r["grad_norm"]
                                       for g, r in zip(again, first[5:]))
        check("Qwen3 one process killed right after the step-5 save: steps 6-10 bit for bit",
              killed and outs[0][0] == 0 and "Resuming training from step 5" in outs[0][1] + outs[0][2] and same,
              (outs[0][2])[-400:])

    # torchtitan's Qwen3 checkpoint (DCP): its wq/wk rows and q/k norm weights in Hugging Face's
    # order, which convert from-dcp --flavor reorders head by head (weights and Adam moments alike).
    import torch
    import torch.distributed.checkpoint as dcp
    import transformers
    from safetensors.torch import load_file
    torch.manual_seed(3)
    config = transformers.Qwen3Config(hidden_size=256, intermediate_size=3072, num_hidden_layers=8,
                                      num_attention_heads=16, num_key_value_heads=8, head_dim=128, vocab_size=2048,
                                      rms_norm_eps=1e-6, rope_theta=1000000.0, max_position_embeddings=4096,
                                      tie_word_embeddings=True)
    hf_model = transformers.Qwen3ForCausalLM(config)
    with torch.no_grad():
        for name, p in hf_model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    hf = os.path.join(tmp, "tt_qwen3_hf")
    hf_model.save_pretrained(hf, safe_serialization=True)
    ours = {"embed_tokens": "tok_embeddings", "self_attn.q_proj": "attention.wq", "self_attn.k_proj": "attention.wk",
            "self_attn.v_proj": "attention.wv", "self_attn.o_proj": "attention.wo", "self_attn.q_norm": "attention.q_norm",
            "self_attn.k_norm": "attention.k_norm", "mlp.gate_proj": "feed_forward.w1", "mlp.down_proj": "feed_forward.w2",
            "mlp.up_proj": "feed_forward.w3", "input_layernorm": "attention_norm",
            "post_attention_layernorm": "ffn_norm"}
    sd = {}
    for name, t in hf_model.state_dict().items():
        fqn = name.removeprefix("model.").replace("lm_head", "output")
        for a, b in ours.items():
            fqn = fqn.replace(a, b)
        sd[fqn] = t.detach().clone()  # torchtitan's tied model lists output.weight too
    optim = {}
    for fqn, t in sd.items():
        optim[f"state.{fqn}.exp_avg"] = t * 0.5
        optim[f"state.{fqn}.exp_avg_sq"] = t * t
        optim[f"state.{fqn}.step"] = torch.tensor(5.0)
        optim[f"param_groups.{fqn}.lr"] = 8e-4
    state = dict(sd, optimizer=optim, lr_scheduler={"last_epoch": 5, "base_lrs": [8e-4], "_step_count": 6},
                 train_state={"step": 5, "ntokens_seen": 5 * 8 * 64}, dataloader={"dp_rank_0": b"torchtitan's position"})
    tt = os.path.join(tmp, "tt_qwen3", "checkpoint", "step-5")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(state, checkpoint_id=tt)
    conv = os.path.join(tmp, "tt_qwen3_converted", "step-5")
    r = subprocess.run([titan, "convert", "from-dcp", tt, conv, "--model", "qwen3", "--flavor", "debugmodel"],
                       capture_output=True, text=True, timeout=120)
    check("torchtitan's Qwen3 checkpoint converts (convert from-dcp --model qwen3 --flavor debugmodel)",
          r.returncode == 0, r.stderr[-400:])
    if r.returncode == 0:
        back = load_file(os.path.join(conv, "rank-00000.safetensors"))
        moments = [k for k in back if k.endswith(".exp_avg")]
        same = len(moments) == len(sd) - 1 and all(
            torch.equal(back[k], back["model." + k[len("optimizer."):-len(".exp_avg")]] * 0.5) for k in moments)
        check(f"its Adam moments are reordered as its weights ({len(moments)} exp_avg tensors = weight * 0.5)", same)
        out = os.path.join(tmp, "tt_qwen3_back")
        r = subprocess.run([titan, "convert", "to-hf", conv, out], capture_output=True, text=True, timeout=120)
        want = load_file(os.path.join(hf, "model.safetensors"))
        got = load_file(os.path.join(out, "model.safetensors")) if r.returncode == 0 else {}
        check(f"its weights back in Hugging Face's layout equal transformers' byte for byte ({len(want)} tensors)",
              got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want),
              r.stderr[-300:] + str(sorted(set(got) ^ set(want)))[:200])
    r = subprocess.run([titan, "convert", "from-dcp", tt, os.path.join(tmp, "tt_qwen3_noflavor", "step-5"), "--model",
                        "qwen3"], capture_output=True, text=True, timeout=60)
    check("convert from-dcp --model qwen3 without --flavor: exit 2 asking for it",
          r.returncode == 2 and "--flavor" in r.stderr, r.stderr[-300:])
    outs = launch_into(titan, 1, BASE + ["--training.local_batch_size", "8", "--checkpoint.enable",
                                         "--checkpoint.initial_load_path", tt], os.path.join(tmp, "tt_direct"))
    check("training from torchtitan's Qwen3 checkpoint unconverted: exit 2 naming titan convert from-dcp",
          outs[0][0] == 2 and "titan convert from-dcp" in outs[0][2], outs[0][2][-300:])
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
