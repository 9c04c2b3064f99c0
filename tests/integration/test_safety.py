#!/usr/bin/env python3
"""Nothing titan.cpp did not write is deleted or overwritten (docs/reliability.md, "Data loss"):

- step-* folders that are not titan.cpp's (a user's backup, a folder without metadata.json)
  survive saves, keep_latest_k and the cleaning of interrupted saves; only titan.cpp's
  step-N.partial-<run id> folders are cleaned and only its committed step-N folders rotated;
- a step folder this run would save into is refused at the start (exit 2), never replaced;
- `titan convert` writes only into a new or empty folder, with --force into files that are not a
  checkpoint, and never into a training checkpoint;
- a checkpoint of another model (n_layers 2 -> 1) is refused naming the argument and both values,
  and a saved model tensor the run's model lacks is refused;
- a finished run whose last save was a model-only export, run again, does not resume from the
  export and does not overwrite it; metadata.json with an unknown "contents" part is malformed;
- two runs with different dump folders and one checkpoint.folder: the second is refused;
- a save that fails (a file-size limit standing in for a full disk) removes its partial folder
  and names the reason;
- metrics.jsonl on a full device (/dev/full): one warning, the run goes on and exits 0.

Usage: python3 tests/integration/test_safety.py --titan build/titan
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from launch import scratch_dir  # noqa: E402
from launch import ROOT, Checks, free_port, rank_env  # noqa: E402

DEBUG = "configs/llama3/debug_model.toml"
BASE = ["--job.config_file", DEBUG, "--training.mixed_precision_param", "float32", "--training.seq_len", "32",
        "--training.local_batch_size", "2", "--activation_checkpoint.mode", "none", "--debug.seed", "1",
        "--model.n_layers", "2", "--metrics.log_freq", "1"]
ENV = dict(os.environ, OMP_NUM_THREADS="1")
checks = Checks()
check = checks.check


def run(titan: str, *args: str, timeout: int = 300, preexec=None) -> subprocess.CompletedProcess:
    return subprocess.run([titan, *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=preexec)


def train(titan: str, dump: str, *extra: str, **kw) -> subprocess.CompletedProcess:
    return run(titan, "train", *BASE, "--job.dump_folder", dump, *extra, **kw)


def refused(p: subprocess.CompletedProcess, *needles: str) -> tuple[bool, str]:
    err = p.stderr
    ok = (p.returncode == 2 and err.count("titan: error") == 1 and all(n in err for n in needles)
          and "internal error" not in err)
    return ok, f"rc={p.returncode} stderr={err[-800:]!r}"


def tree(folder: str) -> dict[str, tuple[int, float]]:
    """Every file under `folder` but the run lock: size and modification time (to see that nothing changed)."""
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            if f == ".titan.lock":
                continue
            p = os.path.join(root, f)
            st = os.stat(p)
            out[os.path.relpath(p, folder)] = (st.st_size, st.st_mtime_ns)
    return out


def steps_in(ck: str) -> list[str]:
    return sorted(n for n in os.listdir(ck) if n.startswith("step-")) if os.path.isdir(ck) else []


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--titan", required=True)
    titan = os.path.abspath(ap.parse_args().titan)
    tmp = scratch_dir("titan_safety_")
    CK = ["--checkpoint.enable", "--checkpoint.interval", "1"]

    # A reference checkpoint for the sections below: step-6 of a 6-step run (n_layers 2).
    ref = os.path.join(tmp, "ref")
    p = train(titan, ref, "--checkpoint.enable", "--checkpoint.interval", "6", "--training.steps", "6")
    good = os.path.join(ref, "checkpoint", "step-6")
    check("a reference run saves step-6", p.returncode == 0 and os.path.isdir(good), p.stderr[-300:])
    # A copy for the sections after the conversions (a build that lets convert write into a
    # checkpoint would have replaced the reference, or deleted its folder).
    pristine = os.path.join(tmp, "pristine", "checkpoint", "step-6")
    shutil.copytree(good, pristine)

    # ---- 1. a user's step-* folders survive saves and rotation ---------------------------------------
    dump = os.path.join(tmp, "foreign")
    ck = os.path.join(dump, "checkpoint")
    p = train(titan, dump, *CK, "--training.steps", "2")
    check("a run saves step-1 and step-2", p.returncode == 0 and steps_in(ck) == ["step-1", "step-2"],
          p.stderr[-500:] + str(steps_in(ck)))
    os.makedirs(os.path.join(ck, "step-backup"))
    open(os.path.join(ck, "step-backup", "notes.txt"), "w").write("mine\n")
    os.makedirs(os.path.join(ck, "step-9"))
    open(os.path.join(ck, "step-9", "README"), "w").write("mine too\n")
    os.makedirs(os.path.join(ck, "step-1.partial-123"))  # titan.cpp's own interrupted save
    p = train(titan, dump, *CK, "--training.steps", "4", "--checkpoint.keep_latest_k", "0")
    out = p.stdout + p.stderr
    check("keep_latest_k = 0: a user's step-backup/ and step-9/ survive the next saves",
          p.returncode == 0 and os.path.exists(os.path.join(ck, "step-backup", "notes.txt"))
          and os.path.exists(os.path.join(ck, "step-9", "README")), f"rc={p.returncode} {steps_in(ck)} {out[-600:]}")
    check("... and titan.cpp's own interrupted save (step-1.partial-123) is cleaned",
          not os.path.exists(os.path.join(ck, "step-1.partial-123")), str(steps_in(ck)))
    check("... the user's folders are named once, as left alone, not as interrupted saves",
          out.count("Leaving") == 2 and "step-backup (a save was interrupted" not in out
          and out.count("ignoring the unfinished checkpoint") == 1, out[-1500:])
    p = train(titan, dump, *CK, "--training.steps", "6", "--checkpoint.keep_latest_k", "2")
    check("keep_latest_k = 2 rotates only committed step folders; the user's stay",
          p.returncode == 0 and steps_in(ck) == ["step-5", "step-6", "step-9", "step-backup"],
          f"rc={p.returncode} {steps_in(ck)} {p.stderr[-400:]}")
    before = tree(ck)
    p = train(titan, dump, *CK, "--training.steps", "10")
    ok, detail = refused(p, "step-9 already exists", "not a checkpoint", "never overwrites")
    check("a run that would save step 9 over a user's step-9/ is refused at its start", ok and "step:" not in p.stdout,
          detail)
    check("... and nothing in the checkpoint folder changed", tree(ck) == before, "")

    # ---- 2. titan convert never writes into a checkpoint, nor into files without --force -------------
    step6 = good
    hf = os.path.join(tmp, "hf")
    p = run(titan, "convert", "to-hf", step6, hf)
    check("convert to-hf into a new folder", p.returncode == 0, p.stderr[-400:])
    before = tree(step6)
    p = run(titan, "convert", "from-hf", hf, step6)
    ok, detail = refused(p, "training checkpoint", "never writes into")
    check("convert from-hf into a full training checkpoint: refused, untouched", ok and tree(step6) == before, detail)
    p = run(titan, "convert", "from-hf", hf, step6, "--force")
    ok, detail = refused(p, "training checkpoint")
    check("... also with --force", ok and tree(step6) == before, detail)
    p = run(titan, "convert", "from-hf", hf, os.path.dirname(good))
    ok, detail = refused(p, "checkpoint folder")
    check("convert from-hf into a checkpoint folder: refused", ok, detail)
    p = run(titan, "convert", "to-hf", step6, step6, "--force")
    ok, detail = refused(p, "training checkpoint")
    check("convert to-hf into a training checkpoint, even with --force: refused", ok, detail)
    mine = os.path.join(tmp, "mine")
    os.makedirs(mine)
    open(os.path.join(mine, "keep.txt"), "w").write("x")
    p = run(titan, "convert", "to-hf", step6, mine)
    ok, detail = refused(p, "not empty", "--force")
    check("convert to-hf into a folder of files: refused without --force", ok and os.listdir(mine) == ["keep.txt"],
          detail)
    p = run(titan, "convert", "to-hf", step6, mine, "--force")
    check("... with --force it writes there and keeps the other files", p.returncode == 0 and
          sorted(os.listdir(mine)) == ["config.json", "generation_config.json", "keep.txt", "model.safetensors",
                                       "tokenizer.json", "tokenizer_config.json"], p.stderr[-300:])
    p = run(titan, "convert", "from-hf", hf, mine, "--force")
    ok, detail = refused(p, "not empty and not a checkpoint")
    check("convert from-hf into a folder of other files: refused even with --force", ok, detail)
    conv = os.path.join(tmp, "conv", "step-0")
    p = run(titan, "convert", "from-hf", hf, conv)
    check("convert from-hf into a new folder", p.returncode == 0, p.stderr[-300:])
    p = run(titan, "convert", "from-hf", hf, conv)
    ok, detail = refused(p, "model only", "--force")
    check("... again into that model-only step folder: refused without --force", ok, detail)
    p = run(titan, "convert", "from-hf", hf, conv, "--force")
    check("... replaced with --force", p.returncode == 0 and os.path.exists(os.path.join(conv, "metadata.json"))
          and not glob.glob(conv + ".*"), p.stderr[-300:])
    os.makedirs(os.path.join(tmp, "empty"))
    p = run(titan, "convert", "from-hf", hf, os.path.join(tmp, "empty"))
    check("convert from-hf into an empty folder", p.returncode == 0, p.stderr[-300:])

    dump = os.path.join(tmp, "from_hf")
    os.makedirs(os.path.join(dump, "checkpoint", "step-2"))
    open(os.path.join(dump, "checkpoint", "step-2", "README"), "w").write("mine\n")
    p = train(titan, dump, "--checkpoint.enable", "--checkpoint.interval", "10", "--training.steps", "2",
              "--checkpoint.initial_load_in_hf", "--checkpoint.initial_load_path", hf)
    ok, detail = refused(p, "step-2 already exists")
    check("a start from Hugging Face weights that would save over a user's step-2/ is refused at its start",
          ok and "step:" not in p.stdout and os.listdir(os.path.join(dump, "checkpoint", "step-2")) == ["README"], detail)

    # ---- 3. a checkpoint of another model is refused, naming the argument -------------------------
    p = train(titan, os.path.dirname(os.path.dirname(pristine)), "--checkpoint.enable", "--checkpoint.load_only",
              "--training.steps", "7",
              "--model.n_layers", "1")
    ok, detail = refused(p, "n_layers = 2", "n_layers = 1")
    check("a checkpoint saved with n_layers 2 resumed with n_layers 1: refused naming both values",
          ok and "Resuming" not in p.stdout, detail)
    # Without the model's arguments in metadata.json, the extra layer's tensors are still caught.
    noargs = os.path.join(tmp, "noargs")
    shutil.copytree(pristine, os.path.join(noargs, "checkpoint", "step-6"))
    mpath = os.path.join(noargs, "checkpoint", "step-6", "metadata.json")
    m = json.load(open(mpath))
    del m["model"]["args"]
    json.dump(m, open(mpath, "w"))
    p = train(titan, noargs, "--checkpoint.enable", "--checkpoint.load_only", "--training.steps", "7",
              "--model.n_layers", "1")
    ok, detail = refused(p, "model.layers.1.", "does not have")
    check("a saved model tensor the run's model lacks is refused", ok, detail)
    m["contents"].append("extras")
    json.dump(m, open(mpath, "w"))
    p = run(titan, "checkpoint", "info", os.path.join(noargs, "checkpoint", "step-6"))
    ok, detail = refused(p, "\"extras\"", "not a part of a checkpoint")
    check("metadata.json with an unknown contents part is malformed", ok, detail)

    # ---- 4. a model-only export is neither resumed from nor overwritten -----------------------------
    dump = os.path.join(tmp, "export")
    ck = os.path.join(dump, "checkpoint")
    p = train(titan, dump, "--checkpoint.enable", "--checkpoint.interval", "10", "--checkpoint.last_save_model_only",
              "--training.steps", "2")
    check("a run ending in a model-only export", p.returncode == 0 and steps_in(ck) == ["step-2"], p.stderr[-300:])
    before = tree(ck)
    p = train(titan, dump, "--checkpoint.enable", "--checkpoint.interval", "10", "--checkpoint.last_save_model_only",
              "--training.steps", "2")
    ok, detail = refused(p, "step-2 already exists", "model-only export")
    check("run again: refused, the export neither loaded nor overwritten", ok and tree(ck) == before
          and "Loaded the checkpoint" not in p.stdout, detail)

    # ---- 5. one live run per checkpoint folder, whatever the dump folders --------------------------
    shared = os.path.join(tmp, "shared_ck")
    first = subprocess.Popen([titan, "train", *BASE, "--job.dump_folder", os.path.join(tmp, "run_a"),
                              "--checkpoint.enable", "--checkpoint.folder", shared, "--checkpoint.interval", "1000",
                              "--training.steps", "100000"], cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        lock = os.path.join(shared, ".titan.lock")
        deadline = time.time() + 120
        while time.time() < deadline and first.poll() is None and not (os.path.exists(lock) and os.path.getsize(lock)):
            time.sleep(0.1)
        started = first.poll() is None and os.path.exists(lock) and os.path.getsize(lock) > 0
        p = train(titan, os.path.join(tmp, "run_b"), "--checkpoint.enable", "--checkpoint.folder", shared,
                  "--training.steps", "2")
        ok, detail = refused(p, "checkpoint.folder", "in use by another live run", "pid")
        check("a second run into another dump folder but the same checkpoint.folder is refused", started and ok,
              detail)
    finally:
        first.kill()
        first.wait()

    # ---- 6. a failed save removes its partial folder and names the reason -----------------------------
    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    dump = os.path.join(tmp, "full")
    ck = os.path.join(dump, "checkpoint")
    for attempt in (1, 2):
        p = train(titan, dump, "--checkpoint.enable", "--checkpoint.interval", "1", "--training.steps", "1",
                  preexec=small_files)
        ok, detail = refused(p, "File too large", "rank-00000.safetensors")
        check(f"a save that cannot be written (try {attempt}): exit 2 naming the file and the reason", ok, detail)
        check(f"... and no step-*.partial-* folder is left (try {attempt})", steps_in(ck) == [], str(steps_in(ck)))

    # ---- 7. metrics on a full disk: one warning, the run goes on ---------------------------------------
    dump = os.path.join(tmp, "devfull")
    os.makedirs(dump)
    os.symlink("/dev/full", os.path.join(dump, "metrics.jsonl"))
    p = train(titan, dump, "--training.steps", "3")
    err = p.stdout + p.stderr
    check("metrics.jsonl on a full disk: exit 0, all steps, one warning naming the file and the reason",
          p.returncode == 0 and "step:  3" in err and err.count("cannot write") == 1
          and "metrics.jsonl: No space left on device" in err, f"rc={p.returncode} {err[-800:]}")

    # ==== checks that said "fine" when it was not =====================================================
    # ---- 8. checkpoint info checks what loading checks ------------------------------------------
    def edited(name: str, folder_name: str, edit) -> str:
        d = os.path.join(tmp, "info_" + name, folder_name)
        shutil.copytree(pristine, d)
        mp = os.path.join(d, "metadata.json")
        m = json.load(open(mp))
        edit(m)
        json.dump(m, open(mp, "w"))
        return d

    def set_dtype(m):
        m["tensors"]["model.norm.weight"]["dtype"] = "F16"

    def set_shape(m):
        t = m["tensors"]["model.norm.weight"]
        t["global_shape"] = [128]
        t["chunks"][0]["sizes"] = [128]

    def drop_chunks(m):
        m["tensors"]["model.norm.weight"]["chunks"] = []

    def half_chunk(m):
        m["tensors"]["model.norm.weight"]["chunks"][0]["sizes"] = [128]

    def twice(m):
        c = m["tensors"]["model.norm.weight"]["chunks"]
        c.append(dict(c[0]))

    for what, folder_name, edit, needles in [
            ("a dtype metadata.json and the shard disagree on", "step-6", set_dtype, ["holds model.norm.weight as F32",
                                                                                      "metadata.json says F16"]),
            ("a shape metadata.json and the shard disagree on", "step-6", set_shape, ["[256]", "metadata.json says F32 [128]"]),
            # (loading meets the model's shape check first: "holds model.norm.weight with shape [128] but ...")
            ("a tensor without chunks", "step-6", drop_chunks, ["model.norm.weight", "no chunks"]),
            ("a gap in a tensor", "step-6", half_chunk, ["cover 128 of its 256 elements"]),
            ("overlapping chunks", "step-6", twice, ["chunks 0 and 1 overlap"]),
            ("a step that is not the folder's", "step-7", lambda m: None, ["records step 6 but the folder is step-7"])]:
        d = edited(what.replace(" ", "_").replace("'", ""), folder_name, edit)
        p = run(titan, "checkpoint", "info", d)
        ok, detail = refused(p, *needles)
        check(f"checkpoint info on {what}: an error, not 'verified'", ok and "verified" not in p.stdout, detail)
        p = train(titan, os.path.join(os.path.dirname(d), "run"), "--checkpoint.enable",
                  "--checkpoint.load_only",
                  "--checkpoint.initial_load_path", d, "--no-checkpoint.initial_load_model_only", "--training.steps", "8")
        ok, detail = refused(p, *(needles if edit is not set_shape else ["model.norm.weight with shape [128]"]))
        check(f"... loading it is refused too", ok, detail)

    # ---- 9. convert from-hf checks config.json and the safetensors header -------------------------
    def hf_copy(name: str) -> str:
        d = os.path.join(tmp, "hf_" + name)
        shutil.copytree(hf, d)
        return d

    def edit_config(d: str, **kv) -> None:
        c = json.load(open(os.path.join(d, "config.json")))
        c.update(kv)
        json.dump(c, open(os.path.join(d, "config.json"), "w"))

    def edit_header(d: str, edit) -> None:
        path = os.path.join(d, "model.safetensors")
        raw = bytearray(open(path, "rb").read())
        n = int.from_bytes(raw[:8], "little")
        h = json.loads(raw[8:8 + n])
        edit(h)
        text = json.dumps(h, separators=(",", ":")).encode()
        assert len(text) <= n
        raw[8:8 + n] = text + b" " * (n - len(text))
        open(path, "wb").write(bytes(raw))

    def transpose(h):
        t = h["model.layers.0.mlp.gate_proj.weight"]
        t["shape"] = t["shape"][::-1]

    def overlap(h):
        h["model.layers.0.post_attention_layernorm.weight"]["data_offsets"] = \
            h["model.layers.0.input_layernorm.weight"]["data_offsets"]

    d = hf_copy("vocab")
    edit_config(d, vocab_size=1e12)
    hf_cases = [("vocab_size 1e12 beside a 2048-row embedding", d, ["embed_tokens.weight has shape [2048, 256]"])]
    d = hf_copy("fewer_layers")
    edit_config(d, num_hidden_layers=1)
    hf_cases.append(("num_hidden_layers 1 beside a file with two layers", d, ["model.layers.1.", "does not have"]))
    d = hf_copy("transposed")
    edit_header(d, transpose)
    hf_cases.append(("a shape changed in the header", d, ["gate_proj.weight has shape"]))
    d = hf_copy("overlap")
    edit_header(d, overlap)
    hf_cases.append(("overlapping data_offsets", d, ["overlap"]))
    for what, d, needles in hf_cases:
        out = os.path.join(tmp, "conv_" + os.path.basename(d), "step-0")
        p = run(titan, "convert", "from-hf", d, out)
        ok, detail = refused(p, *needles)
        check(f"convert from-hf with {what}: refused, nothing written", ok and not os.path.exists(out)
              and not glob.glob(out + ".*"), detail)

    # ---- 10. a hand-edited data position past the data ----------------------------------------------
    pos = edited("position", "step-6", lambda m: m["scalars"]["dataloader"]["source"].update(index=10 ** 15))
    p = train(titan, os.path.join(tmp, "position_run"), "--checkpoint.enable", "--checkpoint.load_only",
              "--checkpoint.initial_load_path", pos, "--no-checkpoint.initial_load_model_only", "--training.steps", "8")
    ok, detail = refused(p, "source.index is 1000000000000000", "past the 20000 documents")
    check("a data position past the data (source.index = 1e15) is refused naming the field", ok, detail)

    # ---- 11. the dry run reads the data as a start does ------------------------------------------
    empty = os.path.join(tmp, "empty.txt")
    open(empty, "w").close()
    data_args = ["--training.dataset", "text", "--training.dataset_path", empty]
    start = train(titan, os.path.join(tmp, "empty_run"), *data_args, "--training.steps", "1")
    dry = train(titan, os.path.join(tmp, "empty_dry"), *data_args, "--job.dry_run")
    ok, detail = refused(dry, "yields no text")
    check("the dry run refuses an empty data file as a start does", ok and refused(start, "yields no text")[0],
          detail + " / start: " + start.stderr[-300:])

    # ==== signals, launchers, resources ================================================================
    # ---- 12. a stop request at any moment after start-up: every rank stops together ----------------
    def two_ranks(dump: str, *extra: str) -> list[subprocess.Popen]:
        port = free_port()
        os.makedirs(dump, exist_ok=True)
        return [subprocess.Popen([titan, "train", *BASE, "--job.dump_folder", dump, *extra], cwd=ROOT,
                                 env=rank_env(r, 2, port), stdout=open(os.path.join(dump, f"out{r}"), "w"),
                                 stderr=subprocess.STDOUT) for r in range(2)]

    def wait_for(paths: list[str], needle: str, timeout: float = 120) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if all(needle in open(p).read() for p in paths):
                return True
            time.sleep(0.005)
        return False

    def catches_sigterm(pid: int, timeout: float = 120) -> bool:
        """Whether the process installed its SIGTERM handler (SigCgt in /proc), within `timeout`."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                for line in open(f"/proc/{pid}/status"):
                    if line.startswith("SigCgt:") and int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1:
                        return True
            except OSError:
                return False
            time.sleep(0.005)
        return False

    for moment, needle in [("start-up", "Starting job"), ("the first step", "Training starts")]:
        for attempt in range(3):
            dump = os.path.join(tmp, f"sigterm_{moment.replace(' ', '_')}_{attempt}")
            procs = two_ranks(dump, "--checkpoint.enable", "--checkpoint.interval", "1000", "--training.steps", "100000",
                              "--comm.init_timeout_seconds", "60")
            outs = [os.path.join(dump, f"out{r}") for r in range(2)]
            try:
                seen = wait_for(outs[:1], needle)  # rank 0 logs for the job
                seen = seen and all(catches_sigterm(p.pid) for p in procs)  # rank 1 past its own start too
                for p in procs:
                    p.send_signal(signal.SIGTERM)
                codes = [p.wait(timeout=120) for p in procs]
            finally:
                for p in procs:
                    p.kill()
            text = [open(o).read() for o in outs]
            ok = seen and codes == [0, 0] and "Received SIGTERM" in text[0]
            if moment == "the first step":
                ok = ok and all("Saved the checkpoint" in t for t in text[:1])
            check(f"SIGTERM to both ranks right after '{needle}' (try {attempt + 1}): both stop together, exit 0",
                  ok, f"seen={seen} codes={codes} {[t[-400:] for t in text]}")
    one = os.path.join(tmp, "sig_one")
    os.makedirs(one)
    log_path = os.path.join(one, "out")
    p = subprocess.Popen([titan, "train", *BASE, "--job.dump_folder", one, "--training.steps", "100000"], cwd=ROOT,
                         env=ENV, stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
    try:
        seen = catches_sigterm(p.pid) and "Training starts" not in open(log_path).read()  # in start-up
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=120)
    finally:
        p.kill()
    out = open(log_path).read()
    check("one process stopped during start-up: exit 0 with a line saying so",
          seen and p.returncode == 0 and ("stopped before training" in out or "stopped after step" in out),
          f"rc={p.returncode} {out[-400:]}")
    # A peer that died is named as such, not an internal error.
    dump = os.path.join(tmp, "peer_died")
    procs = two_ranks(dump, "--training.steps", "100000")
    outs = [os.path.join(dump, f"out{r}") for r in range(2)]
    try:
        seen = wait_for(outs[:1], "step:  2")
        procs[1].kill()
        code = procs[0].wait(timeout=120)
    finally:
        for q in procs:
            q.kill()
    text = open(outs[0]).read()
    check("a peer killed mid-run: the survivor says a process of the job exited or was killed, not 'internal error'",
          seen and code != 0 and "exited or was killed" in text and "internal error" not in text,
          f"seen={seen} rc={code} {text[-500:]}")

    # ---- 13, 14. rendezvous failures: no backtrace; MASTER_PORT in range ------------------------------
    def rank0(extra_env: dict, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
        return subprocess.run([titan, "train", *BASE, "--job.dump_folder", os.path.join(tmp, "rdv"), *args], cwd=ROOT,
                              env=dict(rank_env(0, 2, free_port()), **extra_env), capture_output=True, text=True,
                              timeout=timeout)

    p = rank0({"MASTER_ADDR": "no.such.host.invalid"}, "--comm.init_timeout_seconds", "3")
    ok, detail = refused(p, "no.such.host.invalid")
    check("an unknown MASTER_ADDR: one message, no C++ backtrace", ok and "frame #" not in p.stderr, detail)
    for port in ("99999", "0", "-1", "12x"):
        p = rank0({"MASTER_PORT": port})
        ok, detail = refused(p, "MASTER_PORT")
        check(f"MASTER_PORT={port} is refused naming it", ok and ("out of range" in p.stderr or "not an integer" in
                                                                  p.stderr), detail)

    # ---- 15. config files are regular files of reasonable size ----------------------------------------
    fifo = os.path.join(tmp, "config.fifo")
    os.mkfifo(fifo)
    for what, path in [("/dev/zero", "/dev/zero"), ("a FIFO", fifo)]:
        start = time.time()
        p = run(titan, "train", "--job.config_file", path, timeout=60)
        ok, detail = refused(p, "not a regular file")
        check(f"--job.config_file {what}: refused at once", ok and time.time() - start < 10, detail)
    big = os.path.join(tmp, "big.toml")
    with open(big, "w") as f:
        f.write("# " + "x" * (17 << 20) + "\n")
    ok, detail = refused(run(titan, "train", "--job.config_file", big), "more than a config holds")
    check("a 17 MiB config file is refused", ok, detail)

    # ---- 16. pp-schedule answers within a second and 100 MB of output -------------------------------
    start = time.time()
    ok, detail = refused(run(titan, "pp-schedule", "--schedule", "GPipe", "--stages", "4096", "--microbatches", "4096"),
                         "more than titan pp-schedule simulates")
    check("pp-schedule GPipe 4096 x 4096: refused at once", ok and time.time() - start < 5, detail)
    start = time.time()
    p = run(titan, "pp-schedule", "--schedule", "GPipe", "--stages", "64", "--microbatches", "1024", "--actions")
    took = time.time() - start
    check(f"pp-schedule GPipe 64 x 1024 at the limit: {took:.2f} s, {len(p.stdout) / 1e6:.1f} MB printed, the timeline "
          "summarised", p.returncode == 0 and took < 3 and len(p.stdout) < 100e6 and "is not printed" in p.stdout,
          p.stderr[-300:])

    # ---- 17. tokenizer train: counts have limits, long work shows progress --------------------------
    out = os.path.join(tmp, "tok")
    ok, detail = refused(run(titan, "tokenizer", "train", "--vocab-size", "300", "--synthetic", "99999999999999",
                             "--output", out), "--synthetic 99999999999999 is out of range")
    check("tokenizer train --synthetic 99999999999999: refused", ok, detail)
    p = run(titan, "tokenizer", "train", "--vocab-size", "300", "--synthetic", "2000", "--output", out)
    check("tokenizer train shows its progress (count, rate, time)", p.returncode == 0 and "2000/2000 documents" in
          p.stderr and "documents/s" in p.stderr and "merges/s" in p.stderr, p.stderr[-400:])
    ok, detail = refused(run(titan, "tokenizer", "train", "--vocab-size", "300", "--synthetic", "2000", "--output",
                             out), "already holds tokenizer.json", "--force")
    check("tokenizer train does not replace a tokenizer without --force", ok, detail)

    # ---- 19. torchrun's error file carries our message and exit code --------------------------------
    err_file = os.path.join(tmp, "error.json")
    p = subprocess.run([titan, "train", *BASE, "--training.seq_len", "0"], cwd=ROOT, capture_output=True, text=True,
                       env=dict(ENV, TORCHELASTIC_ERROR_FILE=err_file), timeout=120)
    body = json.load(open(err_file)) if os.path.exists(err_file) else {}
    check("TORCHELASTIC_ERROR_FILE holds the message (torchrun's format) and the exit code",
          p.returncode == 2 and body.get("titan_exit_code") == 2 and
          "training.seq_len" in body.get("message", {}).get("message", "") and
          "timestamp" in body.get("message", {}).get("extraInfo", {}), str(body)[:400])

    # ---- 20. messages ------------------------------------------------------------------------------
    p = run(titan, "train", "--job.config_file", "bad\x01\x1bname.toml")
    check("control bytes in a user's value are shown escaped", p.returncode == 2 and "\\x01\\x1b" in p.stderr
          and "\x1b" not in p.stderr, repr(p.stderr[-300:]))
    p = run(titan, "--help")
    check("titan --help names convert from-dcp", p.returncode == 0 and "from-dcp" in p.stdout, p.stdout[-300:])
    for args in (["--version"], ["version"], ["help"]):
        p = run(titan, *args)
        check(f"titan {args[0]}: exit 0", p.returncode == 0 and p.stdout.strip(), p.stderr[-200:])

    p = subprocess.run([titan, "train", *BASE, "--job.dry_run", "--parallelism.tensor_parallel_degree", "2",
                        "--parallelism.data_parallel_shard_degree", "1"], cwd=ROOT, capture_output=True, text=True,
                       env=rank_env(0, 3, free_port()), timeout=120)
    ok, detail = refused(p, "tp=2 multiply to 2, but there are 3 processes")
    check("degrees that do not multiply to the world size: said once, plainly", ok and "world size 3" not in p.stderr,
          detail)
    ok, detail = refused(run(titan, "data", "batches", *BASE, "--batches", "-3"), "--batches -3")
    check("data batches --batches -3: refused", ok, detail)
    linked = os.path.join(tmp, "linked")
    os.makedirs(linked)
    open(os.path.join(linked, "a.txt"), "w").write("Some text.\n")
    os.symlink(os.path.join(tmp, "gone.txt"), os.path.join(linked, "b.txt"))
    ok, detail = refused(run(titan, "data", "batches", *BASE, "--training.dataset", "text", "--training.dataset_path",
                             linked), "b.txt is a link to", "does not exist")
    check("a dangling link in a data folder is reported, not skipped", ok, detail)
    ok, detail = refused(run(titan, "pp-schedule", "--schedule", "1F1B", "--stages", "2", "--microbatches", "4",
                             "--csv", tmp), "not a file (a folder?)")
    check("a schedule CSV path that is a folder is named as such", ok, detail)

    long_documents(titan, tmp)
    run_train_script(tmp)
    resume_logs(titan, tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    return checks.summary()


def run_train_script(tmp: str) -> None:
    """run_train.sh: no CMake noise once configured, LOG_RANK picks the ranks shown, a user's error
    on the ranks is exit 2. Run from a folder of its own (outputs land there)."""
    work = os.path.join(tmp, "run_train")
    os.makedirs(work)
    for entry in ("configs", "assets"):
        os.symlink(os.path.join(ROOT, entry), os.path.join(work, entry))
    script = os.path.join(ROOT, "run_train.sh")
    small = ["--training.steps", "1", "--training.seq_len", "32", "--training.local_batch_size", "2",
             "--model.n_layers", "1"]
    p = subprocess.run([script, *small], cwd=work, env=ENV, capture_output=True, text=True, timeout=600)
    check("run_train.sh: trains from the current folder, no CMake output once configured",
          p.returncode == 0 and os.path.isdir(os.path.join(work, "outputs")) and "CMake" not in p.stderr
          and "configuring" not in p.stderr, p.stderr[-500:])
    p = subprocess.run([script, *small], cwd=work, env=dict(ENV, NGPU="2", LOG_RANK="1"), capture_output=True,
                       text=True, timeout=600)
    out = p.stdout + p.stderr
    check("NGPU=2 LOG_RANK=1 ./run_train.sh shows rank 1's lines, not rank 0's",
          p.returncode == 0 and "[rank1]:" in out and "[rank0]:" not in out, out[-500:])
    p = subprocess.run([script, *small, "--training.steps", "0"], cwd=work, env=dict(ENV, NGPU="2"),
                       capture_output=True, text=True, timeout=600)
    check("NGPU=2 ./run_train.sh with a bad value exits 2", p.returncode == 2, (p.stdout + p.stderr)[-500:])


def resume_logs(titan: str, tmp: str) -> None:
    """A run without debug.seed, resumed: the log says the state came from the checkpoint."""
    at = BASE.index("--debug.seed")
    no_seed = BASE[:at] + BASE[at + 2:]
    dump = os.path.join(tmp, "seedless")
    args = [*no_seed, "--job.dump_folder", dump, "--checkpoint.enable", "--checkpoint.interval", "2"]
    p = run(titan, "train", *args, "--training.steps", "2")
    check("a first run without debug.seed says it drew a random seed",
          p.returncode == 0 and "using random seed" in p.stderr + p.stdout, p.stderr[-300:])
    p = run(titan, "train", *args, "--training.steps", "4")
    out = p.stderr + p.stdout
    check("resumed, it says the state comes from the checkpoint, not that it uses a random seed",
          p.returncode == 0 and "come from the checkpoint" in out and "using random seed" not in out, out[-600:])
    check("... and what differs from the checkpoint's run (training.steps 2 -> 4, the schedule)",
          "This run differs from the checkpoint's:" in out and "training.steps 2 -> 4" in out
          and "learning-rate schedule" in out and "layout" not in out.split("differs from the checkpoint's:")[-1],
          out[-600:])


def peak_rss_mb(titan: str, *args: str) -> tuple[float, int]:
    """Runs titan and returns its own peak resident memory (MB) and exit code."""
    p = subprocess.Popen([titan, *args], cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 1024, p.returncode


def long_documents(titan: str, tmp: str) -> None:
    """A 30 MB JSON line: its tokens are streamed a piece at a time (docs/datasets.md)."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    line = (text * (30_000_000 // len(text) + 1))[:30_000_000]
    for name, body in (("short", "A short document."), ("long", line)):
        with open(os.path.join(tmp, name + ".jsonl"), "w", encoding="utf-8") as f:
            for doc in ("A short first document.", body, "A short last document."):
                f.write(json.dumps({"text": doc}) + "\n")
    line_mb = os.path.getsize(os.path.join(tmp, "long.jsonl")) / 1e6
    for what, args in (("data batches", ["data", "batches", *BASE, "--training.dataset", "text", "--batches", "4",
                                         "--training.dataset_path"]),
                       ("data tokenize", ["data", "tokenize", "--tokenizer", "assets/tokenizer", "--threads", "1",
                                          "--output"])):
        peaks = {}
        for name in ("short", "long"):
            extra = [os.path.join(tmp, name + ".jsonl")]
            if what == "data tokenize":
                extra = [os.path.join(tmp, "shards-" + name), *extra]
            peaks[name], code = peak_rss_mb(titan, *args, *extra)
            check(f"{what} on the {name} file exits 0", code == 0, str(code))
        grown = peaks["long"] - peaks["short"]
        # Tokens held whole would add about 10 to 13 times the line; the text itself, read and
        # decoded from JSON, about 2.6 times.
        check(f"{what}: a {line_mb:.0f} MB line adds {grown:.0f} MB to the peak ({grown / line_mb:.1f}x the line, "
              f"at most 4x)", grown < 4 * line_mb, f"{peaks}")


if __name__ == "__main__":
    sys.exit(main())
