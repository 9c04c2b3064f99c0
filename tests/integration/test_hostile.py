#!/usr/bin/env python3
"""Hostile inputs and run hygiene (docs/reliability.md): each case is a mistake or an accident a
user met, and each checks the one clear error (exit 2, no C++ backtrace, no "internal error"),
or the guard that now catches it.

Usage: python3 tests/integration/test_hostile.py --titan build/titan
Prints one line per check and `N passed, N failed`; exits 0 only if none failed.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from launch import scratch_dir  # noqa: E402
from launch import ROOT, Checks, free_port, rank_env  # noqa: E402

DEBUG = "configs/llama3/debug_model.toml"
BASE = ["--job.config_file", DEBUG, "--training.mixed_precision_param", "float32", "--training.seq_len", "64",
        "--training.local_batch_size", "2", "--training.steps", "3", "--activation_checkpoint.mode", "none",
        "--debug.seed", "1"]
TOKENIZER = os.path.join(ROOT, "assets", "tokenizer")
ENV = dict(os.environ, OMP_NUM_THREADS="1")
checks = Checks()
check = checks.check


def run(titan: str, *args: str, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([titan, *args], cwd=ROOT, env=dict(ENV, **(env or {})), capture_output=True, text=True,
                          timeout=timeout)


def clean_error(p: subprocess.CompletedProcess, *needles: str, code: int = 2) -> tuple[bool, str]:
    """One `titan: error`, the needles in it, the exit code, and no backtrace or internal error."""
    err = p.stderr
    ok = (p.returncode == code and err.count("titan: error") == 1 and all(n in err for n in needles)
          and "internal error" not in err and "Exception raised from" not in err and "frame #" not in err)
    return ok, f"rc={p.returncode} stderr={err[-700:]!r}"


def expect(titan: str, name: str, args: list[str], *needles: str, code: int = 2, timeout: int = 120) -> None:
    start = time.time()
    p = run(titan, *args, timeout=timeout)
    ok, detail = clean_error(p, *needles, code=code)
    check(name, ok, detail + f" ({time.time() - start:.1f} s)")


def write_tokenizer(folder: str, edit) -> str:
    """A copy of the project's tokenizer with `edit(tokenizer_json)` applied."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(TOKENIZER, "tokenizer.json")) as f:
        j = json.load(f)
    edit(j)
    with open(os.path.join(folder, "tokenizer.json"), "w") as f:
        json.dump(j, f)
    shutil.copy(os.path.join(TOKENIZER, "tokenizer_config.json"), folder)
    return folder


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--titan", required=True)
    opts = ap.parse_args()
    titan = os.path.abspath(opts.titan)
    tmp = scratch_dir("titan_hostile_")

    # ---- 2. sizes that cannot fit: the dry run allocates nothing, a start refuses before allocating
    # (first, so that this process's children's peak memory is this run's)
    toml = os.path.join(tmp, "huge.toml")
    with open(os.path.join(ROOT, DEBUG)) as f:
        text = f.read().replace("seq_len = 2048", "seq_len = 3000000000")
    assert "seq_len = 3000000000" in text
    with open(toml, "w") as f:
        f.write(text)
    start = time.time()
    p = run(titan, "train", "--job.config_file", toml, "--job.dry_run", timeout=120)
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    ok, detail = clean_error(p, "more than", "training.seq_len")
    check("seq_len = 3e9 in a TOML: the dry run refuses it, quickly, allocating nothing",
          ok and time.time() - start < 30 and peak_mib < 2048, f"{detail} peak {peak_mib:.0f} MiB")
    expect(titan, "--training.seq_len 1e12 refused before allocating",
           ["train", *BASE, "--training.seq_len", "1000000000000"], "more than", "training.seq_len")
    expect(titan, "--model.vocab_size 1e11 refused before allocating",
           ["train", *BASE, "--model.vocab_size", "100000000000"], "more than", "parameters")
    p = run(titan, "train", *BASE, "--job.dry_run")
    check("the dry run prints its memory estimate", p.returncode == 0 and "Memory per rank (estimate)" in p.stdout,
          p.stdout[-500:] + p.stderr[-300:])

    # ---- 1. validation longer than training: refused by the dry run and by a start
    for dry in ([], ["--job.dry_run"]):
        expect(titan, "validation.seq_len > training.seq_len refused" + (" (dry run)" if dry else ""),
               ["train", *BASE, "--validation.enable", "--validation.seq_len", "256", *dry],
               "validation.seq_len = 256", "training.seq_len = 64")

    # ---- 7. the dry run refuses what training refuses
    expect(titan, "dry run refuses optimizer.name = SGD", ["train", *BASE, "--optimizer.name", "SGD", "--job.dry_run"],
           "optimizer.name", "SGD")
    expect(titan, "dry run refuses an unknown dataset", ["train", *BASE, "--training.dataset", "foo", "--job.dry_run"],
           "training.dataset", "foo")
    expect(titan, "dry run refuses a missing tokenizer",
           ["train", *BASE, "--model.hf_assets_path", os.path.join(tmp, "nowhere"), "--job.dry_run"], "nowhere")

    # ---- 6. non-finite optimizer settings; a non-finite loss stops the run (exit 1) --------------
    for key in ("lr", "eps", "weight_decay"):
        for value in ("inf", "nan"):
            expect(titan, f"--optimizer.{key} {value} refused", ["train", *BASE, f"--optimizer.{key}", value,
                                                                 "--job.dry_run"], f"optimizer.{key}", value)
    dump = os.path.join(tmp, "nan_run")
    diverge = ["train", *BASE, "--optimizer.lr", "1e30", "--training.max_norm", "1e30", "--training.steps", "6",
               "--lr_scheduler.warmup_steps", "0", "--job.dump_folder", dump]
    p = run(titan, *diverge)
    rows = []
    if os.path.exists(os.path.join(dump, "metrics.jsonl")):
        with open(os.path.join(dump, "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    ok, detail = clean_error(p, "non-finite", "Training stopped", code=1)
    finite = lambda v: v is not None and abs(v) < 1e300  # noqa: E731 (metrics.jsonl writes NaN as null)
    bad_step = next((r["step"] for r in rows if not (finite(r["loss"]) and finite(r["grad_norm"]))), None)
    check("a non-finite loss or grad norm stops the run with exit 1, naming the step, after its metrics",
          ok and bad_step is not None and rows[-1]["step"] == bad_step and f"step {bad_step}:" in p.stderr,
          f"{detail} rows={[(r['step'], r['loss'], r['grad_norm']) for r in rows]}")
    # A non-finite grad norm must come with the parameter's name (torchtitan's FQN); a finite one without.
    named = re.search(r"the first parameter with a non-finite gradient is ([\w.]+?)\.(?:\s|$)", p.stderr)
    grad_nonfinite = bool(rows) and not finite(rows[-1]["grad_norm"])
    fqn = r"(tok_embeddings|norm|output|layers\.\d+\.(attention|feed_forward|attention_norm|ffn_norm)(\.\w+)?)\.weight"
    check("... and names the first parameter with a non-finite gradient, when the gradient is",
          bool(rows) and ((named is not None and re.fullmatch(fqn, named.group(1)) is not None) if grad_nonfinite
                          else named is None), f"grad_norm {rows[-1]['grad_norm'] if rows else None}: {p.stderr[-400:]}")
    shutil.rmtree(dump, ignore_errors=True)
    p = run(titan, *diverge, "--training.stop_on_nonfinite=false")
    check("training.stop_on_nonfinite = false keeps going", p.returncode == 0 and "step:  6" in p.stdout,
          p.stderr[-400:])

    # ---- 3. one live run per dump folder; a rerun appends its metrics -------------------------
    dump = os.path.join(tmp, "shared_dump")
    first = subprocess.Popen([titan, "train", *BASE, "--training.steps", "100000", "--job.dump_folder", dump],
                             cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not os.path.exists(os.path.join(dump, "metrics.jsonl")):
        time.sleep(0.2)
    expect(titan, "a second live run into the same dump folder is refused, naming the holder",
           ["train", *BASE, "--job.dump_folder", dump], "in use by another live run", f"pid {first.pid}")
    first.send_signal(signal.SIGTERM)
    first.wait(timeout=120)
    with open(os.path.join(dump, "metrics.jsonl")) as f:
        before = f.read()
    p = run(titan, "train", *BASE, "--job.dump_folder", dump)
    with open(os.path.join(dump, "metrics.jsonl")) as f:
        lines = f.read().splitlines()
    try:
        rows = [json.loads(line) for line in lines]
    except json.JSONDecodeError as e:
        rows = []
        print(f"bad JSON: {e}")
    runs = {r.get("run_id") for r in rows}
    check("a rerun into a used folder appends (earlier rows kept, every row valid JSON with its run id)",
          p.returncode == 0 and "\n".join(lines).startswith(before.rstrip("\n")) and len(runs) == 2
          and None not in runs, f"rc={p.returncode} runs={runs} {p.stderr[-300:]}")

    # ---- 4. gzip: every member read, damage anywhere refused ----------------------------------
    docs = [json.dumps({"text": f"Document {i}: the quick brown fox jumps over the lazy dog."}) + "\n"
            for i in range(40)]
    one = gzip.compress("".join(docs[:20]).encode())
    two = gzip.compress("".join(docs[20:]).encode())
    gz_dir = os.path.join(tmp, "gz")
    os.makedirs(gz_dir)

    def tokenize(name: str, data: bytes) -> subprocess.CompletedProcess:
        path = os.path.join(gz_dir, name)
        with open(path, "wb") as f:
            f.write(data)
        return run(titan, "data", "tokenize", "--tokenizer", TOKENIZER, "--output", os.path.join(tmp, "out_" + name),
                   path)

    p = tokenize("two.jsonl.gz", one + two)
    check("a two-member .jsonl.gz is read whole", p.returncode == 0 and "40 documents" in p.stdout,
          p.stdout + p.stderr[-300:])
    damaged = bytearray(one + two)
    damaged[len(one) + len(two) // 2] ^= 0xFF
    ok, detail = clean_error(tokenize("damaged.jsonl.gz", bytes(damaged)), "corrupt", "gzip member 2")
    check("a damaged second gzip member is refused", ok, detail)
    ok, detail = clean_error(tokenize("trailing.jsonl.gz", one + two + b"garbage!"), "not gzip")
    check("trailing garbage after the last gzip member is refused", ok, detail)
    ok, detail = clean_error(tokenize("cut.jsonl.gz", (one + two)[:-9]), "truncated")
    check("a truncated gzip file is refused", ok, detail)

    # ---- 5. tokenize: a changed input is tokenized again; shards and manifests are checked -----
    text_dir = os.path.join(tmp, "text")
    os.makedirs(text_dir)
    src = os.path.join(text_dir, "a.jsonl")
    with open(src, "w") as f:
        f.write("".join(docs))
    out = os.path.join(tmp, "shards")
    p1 = run(titan, "data", "tokenize", "--tokenizer", TOKENIZER, "--output", out, text_dir)
    stat = os.stat(src)
    with open(src, "w") as f:  # same size, same modification time, other text
        f.write("".join(d.replace("quick", "quack") for d in docs))
    os.utime(src, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    p2 = run(titan, "data", "tokenize", "--tokenizer", TOKENIZER, "--output", out, text_dir)
    check("tokenize remakes the shard of an input that changed (same size and time)",
          p1.returncode == 0 and p2.returncode == 0 and "(0 already done)" in p2.stdout
          and "(1 already done)" in run(titan, "data", "tokenize", "--tokenizer", TOKENIZER, "--output", out,
                                        text_dir).stdout, p2.stdout + p2.stderr[-300:])
    shard = os.path.join(out, "shard-00000.bin")
    with open(shard, "r+b") as f:
        f.seek(100)
        b = f.read(1)
        f.seek(100)
        f.write(bytes([b[0] ^ 0x01]))
    expect(titan, "a damaged token shard is refused on open (checksum)",
           ["data", "batches", *BASE, "--training.dataset_path", out, "--model.hf_assets_path", TOKENIZER],
           "damaged", "CRC-32C")
    p = run(titan, "data", "tokenize", "--tokenizer", TOKENIZER, "--output", out, text_dir)
    check("the next tokenize remakes the damaged shard", p.returncode == 0 and "(0 already done)" in p.stdout,
          p.stdout + p.stderr[-300:])
    with open(os.path.join(out, "manifest.json"), "w") as f:
        f.write("{not json")
    expect(titan, "a malformed manifest is an error (tokenize)",
           ["data", "tokenize", "--tokenizer", TOKENIZER, "--output", out, text_dir], "manifest.json", "malformed")
    expect(titan, "a malformed manifest is an error (training data)",
           ["data", "batches", *BASE, "--training.dataset_path", out, "--model.hf_assets_path", TOKENIZER],
           "manifest.json", "malformed")
    state = os.path.join(tmp, "state.json")
    for bad in ("[1, 2]", '{"version": 1, "kind": "text"}', '{"version": "x"}'):
        with open(state, "w") as f:
            f.write(bad)
        expect(titan, f"a malformed saved data position is an error: {bad}",
               ["data", "batches", *BASE, "--load-state", state], "saved data position")

    # ---- 8, 11. tokenizer.json: two tokens with one id; ids far past the vocabulary -------------
    def dup(j):
        vocab = j["model"]["vocab"]
        a, b = list(vocab)[300], list(vocab)[301]
        vocab[b] = vocab[a]
    expect(titan, "tokenizer.json giving two tokens one id is refused",
           ["tokenizer", "info", "--tokenizer", write_tokenizer(os.path.join(tmp, "dup"), dup)], "gives the id")

    def far(j):
        j["added_tokens"][0]["id"] = 1 << 30
    start = time.time()
    expect(titan, "an added token with id 2^30 is refused (no GBs allocated)",
           ["tokenizer", "info", "--tokenizer", write_tokenizer(os.path.join(tmp, "far"), far)], "out of range")

    def clash(j):
        j["added_tokens"][0]["id"] = 100
    expect(titan, "an added token taking a vocabulary token's id is refused",
           ["tokenizer", "info", "--tokenizer", write_tokenizer(os.path.join(tmp, "clash"), clash)], "has the id")

    model = os.path.join(tmp, "typo.model")
    with open(model, "w") as f:
        f.write("AA== 0\nAQ== 33333373\n")  # a rank typed with extra digits
    start = time.time()
    expect(titan, "a tiktoken rank far past the ranks listed is refused (no GBs allocated)",
           ["tokenizer", "info", "--tokenizer", model], "is beyond the 2 ranks")

    # ---- 9. --help and -h: usage on stdout, exit 0; unknown options exit 2 --------------------------
    # Every command's, in one process: the unit tests Cli.*. Here the program itself, for a few.
    for cmd in (["train"], ["data", "batches"], []):
        for flag in ("--help", "-h"):
            p = run(titan, *cmd, flag)
            check(f"titan {' '.join(cmd + [flag])}: one usage line, exit 0",
                  p.returncode == 0 and p.stdout.lower().count("usage:") == 1 and p.stderr == "",
                  f"rc={p.returncode} out={p.stdout[:200]!r} err={p.stderr[-300:]!r}")
    expect(titan, "titan data tokenize --bogus: exit 2", ["data", "tokenize", "--bogus"], "--bogus")
    expect(titan, "titan train --bogus.key: exit 2", ["train", "--bogus.key", "1"], "bogus")

    # ---- 10. comm-report on malformed dumps -----------------------------------------------------
    good = {"rank": 0, "world_size": 2, "reason": "timeout", "run_id": 1, "dumped_at": 1.0,
            "entries": [{"group": "world", "seq": 0, "op": "all_reduce", "dtype": "float", "state": "completed",
                         "numel": 4}]}
    variants = {
        "a float rank": dict(good, rank=0.5),
        "a string seq": dict(good, entries=[dict(good["entries"][0], seq="x")]),
        "a rank outside the world": dict(good, rank=7),
        "no entries": {k: v for k, v in good.items() if k != "entries"},
        "not an object": [1, 2, 3],
    }
    for name, body in variants.items():
        folder = os.path.join(tmp, "traces_" + name.replace(" ", "_"))
        os.makedirs(folder)
        with open(os.path.join(folder, "rank_0"), "w") as f:
            json.dump(body, f)
        expect(titan, f"comm-report on a dump with {name}: a clear error", ["comm-report", folder],
               "not a flight-recorder file")
    folder = os.path.join(tmp, "traces_far")
    os.makedirs(folder)
    for r, seq in ((0, 0), (1, 2**62)):
        with open(os.path.join(folder, f"rank_{r}"), "w") as f:
            json.dump(dict(good, rank=r, entries=[dict(good["entries"][0], seq=seq, state="started")]), f)
    start = time.time()
    p = run(titan, "comm-report", folder, timeout=60)
    check("comm-report with collective numbers far apart answers at once",
          p.returncode == 0 and time.time() - start < 10, f"rc={p.returncode} {p.stderr[-300:]}")

    # ---- checkpoint metadata: checked whole before use ------------------------------------------
    chunk = {"file": "rank-00000.safetensors", "offsets": [0], "sizes": [4], "crc32c": "0a1b2c3d"}
    meta = {"format": "titan.cpp checkpoint", "version": 1, "step": 3, "contents": ["model"],
            "files": {"rank-00000.safetensors": 100}, "tensors": {"model.w": {
                "dtype": "F32", "global_shape": [4], "chunks": [chunk]}}}
    broken = {
        "a float step": dict(meta, step=2.5),
        "a chunk file outside the folder": dict(meta, files={"../x": 1}, tensors={"model.w": dict(
            meta["tensors"]["model.w"], chunks=[dict(chunk, file="../x")])}),
        "a chunk outside its tensor": dict(meta, tensors={"model.w": dict(
            meta["tensors"]["model.w"], chunks=[dict(chunk, offsets=[2])])}),
        "no tensors": {k: v for k, v in meta.items() if k != "tensors"},
    }
    for name, body in broken.items():
        folder = os.path.join(tmp, "ckpt_" + name.replace(" ", "_"), "step-3")
        os.makedirs(folder)
        with open(os.path.join(folder, "metadata.json"), "w") as f:
            json.dump(body, f)
        expect(titan, f"checkpoint metadata with {name}: one clear error", ["checkpoint", "info", folder],
               "metadata.json is malformed")

    # ---- 12. MASTER_PORT taken by another job: every rank of the new job exits 2, quickly -------
    port = free_port()
    long_run = [*BASE, "--training.steps", "100000", "--comm.init_timeout_seconds", "60"]
    other = [subprocess.Popen([titan, "train", *long_run, "--job.dump_folder", os.path.join(tmp, "job_a")], cwd=ROOT,
                              env=rank_env(r, 2, port), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for r in range(2)]
    deadline = time.time() + 120
    while time.time() < deadline and not os.path.exists(os.path.join(tmp, "job_a", "metrics.jsonl")):
        time.sleep(0.2)
    start = time.time()
    mine = [subprocess.Popen([titan, "train", *long_run, "--job.dump_folder", os.path.join(tmp, "job_b")], cwd=ROOT,
                             env=rank_env(r, 2, port), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for r in range(2)]
    results = []
    for p in mine:
        try:
            _, err = p.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
            err += "(hung)"
        results.append((p.returncode, err))
    elapsed = time.time() - start
    for p in other:
        p.send_signal(signal.SIGTERM)
    for p in other:
        try:
            p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
    check("MASTER_PORT in use: rank 0 says so and exits 2",
          results[0][0] == 2 and "already in use" in results[0][1] and "Exception raised from" not in results[0][1],
          f"{results[0][0]} {results[0][1][-400:]!r}")
    check("MASTER_PORT in use: rank 1 does not join the other job (exit 2, names it)",
          results[1][0] == 2 and "another job" in results[1][1], f"{results[1][0]} {results[1][1][-400:]!r}")
    check("... both within 30 s", elapsed < 30, f"{elapsed:.1f} s")

    shutil.rmtree(tmp, ignore_errors=True)
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
