#!/usr/bin/env python3
"""Float8 training (model.converters = ["float8"]) on CPU processes, where the float8 GEMMs are
emulated in float32 with torchao's numbers (parity.float8 checks the layer against torchao):

- each recipe (tensorwise, rowwise, rowwise_with_gw_hp) trains the debug model 10 steps, the loss
  falling and within 2% of the high-precision run at every step, and under bf16 autocast (5
  steps) within 2% of bf16's, and over 200 steps (tensorwise, bf16 autocast) ends within 1% of
  bf16's loss (the mean of the last 10 steps; every step within 2%); the log lists the converted
  layers and those kept in high precision, and why;
- FSDP(2), DDP(2) and PP(2) in float8 give the float8 losses and grad norms (1e-5) of one process
  whose forwards see the same rows (gradient accumulation): activation and gradient scales come
  from each forward's own tensors;
- FSDP(2) with the float8 all-gather (enable_fsdp_float8_all_gather), with and without
  precomputed scales and with full activation checkpointing, gives them too (1e-5); PP(2)xFSDP(2)
  gives the same numbers with and without it, bit for bit; it moves exactly half the bytes of the
  bf16 all-gather for the float8 layers' weights (read from the communication statistics), and a
  run killed after a save resumes bit for bit;
- TP(2) tensorwise gathers the sequence in float8 before wq wk wv and w1 w3 (as torchao's float8
  TP styles): the numbers of a float32 gather bit for bit, 3 bytes less per element;
- TP(2) in each recipe, and FSDP(2)xTP(2) with the float8 all-gather, give one process's first
  step (1e-6: every scale is the whole tensor's; a tensorwise scale from a rank's share alone is
  off by about 2e-5) and stay within 1e-3 over 10 steps (a sum in another order moves a value
  across a float8 rounding boundary now and then, and the runs drift apart); async TP gives
  blocking TP's numbers bit for bit with each recipe, and on FSDP(2)xTP(2) with the float8
  all-gather (405B's combination);
- a float8 run killed right after its step-5 save resumes bit for bit, and its checkpoint
  continues in a run without float8;
- MX (quantize.linear.mx) with each recipe (mxfp8_cublas, mxfp8_cublas_rceil) trains 10 steps
  within 2% of high precision, and FSDP(2) gives one process's numbers (1e-5);
- MX on TP(2) with each recipe gives one process's first step (1e-6) and stays within 1e-3 over
  10 steps;
- what is not built yet or wrong (MX with async TP, MX with float8, an unknown converter or recipe, a
  sequence not in blocks of 32 under MX, auto_filter_small_kn with rowwise_with_gw_hp, the float8
  all-gather with a rowwise recipe, precomputed scales without the all-gather) exits 2 on every rank.

Usage: python3 tests/integration/test_float8.py --titan build/titan
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from launch import scratch_dir  # noqa: E402
from launch import Checks, check_refused, launch_into, run_layout, step_metrics, worst_rel  # noqa: E402

BASE = ["--job.config_file", "configs/llama3/debug_model.toml", "--training.seq_len", "64", "--model.n_layers", "3",
        "--training.steps", "10", "--training.mixed_precision_param", "float32", "--debug.seed", "7",
        "--activation_checkpoint.mode", "none", "--metrics.log_freq", "1", "--lr_scheduler.warmup_steps", "2",
        "--compile.enable=false"]
F8 = ["--model.converters", "float8"]
AG = ["--quantize.linear.float8.enable_fsdp_float8_all_gather"]
PRE = ["--quantize.linear.float8.precompute_float8_dynamic_scale_for_fsdp"]
TP2 = ["--parallelism.tensor_parallel_degree", "2"]
TOL = 1e-5
FIRST, DRIFT = 1e-6, 1e-3  # tensor parallelism: the first step, and 10 steps (see above)


def first_and_worst(got: list[dict], ref: list[dict]) -> tuple[float, float]:
    first = max(worst_rel(got[:1], ref[:1], k) for k in ("loss", "grad_norm"))
    return first, max(worst_rel(got, ref, k) for k in ("loss", "grad_norm"))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--titan", required=True)
    opts = ap.parse_args()
    titan = os.path.abspath(opts.titan)
    checks = Checks()
    check = checks.check
    tmp = scratch_dir("titan_float8_")
    lb8 = ["--training.local_batch_size", "8"]

    high = run_layout(checks, titan, "high precision", 1, BASE + lb8, os.path.join(tmp, "high"))
    if high is None:
        return checks.summary()
    one_process = {}  # float8 recipe -> its 10 steps on one process
    MX = ["--model.converters", "quantize.linear.mx"]
    for kind, recipe, extra in ([("Float8", r, F8 + ["--quantize.linear.float8.recipe_name", r])
                                 for r in ["tensorwise", "rowwise", "rowwise_with_gw_hp"]] +
                                [("MX", r, MX + ["--quantize.linear.mx.recipe_name", r])
                                 for r in ["mxfp8_cublas", "mxfp8_cublas_rceil"]]):
        dump = os.path.join(tmp, recipe)
        outs = launch_into(titan, 1, BASE + lb8 + extra, dump)
        if outs[0][0] != 0:
            check(f"{kind} {recipe} runs", False, outs[0][2][-500:])
            continue
        rows = step_metrics(dump)
        one_process[recipe] = rows
        log = outs[0][1] + outs[0][2]
        gap = worst_rel(rows, high, "loss")
        check(f"{kind} {recipe}: 10 steps, the loss falls and stays within 2% of high precision's (worst {gap:.2%})",
              len(rows) == 10 and rows[-1]["loss"] < rows[0]["loss"] and gap < 0.02,
              str([(r["loss"], h["loss"]) for r, h in zip(rows, high)]))
        check(f"{kind} {recipe}: the log names the recipe, the 21 converted layers and the head kept",
              f"{kind} training active with recipe {recipe} (" in log and "21 linear layers converted" in log and
              "kept in high precision (filter_fqns has \"output\"): output" in log,
              "\n".join(line for line in log.splitlines() if kind in line))

    # bf16 autocast on one process: the inputs in bf16, the weights cast to float8 from float32.
    # 5 steps of 2 rows: a CPU without native bf16 emulates it (slowly).
    amp = ["--training.mixed_precision_param", "bfloat16", "--training.cpu_bf16", "always", "--training.steps", "5"]
    lb2 = ["--training.local_batch_size", "2"]
    bf16 = run_layout(checks, titan, "bf16 autocast", 1, BASE + lb2 + amp, os.path.join(tmp, "amp"))
    f8amp = run_layout(checks, titan, "float8 under bf16 autocast", 1, BASE + lb2 + amp + F8, os.path.join(tmp, "amp_f8"))
    if bf16 is not None and f8amp is not None:
        gap = worst_rel(f8amp, bf16, "loss")
        check(f"float8 under bf16 autocast: 5 steps within 2% of bf16's losses (worst {gap:.2%})",
              len(f8amp) == 5 and f8amp[-1]["loss"] < f8amp[0]["loss"] and gap < 0.02)

    # 200 steps of float8 (tensorwise) against bf16, both under bf16 autocast (2 layers, 2 rows: a
    # CPU without native bf16 emulates it): the loss falls the same way, within a band.
    long = ["--training.steps", "200", "--model.n_layers", "2", "--training.local_batch_size", "2",
            "--lr_scheduler.warmup_steps", "20"]
    bf16 = run_layout(checks, titan, "bf16, 200 steps", 1, BASE + amp + long, os.path.join(tmp, "long_bf16"))
    f8long = run_layout(checks, titan, "float8, 200 steps", 1, BASE + amp + long + F8, os.path.join(tmp, "long_f8"))
    if bf16 is not None and f8long is not None:
        tail = [sum(r["loss"] for r in rows[-10:]) / 10 for rows in (bf16, f8long)]
        gap, worst = abs(tail[1] - tail[0]) / tail[0], worst_rel(f8long, bf16, "loss")
        check(f"float8 against bf16 over 200 steps: the loss falls from {bf16[0]['loss']:.2f} to {tail[0]:.3f} (bf16) "
              f"and {tail[1]:.3f} (float8, means of the last 10 steps), {gap:.2%} apart (<= 1%); every step within "
              f"2% (worst {worst:.2%})",
              len(bf16) == 200 and len(f8long) == 200 and tail[0] < 0.4 * bf16[0]["loss"] and gap <= 0.01
              and worst <= 0.02)

    outs = launch_into(titan, 1, BASE + lb8 + F8 + ["--quantize.linear.float8.filter_fqns", "output,auto_filter_small_kn",
                                                     "--training.steps", "1"], os.path.join(tmp, "small"))
    log = outs[0][1] + outs[0][2]
    check("auto_filter_small_kn keeps the debug model's small layers in high precision, saying why",
          outs[0][0] == 0 and "0 linear layers converted" in log and "auto_filter_small_kn: K 256, N 256" in log,
          "\n".join(line for line in log.splitlines() if "loat8" in line))

    # Layouts against one process that runs the same forward batches: the scales of activations
    # and gradients come from each forward's own tensors (as in torchao), so one process with
    # gradient accumulation over the same rows is the reference.
    pp = ["--parallelism.pipeline_parallel_degree", "2", "--parallelism.pipeline_parallel_schedule", "1F1B",
          "--parallelism.pipeline_parallel_microbatch_size", "2"]
    acc = ["--training.global_batch_size", "8"]
    for rows, layouts in [(4, [("FSDP(2)", 2, ["--training.local_batch_size", "4"]),
                               ("DDP(2)", 2, ["--training.local_batch_size", "4",
                                              "--parallelism.data_parallel_replicate_degree", "2",
                                              "--parallelism.data_parallel_shard_degree", "1"])]),
                          (2, [("PP(2)", 2, lb8 + pp)])]:
        one = run_layout(checks, titan, f"float8 one process, {rows} rows per forward", 1,
                         BASE + F8 + acc + ["--training.local_batch_size", str(rows)], os.path.join(tmp, f"one_{rows}"))
        if one is None:
            continue
        for name, world, extra in layouts:
            got = run_layout(checks, titan, f"float8 {name}", world, BASE + F8 + extra, os.path.join(tmp, name))
            if got is not None:
                lw, gw = worst_rel(got, one, "loss"), worst_rel(got, one, "grad_norm")
                check(f"float8 {name}: loss {lw:.1e} and grad norm {gw:.1e} of one process's float8 with {rows} rows "
                      f"per forward (<= {TOL:g})", len(got) == 10 and lw <= TOL and gw <= TOL)

    # Tensor parallelism: the amaxes of split operands are reduced over tp.
    tp_only = TP2 + ["--parallelism.data_parallel_shard_degree", "1"]
    # MX needs no reduction: every block of 32 along a contraction lies in one rank's share.
    for recipe, one in one_process.items():
        mx = recipe.startswith("mxfp8")
        conv = MX + ["--quantize.linear.mx.recipe_name", recipe] if mx else F8 + ["--quantize.linear.float8.recipe_name", recipe]
        kind = "MX" if mx else "float8"
        got = run_layout(checks, titan, f"{kind} {recipe} TP(2)", 2, BASE + lb8 + conv + tp_only,
                         os.path.join(tmp, f"tp_{recipe}"))
        if got is not None:
            first, worst = first_and_worst(got, one)
            check(f"{kind} {recipe} TP(2): step 1 {first:.1e} of one process (<= {FIRST:g}), 10 steps {worst:.1e} "
                  f"(<= {DRIFT:g})", len(got) == 10 and first <= FIRST and worst <= DRIFT)
        if got is not None and not mx:  # async TP, forward and backward pipelined, with the recipe's scales
            both = run_layout(checks, titan, f"float8 {recipe} TP(2), async TP", 2,
                              BASE + lb8 + F8 + tp_only + ["--quantize.linear.float8.recipe_name", recipe,
                                                           "--parallelism.enable_async_tensor_parallel"],
                              os.path.join(tmp, f"tp_async_{recipe}"))
            if both is not None:
                check(f"float8 {recipe} TP(2) with async TP: the losses and grad norms of blocking TP, bit for bit",
                      [(r["loss"], r["grad_norm"]) for r in both] == [(r["loss"], r["grad_norm"]) for r in got])
        if got is not None and recipe == "tensorwise":
            # The sequence-parallel all-gather before wq wk wv and w1 w3 moves e4m3 activations:
            # against the same run gathering float32 (a test hook), the same bits and, per step,
            # 3 bytes less per element: 3 blocks x 2 modules x (W-1)/W of 8x64x256.
            hp = run_layout(checks, titan, "float8 tensorwise TP(2), float32 all-gather", 2,
                            BASE + lb8 + F8 + tp_only, os.path.join(tmp, "tp_hp_gather"),
                            env={"TITAN_TEST_TP_GATHER_HP": "1"})
            if hp is not None:
                per_step = [[b["comm_bytes"]["all_gather"] - a["comm_bytes"]["all_gather"] for a, b in zip(r, r[1:])]
                            for r in (hp, got)]
                less = 3 * 2 * (8 * 64 * 256 // 2) * 3
                check(f"float8 tensorwise TP(2): the sequence all-gather in float8 gives the float32 gather's losses and "
                      f"grad norms bit for bit, with {less} bytes less per step ({per_step[1][0]} against "
                      f"{per_step[0][0]})",
                      [(r["loss"], r["grad_norm"]) for r in got] == [(r["loss"], r["grad_norm"]) for r in hp]
                      and len(per_step[0]) == 9 and all(a - b == less for a, b in zip(*per_step)))

    # The float8 all-gather: the same float8 weights as one process, gathered as float8 bytes.
    one4 = step_metrics(os.path.join(tmp, "one_4"))
    lb4 = ["--training.local_batch_size", "4"]
    for name, extra in [("FSDP(2) float8 all-gather", AG), ("FSDP(2) float8 all-gather, precomputed scales", AG + PRE)]:
        dump = os.path.join(tmp, name.replace(" ", "_").replace(",", ""))
        got = run_layout(checks, titan, name, 2, BASE + F8 + lb4 + extra, dump)
        if got is not None and one4:
            lw, gw = worst_rel(got, one4, "loss"), worst_rel(got, one4, "grad_norm")
            check(f"{name}: loss {lw:.1e} and grad norm {gw:.1e} of one process's float8 with 4 rows per forward "
                  f"(<= {TOL:g})", len(got) == 10 and lw <= TOL and gw <= TOL)
    got = run_layout(checks, titan, "FSDP(2) float8 all-gather, full AC", 2,
                     BASE + F8 + lb4 + AG + ["--activation_checkpoint.mode", "full"], os.path.join(tmp, "ag_ac"))
    if got is not None and one4:
        lw, gw = worst_rel(got, one4, "loss"), worst_rel(got, one4, "grad_norm")
        check(f"FSDP(2) float8 all-gather with full activation checkpointing: loss {lw:.1e} and grad norm {gw:.1e} of "
              f"one process (<= {TOL:g})", len(got) == 10 and lw <= TOL and gw <= TOL)
    # PP(2)xFSDP(2): with and without the float8 all-gather, the same numbers bit for bit.
    ppf = ["--parallelism.pipeline_parallel_degree", "2", "--parallelism.pipeline_parallel_schedule", "1F1B",
           "--parallelism.pipeline_parallel_microbatch_size", "2"] + lb4
    plain = run_layout(checks, titan, "PP(2)xFSDP(2) float8", 4, BASE + F8 + ppf, os.path.join(tmp, "ppf"))
    got = run_layout(checks, titan, "PP(2)xFSDP(2) float8 all-gather", 4, BASE + F8 + ppf + AG + PRE,
                     os.path.join(tmp, "ppf_ag"))
    if plain is not None and got is not None:
        check("PP(2)xFSDP(2) with the float8 all-gather: losses and grad norms bit for bit those without it",
              len(got) == 10 and all(a["loss"] == b["loss"] and a["grad_norm"] == b["grad_norm"]
                                     for a, b in zip(got, plain)))
    got = run_layout(checks, titan, "FSDP(2)xTP(2) float8 all-gather", 4, BASE + F8 + lb4 + AG + PRE + TP2,
                     os.path.join(tmp, "fsdp_tp_ag"))
    if got is not None and one4:
        first, worst = first_and_worst(got, one4)
        check(f"float8 FSDP(2)xTP(2) with the float8 all-gather: step 1 {first:.1e} of one process (<= {FIRST:g}), "
              f"10 steps {worst:.1e} (<= {DRIFT:g})", len(got) == 10 and first <= FIRST and worst <= DRIFT)
    # Llama 3 405B's combination: float8 tensorwise, TP, the float8 all-gather with precomputed
    # scales, and async TP, which pipelines the float8 GEMMs with the sequence's blocks.
    if got is not None:
        both = run_layout(checks, titan, "FSDP(2)xTP(2) float8 all-gather, async TP", 4,
                          BASE + F8 + lb4 + AG + PRE + TP2 + ["--parallelism.enable_async_tensor_parallel"],
                          os.path.join(tmp, "fsdp_tp_ag_async"))
        if both is not None:
            check("float8 FSDP(2)xTP(2) with the float8 all-gather and async TP: the losses and grad norms of blocking TP, "
                  "bit for bit", [(r["loss"], r["grad_norm"]) for r in both] == [(r["loss"], r["grad_norm"]) for r in got])
    # Bytes: the 21 float8 weights (3 blocks of 4*256*256 + 3*256*768 elements) go from the
    # gather dtype's bytes to 1, gathered twice a step (forward, and again for backward), (W-1)/W of
    # the whole. The gather dtype is bf16, or float32 on a CPU without native bf16, where
    # mixed_precision_param = "bfloat16" computes in float32 (the FSDP line says which).
    amp2 = ["--training.mixed_precision_param", "bfloat16", "--training.steps", "3"] + lb4 + F8
    bf16_dump = os.path.join(tmp, "ag_bf16")
    bf16_outs = launch_into(titan, 2, BASE + amp2, bf16_dump)
    bf16 = step_metrics(bf16_dump) if all(o[0] == 0 for o in bf16_outs) else None
    if bf16 is None:
        check("FSDP(2) float8, bf16 all-gather runs", False, bf16_outs[0][2][-600:])
    f8ag = run_layout(checks, titan, "FSDP(2) float8 all-gather in bf16", 2, BASE + amp2 + AG, os.path.join(tmp, "ag_f8"))
    if bf16 is not None and f8ag is not None:
        per_step = [[b["comm_bytes"]["all_gather"] - a["comm_bytes"]["all_gather"] for a, b in zip(r, r[1:])]
                    for r in (bf16, f8ag)]
        weights = 3 * (4 * 256 * 256 + 3 * 256 * 768)
        log = bf16_outs[0][1] + bf16_outs[0][2]
        size = 2 if "FSDP to the model (parameters in bfloat16" in log else 4 if "parameters in float32" in log else 0
        gathered = size * weights * 2 // 2  # two gathers, (W-1)/W = 1/2
        want = (size - 1) * weights * 2 // 2
        saved = [b - f for b, f in zip(*per_step)]
        check(f"float8 all-gather: the float8 weights' bytes per step are 1/{size or '?'} of the "
              f"{'bf16' if size == 2 else 'float32'} gather's ({per_step[1]} against {per_step[0]}: {want} bytes less, "
              f"of {gathered})", size > 0 and len(saved) == 2 and all(x == want for x in saved))
        gap = worst_rel(f8ag, bf16, "loss")
        check(f"float8 all-gather in bf16: 3 steps within 1% of the bf16 all-gather's losses (worst {gap:.2%})",
              len(f8ag) == 3 and gap < 0.01)

    # MX: FSDP(2) against one process with the same rows.
    one_mx = run_layout(checks, titan, "MX one process, 4 rows per forward", 1, BASE + MX + acc + lb4,
                        os.path.join(tmp, "mx_one"))
    got = run_layout(checks, titan, "MX FSDP(2)", 2, BASE + MX + lb4, os.path.join(tmp, "mx_fsdp"))
    if one_mx is not None and got is not None:
        lw, gw = worst_rel(got, one_mx, "loss"), worst_rel(got, one_mx, "grad_norm")
        check(f"MX FSDP(2): loss {lw:.1e} and grad norm {gw:.1e} of one process with 4 rows per forward (<= {TOL:g})",
              len(got) == 10 and lw <= TOL and gw <= TOL)

    # Exact resume: killed right after the step-5 save, rerun; the checkpoint continues without float8.
    ck = BASE + lb8 + F8 + ["--checkpoint.enable", "--checkpoint.interval", "5"]
    straight = run_layout(checks, titan, "float8 with checkpoints", 1, ck, os.path.join(tmp, "ck_straight"))
    if straight is not None:
        dump = os.path.join(tmp, "ck_killed")
        outs = launch_into(titan, 1, ck, dump, env={"TITAN_TEST_DIE_AFTER_SAVE": "5"})
        killed = outs[0][0] == -signal.SIGKILL
        outs = launch_into(titan, 1, ck, dump)
        again = [r for r in step_metrics(dump) if r["step"] > 5]
        same = len(again) == 5 and all(a["loss"] == s["loss"] and a["grad_norm"] == s["grad_norm"]
                                       for a, s in zip(again, straight[5:]))
        check("float8 killed right after the step-5 save: steps 6-10 bit for bit", killed and outs[0][0] == 0 and
              "Resuming training from step 5" in outs[0][1] + outs[0][2] and same, outs[0][2][-400:])
        # FSDP(2) with the float8 all-gather and precomputed scales: the scales of the resumed run
        # come from the loaded weights.
        ck2 = BASE + lb4 + F8 + AG + PRE + ["--checkpoint.enable", "--checkpoint.interval", "5"]
        straight2 = run_layout(checks, titan, "FSDP(2) float8 all-gather with checkpoints", 2, ck2,
                               os.path.join(tmp, "ck2_straight"))
        if straight2 is not None:
            dump = os.path.join(tmp, "ck2_killed")
            outs = launch_into(titan, 2, ck2, dump, env={"TITAN_TEST_DIE_AFTER_SAVE": "5"})
            killed = all(o[0] == -signal.SIGKILL for o in outs)
            outs = launch_into(titan, 2, ck2, dump)
            again = [r for r in step_metrics(dump) if r["step"] > 5]
            same = len(again) == 5 and all(a["loss"] == s["loss"] and a["grad_norm"] == s["grad_norm"]
                                           for a, s in zip(again, straight2[5:]))
            check("FSDP(2) float8 all-gather killed right after the step-5 save: steps 6-10 bit for bit",
                  killed and all(o[0] == 0 for o in outs) and same, outs[0][2][-400:])
        got = run_layout(checks, titan, "float8 checkpoint without float8", 1, BASE + lb8 + [
            "--checkpoint.enable", "--checkpoint.initial_load_path",
            os.path.join(tmp, "ck_straight", "checkpoint", "step-5"), "--no-checkpoint.initial_load_model_only"],
            os.path.join(tmp, "to_high"))
        if got is not None:
            check("a float8 checkpoint continues in a high-precision run (steps 6-10, finite losses)",
                  [r["step"] for r in got] == list(range(6, 11)) and all(r["loss"] == r["loss"] for r in got))

    bad = os.path.join(tmp, "bad")
    for label, world, extra, needle in [
        ("the float8 all-gather with the rowwise recipe", 2, lb4 + F8 + AG +
         ["--quantize.linear.float8.recipe_name", "rowwise"], "only the tensorwise recipe"),
        ("precomputed scales without the float8 all-gather", 2, lb4 + F8 + PRE, "without enable_fsdp_float8_all_gather"),
        ("MX with async TP", 2, lb8 + ["--model.converters", "quantize.linear.mx"] + TP2 +
         ["--parallelism.data_parallel_shard_degree", "1", "--parallelism.enable_async_tensor_parallel"],
         "enable_async_tensor_parallel is not supported yet"),
        ("MX and float8 together", 1, lb8 + ["--model.converters", "float8,quantize.linear.mx"], "both float8 and MX"),
        ("an unknown MX recipe", 1, lb8 + ["--model.converters", "quantize.linear.mx", "--quantize.linear.mx.recipe_name",
                                           "mxfp4"], "mxfp4"),
        ("MX with a sequence not in blocks of 32", 1, lb8 + ["--model.converters", "quantize.linear.mx",
                                                              "--training.seq_len", "48"], "blocks of 32"),
        ("an unknown converter", 1, lb8 + ["--model.converters", "float4"], "\"float4\""),
        ("an unknown recipe", 1, lb8 + F8 + ["--quantize.linear.float8.recipe_name", "columnwise"], "columnwise"),
        ("auto_filter_small_kn with rowwise_with_gw_hp", 1, lb8 + F8 + [
            "--quantize.linear.float8.recipe_name", "rowwise_with_gw_hp", "--quantize.linear.float8.filter_fqns",
            "auto_filter_small_kn"], "auto_filter_small_kn"),
    ]:
        check_refused(checks, titan, label, world, BASE + extra, bad, needle)
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
