#!/usr/bin/env python3
"""Checkpoints on CPU processes (Gloo), the debug model at seq 64 in float32:

- exact resume: 10 steps straight against a run whose processes are all killed with SIGKILL, at a
  random moment after the step-5 save (HSDP(2x2), DDP(2), PP(2)xFSDP(2)xTP(2)) or right after it
  (one process, FSDP(2), TP(2)), then the same command again: steps 6-10 identical bit for bit
  (loss and grad norm);
- resharding: a step-5 checkpoint of one layout continued in another equals the uninterrupted
  run of the target layout to 1e-5, over a chain that has every layout once as source and once
  as target: 1 -> FSDP(4) -> HSDP(2x2) -> FSDP(2)xTP(2) -> TP(2) -> FSDP(2) -> DDP(2) -> TP(4)
  -> HSDP(2x2)xTP(2) -> PP(2)xFSDP(2)xTP(2) -> 1;
- preemption: SIGTERM to one rank, SIGUSR1 to the other in another run: every rank saves after
  the same step and exits 0, and the resumed run continues bit for bit;
- async saves write the same bytes as sync ones; keep_latest_k; seed checkpoints; the final
  model-only export in export_dtype;
- crash safety and bad inputs: a save killed midway leaves the previous step loadable and the
  partial one ignored with a warning; a corrupt, truncated or missing shard, a shape that does
  not match the model, an unwritable folder, a missing load_step: exit 2, one message, nothing
  existing deleted; `titan checkpoint info` verifies every checksum.

Usage: python3 tests/integration/test_checkpoint.py --titan build/titan
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from launch import scratch_dir  # noqa: E402
from launch import (LAYOUT_BASE, ROOT, Checks, free_port, kill_at_random_moment, launch_into, rank_env, rel,  # noqa: E402
                    step_metrics)

checks = Checks()
check = checks.check
TOL = 1e-5
# The layouts, with the same global batch (8 rows).
LAYOUTS = {
    "1": (1, ["--training.local_batch_size", "8"]),
    "FSDP(2)": (2, ["--training.local_batch_size", "4"]),
    "FSDP(4)": (4, ["--training.local_batch_size", "2"]),
    "HSDP(2x2)": (4, ["--training.local_batch_size", "2", "--parallelism.data_parallel_replicate_degree", "2"]),
    "TP(2)": (2, ["--parallelism.tensor_parallel_degree", "2", "--training.local_batch_size", "8"]),
    "FSDP(2)xTP(2)": (4, ["--parallelism.tensor_parallel_degree", "2", "--training.local_batch_size", "4"]),
    "DDP(2)": (2, ["--training.local_batch_size", "4", "--parallelism.data_parallel_replicate_degree", "2",
                   "--parallelism.data_parallel_shard_degree", "1"]),
    "TP(4)": (4, ["--parallelism.tensor_parallel_degree", "4", "--training.local_batch_size", "8"]),
    "HSDP(2x2)xTP(2)": (8, ["--parallelism.tensor_parallel_degree", "2", "--training.local_batch_size", "2",
                            "--parallelism.data_parallel_replicate_degree", "2"]),
    "PP(2)xFSDP(2)xTP(2)": (8, ["--parallelism.pipeline_parallel_degree", "2", "--parallelism.tensor_parallel_degree", "2",
                                "--training.local_batch_size", "4", "--parallelism.pipeline_parallel_microbatch_size", "1"]),
}
CK = ["--checkpoint.enable", "--checkpoint.interval", "5"]


def run(titan: str, layout: str, dump: str, extra: list[str] | None = None, env: dict | None = None):
    world, args = LAYOUTS[layout]
    return launch_into(titan, world, LAYOUT_BASE + args + CK + (extra or []), dump, env=env)


def ok(outs) -> bool:
    return all(o[0] == 0 for o in outs)


def first_failure(outs) -> str:
    for i, (rc, _, err) in enumerate(outs):
        if rc != 0:
            return f"rank {i} exit {rc}: {err[-700:]}"
    return ""


def step_folders(folder: str) -> list[str]:
    """The step-* entries of a checkpoint folder (it also holds the run's lock, .titan.lock)."""
    return sorted(n for n in os.listdir(folder) if n.startswith("step-")) if os.path.isdir(folder) else []


def rows_after(dump: str, step: int) -> list[dict]:
    return [r for r in step_metrics(dump) if r["step"] > step]


def cli(titan: str, args: list[str], timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([titan, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--titan", required=True)
    opts = ap.parse_args()
    titan = os.path.abspath(opts.titan)
    tmp = scratch_dir("titan_ckpt_")

    # ---- uninterrupted runs of every layout (each also saves step 5 and step 10) ------------------
    straight: dict[str, list[dict]] = {}
    for name in LAYOUTS:
        dump = os.path.join(tmp, "straight_" + name)
        outs = run(titan, name, dump)
        check(f"{name}: 10 steps with checkpoints every 5", ok(outs), first_failure(outs))
        straight[name] = step_metrics(dump) if ok(outs) else []

    # ---- exact resume after SIGKILL at a random moment ---------------------------------------------
    # Every rank killed at once, at a random point after the step-5 save: a random step from 6 to 8
    # has been logged, then a random part of a step (the middle of a step, of a collective).
    rng = random.Random(int(os.environ.get("TITAN_TEST_SEED", str(time.time_ns()))))
    for name in ["HSDP(2x2)", "DDP(2)", "PP(2)xFSDP(2)xTP(2)"]:
        dump = os.path.join(tmp, "random_kill_" + name)
        world, args = LAYOUTS[name]
        # The pause stays within the next step (its length from the uninterrupted run), so the kill comes
        # before the last step.
        step_time = sorted(r["step_seconds"] for r in straight[name])[len(straight[name]) // 2] if straight[name] else 0.1
        codes, logged, moment = kill_at_random_moment(titan, world, [*LAYOUT_BASE, *args, *CK, "--metrics.log_freq", "1"],
                                                      dump, rng, step_time)
        if not (all(c == -signal.SIGKILL for c in codes) and 5 <= logged < 10):
            check(f"{name}: every rank killed at a random moment after the step-5 save", False, f"{moment}, exits {codes}")
            continue
        outs = run(titan, name, dump)
        if not ok(outs):
            check(f"{name}: the rerun after a kill resumes", False, first_failure(outs))
            continue
        got, ref = rows_after(dump, 5), [r for r in straight[name] if r["step"] > 5]
        same = len(got) == 5 and all(g["loss"] == r["loss"] and g["grad_norm"] == r["grad_norm"] for g, r in zip(got, ref))
        check(f"{name}: {moment}; the rerun resumes from step 5 and steps 6-10 equal the uninterrupted run bit for bit",
              "Resuming training from step 5" in outs[0][1] + outs[0][2] and same,
              str([(g["step"], g["loss"], r["loss"]) for g, r in zip(got, ref)]))

    # ---- exact resume after SIGKILL right after a save --------------------------------------------
    for name in ["1", "FSDP(2)", "TP(2)"]:
        dump = os.path.join(tmp, "killed_" + name)
        outs = run(titan, name, dump, env={"TITAN_TEST_DIE_AFTER_SAVE": "5"})
        killed = all(o[0] == -signal.SIGKILL for o in outs)
        check(f"{name}: every rank killed right after the step-5 save", killed, str([o[0] for o in outs]))
        outs = run(titan, name, dump)
        if not ok(outs):
            check(f"{name}: the rerun resumes", False, first_failure(outs))
            continue
        check(f"{name}: the rerun says it resumes from step 5", "Resuming training from step 5" in outs[0][1] + outs[0][2])
        got, ref = rows_after(dump, 5), [r for r in straight[name] if r["step"] > 5]
        same = len(got) == 5 and all(g["loss"] == r["loss"] and g["grad_norm"] == r["grad_norm"] for g, r in zip(got, ref))
        check(f"{name}: steps 6-10 after the kill equal the uninterrupted run bit for bit", same,
              str([(g["step"], g["loss"], r["loss"], g["grad_norm"], r["grad_norm"]) for g, r in zip(got, ref)]))

    # ---- resharding: step 5 of one layout continued in another -------------------------------------
    chain = ["1", "FSDP(4)", "HSDP(2x2)", "FSDP(2)xTP(2)", "TP(2)", "FSDP(2)", "DDP(2)", "TP(4)", "HSDP(2x2)xTP(2)",
             "PP(2)xFSDP(2)xTP(2)", "1"]
    for src, dst in zip(chain, chain[1:]):
        saved = os.path.join(tmp, "straight_" + src, "checkpoint", "step-5")
        dump = os.path.join(tmp, f"reshard_{src}_to_{dst}")
        outs = run(titan, dst, dump, ["--checkpoint.initial_load_path", saved, "--no-checkpoint.initial_load_model_only"])
        if not ok(outs):
            check(f"{src} -> {dst}: resumes", False, first_failure(outs))
            continue
        got, ref = rows_after(dump, 5), [r for r in straight[dst] if r["step"] > 5]
        worst = max((max(rel(g["loss"], r["loss"]), rel(g["grad_norm"], r["grad_norm"])) for g, r in zip(got, ref)),
                    default=1.0)
        check(f"{src} -> {dst}: steps 6-10 equal {dst}'s uninterrupted run (worst {worst:.1e} <= {TOL:g})",
              len(got) == 5 and worst <= TOL, str([(g["loss"], r["loss"]) for g, r in zip(got, ref)]))

    # ---- a PyTorch distributed checkpoint in torchtitan's layout -------------------------------------
    try:
        import torch
        import torch.distributed.checkpoint as dcp
        from safetensors.torch import load_file
    except ImportError as e:  # run_tests.sh installs both: their absence is a failure, not a skip
        checks.check("torchtitan checkpoints: torch.distributed.checkpoint and safetensors import", False, str(e))
    else:
        src = os.path.join(tmp, "straight_1", "checkpoint", "step-5")
        ours = load_file(os.path.join(src, "rank-00000.safetensors"))
        meta = json.load(open(os.path.join(src, "metadata.json")))
        sd = {k[len("model."):]: v for k, v in ours.items() if k.startswith("model.")}
        optim = {"state." + k[len("optimizer."):]: v for k, v in ours.items() if k.startswith("optimizer.")}
        for fqn in list(sd):
            optim[f"param_groups.{fqn}.lr"] = 8e-4
        sd["optimizer"] = optim
        sd["lr_scheduler"] = {"last_epoch": 5, "base_lrs": [8e-4], "_step_count": 6}
        sd["train_state"] = {"step": 5, "ntokens_seen": meta["scalars"]["train_state"]["tokens_seen"]}
        sd["dataloader"] = {"dp_rank_0": b"torchtitan's own position"}
        tt = os.path.join(tmp, "torchtitan", "checkpoint", "step-5")
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dcp.save(sd, checkpoint_id=tt)
        conv = os.path.join(tmp, "torchtitan_converted", "step-5")
        c = subprocess.run([titan, "convert", "from-dcp", tt, conv, "--flavor", "debugmodel"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
        back = load_file(os.path.join(conv, "rank-00000.safetensors")) if c.returncode == 0 else {}
        same = back.keys() == ours.keys() and all(torch.equal(back[k], ours[k]) for k in ours)
        check(f"torchtitan's checkpoint converts with every weight, moment and step bit for bit ({len(ours)} tensors)",
              same, c.stderr[-300:] + str(sorted(set(back) ^ set(ours)))[:200])
        for name in ["FSDP(2)", "TP(2)"]:
            a, b = os.path.join(tmp, "from_torchtitan_" + name), os.path.join(tmp, "from_ours_nodata_" + name)
            outs = run(titan, name, a, ["--checkpoint.initial_load_path", tt, "--no-checkpoint.initial_load_model_only"])
            outs2 = run(titan, name, b, ["--checkpoint.initial_load_path", src, "--no-checkpoint.initial_load_model_only",
                                         "--checkpoint.exclude_from_loading", "dataloader"])
            if not (ok(outs) and ok(outs2)):
                check(f"{name} continues torchtitan's checkpoint", False, first_failure(outs) or first_failure(outs2))
                continue
            x, y = rows_after(a, 5), rows_after(b, 5)
            same = len(x) == 5 and all(p["loss"] == q["loss"] and p["grad_norm"] == q["grad_norm"] for p, q in zip(x, y))
            check(f"{name} continues torchtitan's checkpoint from step 5 exactly as ours (data from its start)", same and
                  "Resuming training from step 5" in outs[0][1] + outs[0][2],
                  str([(p["loss"], q["loss"]) for p, q in zip(x, y)]))

    # ---- async saves, keep_latest_k, the final export, the seed --------------------------------------
    dump = os.path.join(tmp, "async")
    outs = run(titan, "1", dump, ["--checkpoint.async_mode", "async", "--checkpoint.keep_latest_k", "2",
                                  "--checkpoint.interval", "2"])
    if ok(outs):
        log = outs[0][1] + outs[0][2]
        check("async: the stall is logged", "the step's stall" in log, log[-500:])
        steps = step_folders(os.path.join(dump, "checkpoint"))
        check("keep_latest_k = 2 keeps the newest two", steps == ["step-10", "step-8"], str(steps))
        a = json.load(open(os.path.join(dump, "checkpoint", "step-10", "metadata.json")))
        s = json.load(open(os.path.join(tmp, "straight_1", "checkpoint", "step-10", "metadata.json")))
        same = all(a["tensors"][k]["chunks"][0]["crc32c"] == s["tensors"][k]["chunks"][0]["crc32c"] for k in s["tensors"])
        check("async: step 10 holds the bytes a sync save holds (every checksum equal)", same and a["tensors"].keys() == s["tensors"].keys())
    else:
        check("async run", False, first_failure(outs))

    dump = os.path.join(tmp, "export")
    outs = run(titan, "FSDP(2)", dump, ["--checkpoint.last_save_model_only", "--checkpoint.export_dtype", "bfloat16",
                                        "--training.steps", "6"])
    if ok(outs):
        m = json.load(open(os.path.join(dump, "checkpoint", "step-6", "metadata.json")))
        dtypes = {t["dtype"] for t in m["tensors"].values()}
        check("the final save holds only the model, in export_dtype", m["contents"] == ["model"] and dtypes == {"BF16"}
              and all(k.startswith("model.") for k in m["tensors"]), f"{m['contents']} {dtypes}")
        outs = run(titan, "FSDP(2)", dump, ["--training.steps", "8"])
        log = outs[0][1] + outs[0][2]
        check("a rerun skips the model-only export and resumes from step 5", ok(outs) and
              "Resuming training from step 5" in log, first_failure(outs) or log[-400:])
    else:
        check("export run", False, first_failure(outs))

    dump = os.path.join(tmp, "seed")
    outs = run(titan, "1", dump, ["--checkpoint.create_seed_checkpoint"])
    check("a seed checkpoint is created on one process", ok(outs) and
          os.path.exists(os.path.join(dump, "checkpoint", "step-0", "metadata.json")), first_failure(outs))
    outs = run(titan, "FSDP(2)", dump, ["--training.steps", "3"])
    got = step_metrics(dump)
    check("FSDP(2) starts from the seed: step 1 equals one process's", ok(outs) and got and
          rel(got[0]["loss"], straight["1"][0]["loss"]) <= TOL and "(model only)" in outs[0][1] + outs[0][2],
          first_failure(outs) or str(got[:1]))
    outs = run(titan, "FSDP(2)", dump, ["--checkpoint.create_seed_checkpoint"])
    check("a seed checkpoint on two processes is refused", all(o[0] == 2 for o in outs) and
          "one process" in outs[0][2], first_failure(outs))

    # ---- preemption: a signal to one rank stops every rank after the same step, saved and resumed ----
    # SIGTERM to rank 1 and Slurm's SIGUSR1 warning to rank 0 of an FSDP(2) run, each after step 2:
    # every rank saves the full state after the step in which the signal arrived and exits 0; the
    # same command then resumes there, and the remaining steps equal the uninterrupted run bit for bit.
    for sig, target in ((signal.SIGTERM, 1), (signal.SIGUSR1, 0)):
        label = f"{sig.name} to rank {target} only"
        dump = os.path.join(tmp, f"preempt_{sig.name}")
        world, args = LAYOUTS["FSDP(2)"]
        port = free_port()
        cmd = [titan, "train", *LAYOUT_BASE, *args, *CK, "--metrics.log_freq", "1", "--job.dump_folder", dump]
        procs = [subprocess.Popen(cmd, cwd=ROOT, env=rank_env(r, world, port), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for r in range(world)]
        deadline = time.time() + 120
        while time.time() < deadline and not (os.path.exists(os.path.join(dump, "metrics.jsonl")) and
                                              len(step_metrics(dump)) >= 2):
            time.sleep(0.02)
        procs[target].send_signal(sig)
        outs = []
        for p in procs:
            try:
                out, err = p.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
                err += "(hung)"
            outs.append((p.returncode, out, err))
        saved = step_folders(os.path.join(dump, "checkpoint"))
        stopped = step_metrics(dump)[-1]["step"] if os.path.exists(os.path.join(dump, "metrics.jsonl")) else 0
        meta = os.path.join(dump, "checkpoint", f"step-{stopped}", "metadata.json")
        full = os.path.exists(meta) and "optimizer" in json.load(open(meta))["contents"]
        check(f"{label}: every rank stops after step {stopped}, saves the full state there and exits 0",
              ok(outs) and 2 <= stopped < 10 and full and f"stopped after step {stopped}" in outs[0][1] + outs[0][2],
              f"{[o[0] for o in outs]} {saved} {outs[0][2][-300:]}")
        if not (ok(outs) and full):
            continue
        outs = run(titan, "FSDP(2)", dump)
        got, ref = rows_after(dump, stopped), [r for r in straight["FSDP(2)"] if r["step"] > stopped]
        same = len(got) == len(ref) > 0 and all(g["loss"] == r["loss"] and g["grad_norm"] == r["grad_norm"]
                                                for g, r in zip(got, ref))
        check(f"{label}: the same command resumes from step {stopped}; steps {stopped + 1}-10 equal the uninterrupted "
              "run bit for bit", ok(outs) and f"Resuming training from step {stopped}" in outs[0][1] + outs[0][2] and same,
              first_failure(outs) or str([(g["step"], g["loss"], r["loss"]) for g, r in zip(got, ref)]))

    # ---- a save killed midway --------------------------------------------------------------------
    dump = os.path.join(tmp, "midway")
    outs = run(titan, "FSDP(2)", dump, env={"TITAN_TEST_DIE_IN_SAVE": "10"})
    folder = os.path.join(dump, "checkpoint")
    names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    check("a save killed midway leaves step-5 and an unfinished step-10",
          "step-5" in names and any(n.startswith("step-10.partial") for n in names) and "step-10" not in names, str(names))
    info = cli(titan, ["checkpoint", "info", folder])
    check("checkpoint info names the unfinished save and verifies step 5", info.returncode == 0 and
          "unfinished" in info.stdout and "chunks verified" in info.stdout, info.stdout + info.stderr)
    outs = run(titan, "FSDP(2)", dump, ["--training.steps", "6"])
    log = outs[0][1] + outs[0][2]
    check("the rerun warns about the unfinished save and resumes from step 5",
          ok(outs) and "ignoring the unfinished checkpoint" in log and "Resuming training from step 5" in log,
          first_failure(outs) or log[-400:])
    check("the unfinished save is removed after the next commit",
          not any(".partial" in n for n in os.listdir(folder)), str(os.listdir(folder)))

    # ---- damaged checkpoints and bad settings: exit 2 on every rank, nothing deleted ------------------
    src = os.path.join(tmp, "straight_FSDP(2)", "checkpoint", "step-5")

    def damaged(name: str, damage) -> str:
        dump = os.path.join(tmp, "damaged_" + name)
        os.makedirs(os.path.join(dump, "checkpoint"))
        shutil.copytree(src, os.path.join(dump, "checkpoint", "step-5"))
        damage(os.path.join(dump, "checkpoint", "step-5"))
        return dump

    def flip(d: str) -> None:
        p = os.path.join(d, "rank-00001.safetensors")
        with open(p, "r+b") as f:
            f.seek(os.path.getsize(p) - 100)
            b = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([b[0] ^ 0xFF]))

    def truncate(d: str) -> None:
        p = os.path.join(d, "rank-00000.safetensors")
        os.truncate(p, os.path.getsize(p) // 2)

    cases = [
        ("a corrupt shard", damaged("corrupt", flip), [], "does not match"),
        ("a truncated shard", damaged("truncated", truncate), [], "truncated"),
        ("a missing shard", damaged("missing", lambda d: os.remove(os.path.join(d, "rank-00001.safetensors"))), [],
         "lacks its file rank-00001"),
        ("another vocabulary size", damaged("shape", lambda d: None), ["--model.vocab_size", "2304"],
         "vocab_size = 2048; this run's model has vocab_size = 2304"),
        ("a load_step that is not there", damaged("step", lambda d: None), ["--checkpoint.load_step", "7"],
         "use one of the saved steps: 5"),
    ]
    for what, dump, extra, needle in cases:
        before = sorted(os.listdir(os.path.join(dump, "checkpoint", "step-5")))
        outs = run(titan, "FSDP(2)", dump, extra)
        after = sorted(os.listdir(os.path.join(dump, "checkpoint", "step-5")))
        check(f"{what}: exit 2 on every rank naming the problem, nothing deleted",
              all(o[0] == 2 for o in outs) and any(needle in o[2] for o in outs) and before == after
              and "Traceback" not in outs[0][2],
              str([o[0] for o in outs]) + " " + outs[0][2][-400:] + outs[1][2][-400:])
    info = cli(titan, ["checkpoint", "info", os.path.join(tmp, "damaged_corrupt", "checkpoint", "step-5")])
    check("checkpoint info rejects a corrupt shard (exit 2)", info.returncode == 2 and "does not match" in info.stderr,
          info.stderr[-300:])

    dump = os.path.join(tmp, "unwritable")
    os.makedirs(dump)
    open(os.path.join(dump, "checkpoint"), "w").close()  # a file where the folder should be
    outs = run(titan, "FSDP(2)", dump, ["--training.steps", "5"])
    check("an unwritable checkpoint folder: exit 2 on every rank", all(o[0] == 2 for o in outs) and
          "checkpoint" in outs[0][2], str([o[0] for o in outs]) + outs[0][2][-300:])
    for what, extra, needle in [("keep_latest_k = 1", ["--checkpoint.keep_latest_k", "1"], "keep_latest_k"),
                                ("an unknown exclude_from_loading part",
                                 ["--checkpoint.exclude_from_loading", "weights"], "exclude_from_loading")]:
        outs = run(titan, "1", os.path.join(tmp, "bad"), extra)
        check(f"{what} is refused with exit 2", outs[0][0] == 2 and needle in outs[0][2], outs[0][2][-300:])

    shutil.rmtree(tmp, ignore_errors=True)
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
