#!/usr/bin/env python3
"""Context parallelism on CPU processes (Gloo), the debug model at seq 64, 10 steps, fp32:

- against one process with the same global batch (loss and grad norm within 1e-5 relative):
  CP(2) and CP(4) with each rotate method (allgather, alltoall), CP(2) without the load balancer,
  FSDP(2)xCP(2), HSDP(2x1)xCP(2), CP(2)xTP(2) blocking and async, PP(2)xCP(2), CP(2) with gradient
  accumulation, full and op-level activation checkpointing, and the 4D layout PP(2)xFSDP(2)xCP(2)xTP(2) on 16
  processes; validation under CP(2) gives one process's validation loss; CP(2) in float8 stays
  near one process in float8;
- block-causal attention (debugmodel_flex_attn) under CP(2) each method, CP(4) alltoall and
  CP(2)xTP(2), against one process with the same flavor;
- a CP(2) run killed right after its step-5 save resumes bit for bit; its step-5 checkpoint
  continues on CP(4) and on one process as their uninterrupted runs do (1e-5);
- head-tail balance: the query-key pairs each CP(4) rank's attention scored are equal within 1%
  (without the load balancer, CP(2)'s second rank scores about 3x the first's); op-level
  activation checkpointing keeps the attention (no pair scored again), full AC recomputes it;
- bytes per step: CP(2)'s all-gather and reduce-scatter exceed FSDP(2)'s (the same parameter
  shards) by the formula's keys and values, for each rotate method;
- bad configs (a seq_len the chunks do not divide, an unbuilt load balancer): every rank exits 2.

Usage: python3 tests/integration/test_context_parallel.py --titan build/titan
Prints one line per check and `N passed, N failed`; exits 0 only if none failed.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from launch import LAYOUT_BASE as BASE  # noqa: E402
from launch import Checks, check_refused, launch_into, run_layout, scratch_dir, step_metrics, worst_rel  # noqa: E402

TOL = 1e-5
LB8 = ["--training.local_batch_size", "8"]
CP2 = ["--parallelism.context_parallel_degree", "2"]
CP4 = ["--parallelism.context_parallel_degree", "4"]
RING = ["--parallelism.context_parallel_rotate_method", "alltoall"]
TP2 = ["--parallelism.tensor_parallel_degree", "2"]
PP2 = ["--parallelism.pipeline_parallel_degree", "2", "--parallelism.pipeline_parallel_schedule", "1F1B",
       "--parallelism.pipeline_parallel_microbatch_size", "2"]
FLEX = ["--model.flavor", "debugmodel_flex_attn"]
CK = ["--checkpoint.enable", "--checkpoint.interval", "5"]
# The debug model: 6 layers, 16 key/value heads of 16; CP(2) holds 8 rows x 32 tokens per rank.
LAYERS, KV_HEADS, HEAD_DIM = 6, 16, 16


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--titan", required=True)
    titan = os.path.abspath(ap.parse_args().titan)
    checks = Checks()
    check = checks.check
    tmp = scratch_dir("titan_cp_")

    def close(name: str, got: list[dict] | None, ref: list[dict] | None) -> None:
        if got is None or ref is None:
            return
        worst = max(worst_rel(got, ref, "loss"), worst_rel(got, ref, "grad_norm"))
        check(f"{name}: 10 steps within {TOL:g} of one process (worst {worst:.1e})",
              len(got) == 10 and worst <= TOL, str([(g["loss"], r["loss"]) for g, r in zip(got, ref)]))

    one = run_layout(checks, titan, "one process", 1, BASE + LB8, os.path.join(tmp, "one"))
    if one is None:
        return checks.summary()

    # ---- layouts against one process ------------------------------------------------------------
    layouts = {
        "CP(2) allgather": (2, LB8 + CP2 + CK),
        "CP(2) alltoall": (2, LB8 + CP2 + RING),
        "CP(4) allgather": (4, LB8 + CP4),
        "CP(4) alltoall": (4, LB8 + CP4 + RING),
        "CP(2) alltoall, no load balancer": (2, LB8 + CP2 + RING + ["--parallelism.context_parallel_load_balancer",
                                                                     "None"]),
        "FSDP(2)xCP(2)": (4, ["--training.local_batch_size", "4"] + CP2),
        "HSDP(2x1)xCP(2) alltoall": (4, ["--training.local_batch_size", "4", "--parallelism.data_parallel_replicate_degree",
                                         "2", "--parallelism.data_parallel_shard_degree", "1"] + CP2 + RING),
        "CP(2)xTP(2) alltoall": (4, LB8 + CP2 + TP2 + RING),
        "CP(2)x async TP(2)": (4, LB8 + CP2 + TP2 + ["--parallelism.enable_async_tensor_parallel"]),
        "PP(2)xCP(2)": (4, LB8 + CP2 + PP2 + ["--parallelism.data_parallel_shard_degree", "1"]),
        "CP(2) + gradient accumulation": (2, ["--training.local_batch_size", "4", "--training.global_batch_size", "8"]
                                          + CP2),
        "CP(2) + full AC": (2, LB8 + CP2 + ["--activation_checkpoint.mode", "full"]),
        "CP(2) alltoall + op AC": (2, LB8 + CP2 + RING + ["--activation_checkpoint.mode", "selective",
                                                            "--activation_checkpoint.selective_ac_option", "op"]),
        "PP(2)xFSDP(2)xCP(2)xTP(2), 16 processes": (16, ["--training.local_batch_size", "4"] + PP2 + CP2 + TP2 +
                                                    ["--parallelism.data_parallel_shard_degree", "2"]),
    }
    runs = {}
    for name, (world, args) in layouts.items():
        dump = os.path.join(tmp, re.sub(r"[^A-Za-z0-9]+", "_", name))
        runs[name] = run_layout(checks, titan, name, world, BASE + args, dump)
        close(name, runs[name], one)

    # ---- float8: CP(2) against one process in float8 --------------------------------------------------
    # Each rank scales its own tokens (a tensorwise amax over half the sequence), as torchtitan's
    # float8 does under CP, so the float8 rounding differs from one process's from the first step:
    # the first step within 1e-3, 10 steps within 3e-3, and float8 is in effect (CP(2) in float32
    # lies further away).
    f8 = ["--model.converters", "float8"]
    one_f8 = run_layout(checks, titan, "one process in float8", 1, BASE + LB8 + f8, os.path.join(tmp, "f8_one"))
    cp_f8 = run_layout(checks, titan, "CP(2) alltoall in float8", 2, BASE + LB8 + CP2 + RING + f8,
                       os.path.join(tmp, "f8_cp2"))
    if one_f8 is not None and cp_f8 is not None:
        first = max(worst_rel(cp_f8[:1], one_f8[:1], k) for k in ("loss", "grad_norm"))
        worst = max(worst_rel(cp_f8, one_f8, k) for k in ("loss", "grad_norm"))
        loss = worst_rel(cp_f8, one_f8, "loss")
        fp32 = worst_rel(runs["CP(2) alltoall"], one_f8, "loss") if runs.get("CP(2) alltoall") else 0.0
        check(f"CP(2) in float8: step 1 {first:.1e} (<= 1e-3), 10 steps {worst:.1e} (<= 3e-3) of one process in float8; "
              f"its losses {loss:.1e} away, CP(2) in float32's {fp32:.1e} (at least 5x further)",
              len(cp_f8) == 10 and first <= 1e-3 and worst <= 3e-3 and fp32 > 5 * loss)

    # ---- validation ---------------------------------------------------------------------------------
    val = ["--validation.enable", "--validation.freq", "5", "--validation.steps", "2",
           "--validation.local_batch_size", "4", "--validation.seq_len", "64"]

    def validation_losses(dump: str) -> list[float]:
        from launch import latest_run, read_jsonl
        rows = latest_run(read_jsonl(os.path.join(dump, "metrics.jsonl")))
        return [r["validation_loss"] for r in rows if "validation_loss" in r]

    v1 = run_layout(checks, titan, "one process with validation", 1, BASE + LB8 + val, os.path.join(tmp, "val_one"))
    v2 = run_layout(checks, titan, "CP(2) with validation", 2, BASE + LB8 + CP2 + RING + val, os.path.join(tmp, "val_cp"))
    if v1 is not None and v2 is not None:
        a, b = validation_losses(os.path.join(tmp, "val_one")), validation_losses(os.path.join(tmp, "val_cp"))
        worst = max((abs(x - y) / abs(y) for x, y in zip(b, a)), default=1.0)
        check(f"CP(2) validation: the validation losses equal one process's within {TOL:g} (worst {worst:.1e}, {b})",
              len(a) >= 2 and len(b) == len(a) and worst <= TOL)

    # ---- block-causal attention (documents) ---------------------------------------------------------
    flex_one = run_layout(checks, titan, "one process, block-causal", 1, BASE + LB8 + FLEX, os.path.join(tmp, "flex_one"))
    if flex_one is not None:
        check("block-causal differs from causal (the documents are masked)", worst_rel(flex_one, one, "loss") > 1e-4)
        for name, world, args in [("CP(2) allgather, block-causal", 2, LB8 + CP2),
                                  ("CP(2) alltoall, block-causal", 2, LB8 + CP2 + RING),
                                  ("CP(4) alltoall, block-causal", 4, LB8 + CP4 + RING),
                                  ("CP(2)xTP(2), block-causal", 4, LB8 + CP2 + TP2)]:
            got = run_layout(checks, titan, name, world, BASE + FLEX + args,
                             os.path.join(tmp, re.sub(r"[^A-Za-z0-9]+", "_", name)))
            close(name, got, flex_one)

    # ---- checkpoints: exact resume on CP(2); its step 5 continued on CP(4) and on one process -------
    straight = runs.get("CP(2) allgather")
    dump = os.path.join(tmp, "resume")
    first = launch_into(titan, 2, BASE + LB8 + CP2 + CK, dump, env={"TITAN_TEST_DIE_AFTER_SAVE": "5"})
    again = launch_into(titan, 2, BASE + LB8 + CP2 + CK, dump)
    resumed = [r for r in step_metrics(dump) if r["step"] > 5]
    check("CP(2) killed right after the step-5 save: the rerun's steps 6-10 equal the uninterrupted run bit for bit",
          straight is not None and all(o[0] == -signal.SIGKILL for o in first) and all(o[0] == 0 for o in again) and
          [(r["step"], r["loss"], r["grad_norm"]) for r in resumed] ==
          [(r["step"], r["loss"], r["grad_norm"]) for r in straight[5:]],
          f"{[o[0] for o in first]} {[o[0] for o in again]} {[(r['step'], r['loss']) for r in resumed]}")
    saved = os.path.join(tmp, "CP_2_allgather", "checkpoint", "step-5")
    for name, world, args, ref in [("CP(4)", 4, LB8 + CP4, runs.get("CP(4) allgather")), ("one process", 1, LB8, one)]:
        d = os.path.join(tmp, "from_cp2_" + str(world))
        got = run_layout(checks, titan, f"CP(2) step 5 -> {name}", world,
                         BASE + args + ["--checkpoint.enable", "--checkpoint.initial_load_path", saved,
                                        "--no-checkpoint.initial_load_model_only"], d)
        if got is not None and ref is not None:
            got = [r for r in got if r["step"] > 5]
            worst = max((max(abs(g["loss"] - r["loss"]) / r["loss"], abs(g["grad_norm"] - r["grad_norm"]) / r["grad_norm"])
                         for g, r in zip(got, ref[5:])), default=1.0)
            check(f"CP(2)'s step-5 checkpoint continued on {name}: steps 6-10 equal its uninterrupted run "
                  f"(worst {worst:.1e} <= {TOL:g})", len(got) == 5 and worst <= TOL)

    # ---- head-tail balance, counted by each rank ----------------------------------------------------
    def pairs(name: str, world: int, args: list[str]) -> list[int]:
        outs = launch_into(titan, world, BASE + ["--training.steps", "1"] + args, os.path.join(tmp, "pairs_" + name))
        found = [re.search(r"attention scored ([\d,]+) query-key pairs", o[1] + o[2]) for o in outs]
        return [int(m.group(1).replace(",", "")) for m in found if m]

    balanced = pairs("cp4", 4, LB8 + CP4)
    spread = (max(balanced) / min(balanced) - 1) if len(balanced) == 4 and min(balanced) > 0 else 1.0
    check(f"head-tail CP(4): each rank's attention scored the same query-key pairs within 1% ({balanced}, "
          f"spread {spread:.2%})", len(balanced) == 4 and spread <= 0.01)
    plain = pairs("cp2_plain", 2, LB8 + CP2 + ["--parallelism.context_parallel_load_balancer", "None"])
    check(f"without the load balancer CP(2)'s ranks are uneven ({plain}: the second scores about 3x the first)",
          len(plain) == 2 and plain[1] > 2.5 * plain[0])
    # Op-level checkpointing keeps the attention's output: its recompute scores nothing again, while
    # full checkpointing recomputes every block's attention.
    for method, extra in [("allgather", []), ("alltoall", RING)]:
        none = pairs("cp2_noac_" + method, 2, LB8 + CP2 + extra)
        op = pairs("cp2_opac_" + method, 2, LB8 + CP2 + extra + ["--activation_checkpoint.mode", "selective",
                                                                   "--activation_checkpoint.selective_ac_option", "op"])
        full = pairs("cp2_fullac_" + method, 2, LB8 + CP2 + extra + ["--activation_checkpoint.mode", "full"])
        check(f"CP(2) {method}: op-level AC keeps the attention (pairs scored {op} as without AC {none}), full AC "
              f"recomputes it ({full})", len(none) == 2 and op == none and full == [2 * n for n in none])

    # ---- bytes per step against the formula ----------------------------------------------------------
    fsdp = run_layout(checks, titan, "FSDP(2) (for bytes)", 2, BASE + ["--training.local_batch_size", "4"],
                      os.path.join(tmp, "fsdp2"))
    n = 8 * KV_HEADS * 32 * HEAD_DIM  # elements of one rank's keys (or values) in one layer: B x Hk x T/cp x hd

    def per_step(rows: list[dict], kind: str) -> float:
        return rows[-1]["comm_bytes"][kind] - rows[-2]["comm_bytes"][kind]

    # The step's loss rows are all-gathered too: CP(2) has 8 rows of 8 bytes per rank, FSDP(2) 4.
    rows_gathered = (8 - 4) * 8  # (W-1)/W of the W ranks' rows, W = 2
    want = {"all_gather": LAYERS * 4 * n * 4 + rows_gathered, "reduce_scatter": {"allgather": LAYERS * 2 * n * 4,
                                                                  "alltoall": LAYERS * 2 * 2 * n * 4}}
    for method, name in [("allgather", "CP(2) allgather"), ("alltoall", "CP(2) alltoall")]:
        rows = runs.get(name)
        if rows is None or fsdp is None:
            continue
        got_ag = per_step(rows, "all_gather") - per_step(fsdp, "all_gather")
        got_rs = per_step(rows, "reduce_scatter") - per_step(fsdp, "reduce_scatter")
        check(f"CP(2) {method}: all-gather bytes per step exceed FSDP(2)'s by the keys and values, "
              f"{got_ag:.0f} = layers x 4 x (cp-1) x B x Hk x T/cp x hd x 4 B + 32 B of loss rows = {want['all_gather']}, "
              f"and reduce-scatter "
              f"by their gradients, {got_rs:.0f} = {want['reduce_scatter'][method]}",
              got_ag == want["all_gather"] and got_rs == want["reduce_scatter"][method])

    # ---- refusals ----------------------------------------------------------------------------------
    check_refused(checks, titan, "CP(2) with seq_len 66 (headtail needs a multiple of 4)", 2,
                  BASE + LB8 + CP2 + ["--training.seq_len", "66"], os.path.join(tmp, "bad_seq"),
                  "training.seq_len = 66 is not a multiple of 4")
    check_refused(checks, titan, "CP(2)xTP(2) with seq_len 68 (needs a multiple of 8)", 4,
                  BASE + LB8 + CP2 + TP2 + ["--training.seq_len", "68"], os.path.join(tmp, "bad_seq_tp"),
                  "training.seq_len = 68 is not a multiple of 8")
    check_refused(checks, titan, "CP(2) with the ptrr load balancer", 2,
                  BASE + LB8 + CP2 + ["--parallelism.context_parallel_load_balancer", "ptrr"],
                  os.path.join(tmp, "bad_lb"), "context_parallel_load_balancer")
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
