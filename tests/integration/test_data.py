#!/usr/bin/env python3
"""Data pipeline behaviour: exact resume of the loader position in a new process (built-in
synthetic data, .jsonl.zst text, .bin token shards), resume under another data-parallel layout,
shards agreeing with the text they were made from, resumable and thread-independent
`titan data tokenize`, one clear message and exit 2 for bad data, validation, training the debug
model on tinyshakespeare with the Llama 3 tokenizer, and a reproducible repo tokenizer.

Usage: python3 tests/integration/test_data.py --titan build/titan [--assets tests/assets]
Needs SHARED/assets/llama3/tokenizer.model and SHARED/assets/tinyshakespeare/input.txt (exits 77,
skipped, without them). Prints one line per check and `N passed, N failed`; exits 0 only if none
failed.
"""

from __future__ import annotations

import argparse
import filecmp
import gzip
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from launch import scratch_dir  # noqa: E402
import launch  # noqa: E402,F401  (kills whatever this test leaves running when it ends)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEBUG = "configs/llama3/debug_model.toml"
ENV = dict(os.environ, OMP_NUM_THREADS="1")
TRAIN_FAST = ["--job.config_file", DEBUG, "--training.seq_len", "64", "--training.local_batch_size", "2",
              "--training.steps", "2", "--activation_checkpoint.mode", "none", "--debug.seed", "1"]

results: list[tuple[str, bool, str]] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    results.append((name, ok, detail))
    print(f"{'PASS' if ok else 'FAIL'} {name}" + ("" if ok else f": {detail}"), flush=True)


def run(titan: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([titan, *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return subprocess.CompletedProcess([titan, *args], 124, out, f"(timed out after {timeout} s)")


BATCH = re.compile(r"^batch (\d+): ([0-9a-f]{16}) epoch (\d+) first((?: -?\d+)*)$")


def parse_batches(out: str) -> list[tuple[str, int, list[int]]]:
    """(hash, epoch, first tokens) per printed batch, in order."""
    rows = []
    for line in out.splitlines():
        m = BATCH.match(line)
        if m:
            rows.append((m.group(2), int(m.group(3)), [int(t) for t in m.group(4).split()]))
    return rows


def batches(titan: str, cfg: list[str], n: int, *extra: str) -> tuple[subprocess.CompletedProcess, list]:
    p = run(titan, "data", "batches", *cfg, "--batches", str(n), *extra, timeout=120)
    return p, parse_batches(p.stdout)


def expect_error(titan: str, name: str, args: list[str], *needles: str) -> None:
    p = run(titan, *args, timeout=120)
    err = p.stderr
    ok = p.returncode == 2 and all(n in err for n in needles) and err.count("titan: error") == 1
    check(name, ok, f"rc={p.returncode} stderr={err[-600:]!r}")


def write_zst(path: str, data: bytes) -> bool:
    """Writes a checksummed zstd frame; False if neither python zstandard nor the zstd CLI is here."""
    try:
        import zstandard  # type: ignore

        with open(path, "wb") as f:
            f.write(zstandard.ZstdCompressor(level=3, write_checksum=True).compress(data))
        return True
    except ImportError:
        pass
    if shutil.which("zstd"):
        p = subprocess.run(["zstd", "-q", "-f", "--check", "-o", path], input=data, capture_output=True)
        return p.returncode == 0
    return False


def hashes(rows: list) -> list[str]:
    return [h for h, _, _ in rows]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--titan", required=True)
    ap.add_argument("--assets", default=os.path.join(ROOT, "tests", "assets"))
    opts = ap.parse_args()
    titan = os.path.abspath(opts.titan)
    assets = os.path.abspath(opts.assets)
    llama3 = os.path.join(assets, "llama3")
    shakespeare = os.path.join(assets, "tinyshakespeare", "input.txt")
    for need in (os.path.join(llama3, "tokenizer.model"), shakespeare):
        if not os.path.exists(need):
            print(f"SKIP: {need} is absent")
            return 77
    tmp = scratch_dir("titan_data_")

    # ---- the data: tinyshakespeare paragraphs in 3 small files of each kind --------------------
    with open(shakespeare, encoding="utf-8") as f:
        paragraphs = [p.strip("\n") for p in f.read().split("\n\n") if p.strip()]
    paragraphs = [p for p in paragraphs if all(line.strip() for line in p.split("\n"))][:90]
    parts = [paragraphs[i * 30:(i + 1) * 30] for i in range(3)]
    txt_dir = os.path.join(tmp, "txt")
    zst_dir = os.path.join(tmp, "zst")
    os.makedirs(txt_dir)
    os.makedirs(zst_dir)
    have_zst = True
    for i, part in enumerate(parts):
        with open(os.path.join(txt_dir, f"part-{i}.txt"), "w", encoding="utf-8") as f:
            f.write("\n\n".join(part) + "\n")
        body = "".join(json.dumps({"text": p}) + "\n" for p in part).encode()
        have_zst = have_zst and write_zst(os.path.join(zst_dir, f"part-{i}.jsonl.zst"), body)
    # run_tests.sh installs python zstandard: without it the zstd cases fail rather than vanish.
    check("zstd data can be written (python zstandard or the zstd CLI)", have_zst)
    text_dir = zst_dir if have_zst else txt_dir  # the text the shards are made from
    shard_dir = os.path.join(tmp, "shards")
    p = run(titan, "data", "tokenize", "--tokenizer", llama3, "--output", shard_dir, "--threads", "2", text_dir)
    check("tokenize writes 3 shards and a manifest",
          p.returncode == 0 and "3 shards in" in p.stdout and "(0 already done)" in p.stdout
          and all(os.path.exists(os.path.join(shard_dir, f"shard-0000{i}.bin")) for i in range(3))
          and os.path.exists(os.path.join(shard_dir, "manifest.json")),
          f"rc={p.returncode} out={p.stdout[-300:]!r} err={p.stderr[-300:]!r}")
    with open(os.path.join(shard_dir, "manifest.json")) as f:
        entry = json.load(f)["shards"]["shard-00000.bin"]
    first = os.path.join(text_dir, sorted(os.listdir(text_dir))[0])
    check("the manifest records each input's modification time in nanoseconds since 1970",
          entry["input_mtime_ns"] == os.stat(first).st_mtime_ns, f"{entry} vs {os.stat(first).st_mtime_ns}")

    base = ["--job.config_file", DEBUG, "--training.seq_len", "64", "--training.local_batch_size", "2"]
    synthetic = base + ["--training.dataset", "synthetic"]
    zst_cfg = base + ["--model.hf_assets_path", llama3, "--training.dataset", "text",
                      "--training.dataset_path", zst_dir]
    txt_cfg = base + ["--model.hf_assets_path", llama3, "--training.dataset", "text",
                      "--training.dataset_path", txt_dir]
    tok_cfg = base + ["--model.hf_assets_path", llama3, "--training.dataset", "tokens",
                      "--training.dataset_path", shard_dir]

    p = run(titan, "data", "batches", *synthetic, "--batches", "3", "--json", timeout=120)
    _, plain = batches(titan, synthetic, 3)
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    check("data batches --json: every id of each batch, the labels one token on, the same batches",
          p.returncode == 0 and len(lines) == 3 and len(plain) == 3
          and all(len(b["inputs"]) == 2 and len(b["inputs"][0]) == 64 for b in lines)
          and all(b["labels"][r][:-1] == b["inputs"][r][1:] for b in lines for r in range(2))
          and all((b["inputs"][0] + b["inputs"][1])[:8] == plain[i][2] for i, b in enumerate(lines)),
          p.stdout[:300] + p.stderr[-300:])

    # ---- 1. exact resume in a new process --------------------------------------------------------
    cases = [("synthetic", synthetic, 12, 10)]
    if have_zst:
        cases.append((".jsonl.zst", zst_cfg, 12, 16))
    cases += [(".txt", txt_cfg, 12, 16), ("token shards", tok_cfg, 12, 16)]
    full_runs: dict[str, list] = {}
    for name, cfg, n, m in cases:
        p, full = batches(titan, cfg, n + m)
        full_runs[name] = full
        state = os.path.join(tmp, f"state-{len(full_runs)}.json")
        p1, first = batches(titan, cfg, n, "--save-state", state)
        p2, rest = batches(titan, cfg, m, "--load-state", state)
        ok = (p.returncode == p1.returncode == p2.returncode == 0 and len(full) == n + m
              and hashes(first) + hashes(rest) == hashes(full))
        check(f"resume in a new process: {name}", ok,
              f"rc={p.returncode},{p1.returncode},{p2.returncode} full={len(full)} "
              f"err={(p.stderr + p1.stderr + p2.stderr)[-400:]!r}")
        if name != "synthetic":
            crossed = any(e >= 1 for _, e, _ in full) and any(e >= 1 for _, e, _ in rest)
            check(f"resume crosses the end of the data (epoch 1): {name}", crossed,
                  f"epochs={[e for _, e, _ in full]}")

    # ---- 3. shards and text agree; plain .txt paragraphs are documents ---------------------------
    if "token shards" in full_runs and text_dir == zst_dir and ".jsonl.zst" in full_runs:
        check("token shards give the batches of the text they were made from",
              hashes(full_runs["token shards"]) == hashes(full_runs[".jsonl.zst"]),
              f"shards={hashes(full_runs['token shards'])[:3]} text={hashes(full_runs['.jsonl.zst'])[:3]}")
        check("a .txt paragraph is one document (same batches as the JSON lines)",
              hashes(full_runs[".txt"]) == hashes(full_runs[".jsonl.zst"]), "")
    else:
        check("token shards give the batches of the text they were made from",
              hashes(full_runs["token shards"]) == hashes(full_runs[".txt"]), "")
    bos = full_runs[".txt"][0][2][0] if full_runs[".txt"] else None
    check("text documents start with the Llama 3 <|begin_of_text|>", bos == 128000, f"first={bos}")

    # ---- 2. resume under another data-parallel layout --------------------------------------------
    # D=1,B=4 for N batches consumes 4N windows; then D=2,B=2 batch k, rank r holds windows
    # 4N+4k+2r and 4N+4k+2r+1, which are batch 2N+2k+r of an uninterrupted D=1,B=2 run.
    def as_b(cfg: list[str], b: int) -> list[str]:
        return cfg + ["--training.local_batch_size", str(b)]

    n, k_count = 3, 4
    for name, cfg in (("synthetic", synthetic), ("token shards", tok_cfg)):
        state = os.path.join(tmp, f"dp-{name.replace(' ', '_')}.json")
        p0, ref = batches(titan, as_b(cfg, 2), 2 * n + 2 * k_count)
        p1, _ = batches(titan, as_b(cfg, 4), n, "--save-state", state)
        ranks = [batches(titan, as_b(cfg, 2), k_count, "--load-state", state, "--dp-degree", "2", "--dp-rank", str(r))
                 for r in range(2)]
        ok = p0.returncode == p1.returncode == 0 and all(pr.returncode == 0 for pr, _ in ranks)
        bad = []
        for r, (_, rows) in enumerate(ranks):
            if len(rows) != k_count:
                bad.append(f"rank {r}: {len(rows)} batches")
                continue
            for k in range(k_count):
                want = ref[2 * n + 2 * k + r]
                if rows[k][2] != want[2] or rows[k][0] != want[0]:
                    bad.append(f"rank {r} batch {k}: {rows[k][2]} vs {want[2]}")
        check(f"resume with 2 data-parallel ranks after 1: {name}", ok and not bad and len(ref) == 2 * n + 2 * k_count,
              f"{bad[:3]} err={(p0.stderr + p1.stderr + ranks[0][0].stderr + ranks[1][0].stderr)[-400:]!r}")

    # ---- 4. tokenize: resume, threads ------------------------------------------------------------
    first_run = {f: open(os.path.join(shard_dir, f), "rb").read() for f in sorted(os.listdir(shard_dir))}
    os.remove(os.path.join(shard_dir, "shard-00001.bin"))
    with open(os.path.join(shard_dir, "shard-00001.bin.tmp"), "wb") as f:
        f.write(b"TITANTOK garbage from an interrupted run" * 10)
    p = run(titan, "data", "tokenize", "--tokenizer", llama3, "--output", shard_dir, "--threads", "2", text_dir)
    same = all(open(os.path.join(shard_dir, f), "rb").read() == b for f, b in first_run.items()
               if f.endswith(".bin"))
    check("tokenize resumes: 2 already done, shards byte-identical",
          p.returncode == 0 and "3 shards in" in p.stdout and "(2 already done)" in p.stdout and same
          and not os.path.exists(os.path.join(shard_dir, "shard-00001.bin.tmp")),
          f"rc={p.returncode} out={p.stdout[-300:]!r} same={same}")
    p = run(titan, "data", "tokenize", "--tokenizer", llama3, "--output", shard_dir, text_dir)
    check("tokenize again: all 3 already done", p.returncode == 0 and "(3 already done)" in p.stdout,
          p.stdout[-300:])
    one = os.path.join(tmp, "shards-t1")
    p = run(titan, "data", "tokenize", "--tokenizer", llama3, "--output", one, "--threads", "1", text_dir)
    same = p.returncode == 0 and all(
        filecmp.cmp(os.path.join(one, f"shard-0000{i}.bin"), os.path.join(shard_dir, f"shard-0000{i}.bin"), shallow=False)
        for i in range(3))
    check("tokenize --threads 1 and --threads 2 give identical shards", same, p.stderr[-300:])
    # A finished shard damaged afterwards is made again; a rerun with fewer inputs drops the rest.
    with open(os.path.join(one, "shard-00001.bin"), "r+b") as f:
        f.truncate(100)
    p = run(titan, "data", "tokenize", "--tokenizer", llama3, "--output", one, text_dir)
    check("tokenize redoes a damaged finished shard",
          p.returncode == 0 and "(2 already done)" in p.stdout and
          filecmp.cmp(os.path.join(one, "shard-00001.bin"), os.path.join(shard_dir, "shard-00001.bin"), shallow=False),
          f"rc={p.returncode} {p.stdout[-200:]!r} {p.stderr[-300:]!r}")
    first_input = os.path.join(text_dir, sorted(os.listdir(text_dir))[0])
    p = run(titan, "data", "tokenize", "--tokenizer", llama3, "--output", one, first_input)
    with open(os.path.join(one, "manifest.json")) as f:
        listed = sorted(json.load(f)["shards"])
    check("tokenize with fewer inputs removes the other shards",
          p.returncode == 0 and "(1 already done)" in p.stdout and listed == ["shard-00000.bin"] and
          sorted(x for x in os.listdir(one) if x.endswith(".bin")) == ["shard-00000.bin"],
          f"rc={p.returncode} {p.stdout[-200:]!r} listed={listed} files={os.listdir(one)}")
    expect_error(titan, "tokenize into shards of another tokenizer",
                 ["data", "tokenize", "--tokenizer", "assets/tokenizer", "--output", shard_dir, text_dir],
                 shard_dir, "another tokenizer")

    # ---- 5. bad input: exit 2, one message naming the thing --------------------------------------
    def text_at(path: str, *extra: str) -> list[str]:
        return ["data", "batches", *base, "--training.dataset", "text", "--training.dataset_path", path, *extra]

    expect_error(titan, "glob matching nothing", text_at(os.path.join(tmp, "nothing-*.jsonl")),
                 "nothing-*.jsonl", "matches no files")
    empty_dir = os.path.join(tmp, "empty")
    os.makedirs(empty_dir)
    with open(os.path.join(empty_dir, "notes.md"), "w") as f:
        f.write("not data\n")
    expect_error(titan, "folder without data files", text_at(empty_dir), empty_dir, "no data files")
    expect_error(titan, "no such path", text_at(os.path.join(tmp, "missing.jsonl")), "missing.jsonl")

    bad_dir = os.path.join(tmp, "bad")
    os.makedirs(bad_dir)
    filler = [json.dumps({"text": p}) for p in paragraphs[:40]]
    malformed = os.path.join(bad_dir, "malformed.jsonl")
    with open(malformed, "w") as f:
        f.write("\n".join([filler[0], '{"text": "unterminated', *filler[1:]]) + "\n")
    expect_error(titan, "malformed JSON line names file:line", text_at(malformed), "malformed.jsonl:2")
    p, rows = batches(titan, text_at(malformed)[2:], 4, "--training.dataset_skip_malformed")
    check("dataset_skip_malformed skips the line", p.returncode == 0 and len(rows) == 4, p.stderr[-400:])
    p = run(titan, "train", *TRAIN_FAST, "--training.dataset", "text", "--training.dataset_path", malformed,
            "--training.dataset_skip_malformed", "--job.dump_folder", os.path.join(tmp, "skip_run"))
    data_line = [l for l in p.stdout.splitlines() if " - root - INFO - Data: " in l]
    check("train reports the skipped malformed line",
          p.returncode == 0 and len(data_line) == 1 and "skipped 0 blank lines and 1 malformed lines" in data_line[0],
          f"rc={p.returncode} data={data_line} err={p.stderr[-300:]!r}")
    check("Data: line says how long training waited for data",
          bool(data_line) and re.search(r"full passes over .*malformed\.jsonl.*, waiting for data \d+\.\d\d% of step time",
                                        data_line[0]) is not None, f"{data_line}")

    nofield = os.path.join(bad_dir, "content.jsonl")
    with open(nofield, "w") as f:
        f.write("".join(json.dumps({"content": p}) + "\n" for p in paragraphs[:40]))
    expect_error(titan, "missing text field names file:line and the field", text_at(nofield),
                 "content.jsonl:1", '"text"', "dataset_text_field")
    p, rows = batches(titan, text_at(nofield, "--training.dataset_text_field", "content")[2:], 3)
    check("dataset_text_field reads another field", p.returncode == 0 and len(rows) == 3, p.stderr[-400:])

    def copy_shards(name: str) -> str:
        d = os.path.join(tmp, name)
        shutil.copytree(shard_dir, d)
        return d

    def tokens_at(path: str, tokenizer: str = llama3) -> list[str]:
        return ["data", "batches", *base, "--model.hf_assets_path", tokenizer, "--training.dataset", "tokens",
                "--training.dataset_path", path]

    trunc = copy_shards("truncated_shards")
    shard1 = os.path.join(trunc, "shard-00001.bin")
    with open(shard1, "r+b") as f:
        f.truncate(os.path.getsize(shard1) - 7)
    expect_error(titan, "truncated .bin shard", tokens_at(trunc), "shard-00001.bin", "truncated")
    magic = copy_shards("badmagic_shards")
    with open(os.path.join(magic, "shard-00002.bin"), "r+b") as f:
        f.write(b"NOTATOK!")
    expect_error(titan, ".bin shard with a bad magic", tokens_at(magic), "shard-00002.bin", "TITANTOK")

    if have_zst:
        corrupt = os.path.join(bad_dir, "corrupt.jsonl.zst")
        blob = bytearray(open(os.path.join(zst_dir, "part-0.jsonl.zst"), "rb").read())
        for i in range(len(blob) // 2, len(blob) // 2 + 16):
            blob[i] ^= 0x5A
        with open(corrupt, "wb") as f:
            f.write(bytes(blob))
        expect_error(titan, "corrupt .zst", text_at(corrupt), "corrupt.jsonl.zst", "corrupt")
        cut = os.path.join(bad_dir, "cut.jsonl.zst")
        blob = open(os.path.join(zst_dir, "part-1.jsonl.zst"), "rb").read()
        with open(cut, "wb") as f:
            f.write(blob[:len(blob) * 2 // 3])
        expect_error(titan, "truncated .zst", text_at(cut), "cut.jsonl.zst", "truncated")
    gz = os.path.join(bad_dir, "cut.jsonl.gz")
    blob = gzip.compress("".join(json.dumps({"text": p}) + "\n" for p in paragraphs[:60]).encode())
    with open(gz, "wb") as f:
        f.write(blob[:len(blob) // 2])
    expect_error(titan, "truncated .gz", text_at(gz, "--batches", "1000"), "cut.jsonl.gz", "truncated")

    expect_error(titan, "unknown dataset name",
                 ["data", "batches", *base, "--training.dataset", "c5"], "c5", "not a known dataset", "synthetic")
    txt0 = os.path.join(txt_dir, "part-0.txt")
    expect_error(titan, "tokens dataset pointed at a text file",
                 ["data", "batches", *base, "--training.dataset", "tokens", "--training.dataset_path", txt0],
                 txt0, "not .bin token shards")
    expect_error(titan, "tokens dataset pointed at a folder of text",
                 ["data", "batches", *base, "--training.dataset", "tokens", "--training.dataset_path", txt_dir],
                 txt_dir, "no *.bin files")
    expect_error(titan, "shards used with another tokenizer", tokens_at(shard_dir, "assets/tokenizer"),
                 shard_dir, "another tokenizer")
    no_manifest = copy_shards("no_manifest_shards")
    os.remove(os.path.join(no_manifest, "manifest.json"))
    expect_error(titan, "shards without a manifest used with another vocabulary",
                 tokens_at(no_manifest, "assets/tokenizer"), "128256", "535")
    mixed = copy_shards("mixed")
    shutil.copy(os.path.join(txt_dir, "part-0.txt"), mixed)
    expect_error(titan, "folder mixing text and shards", text_at(mixed), mixed, "mixes text files and .bin")

    synth_state = os.path.join(tmp, "synthetic-state.json")
    batches(titan, synthetic, 2, "--save-state", synth_state)
    expect_error(titan, "--load-state of other data",
                 ["data", "batches", *txt_cfg, "--load-state", synth_state], "saved data position", "synthetic")
    expect_error(titan, "--load-state of text into token shards",
                 ["data", "batches", *tok_cfg, "--load-state", synth_state], "saved data position", "text data")
    expect_error(titan, "--load-state made with another tokenizer",
                 ["data", "batches", *synthetic, "--model.hf_assets_path", llama3, "--load-state", synth_state],
                 "another tokenizer")
    garbage = os.path.join(tmp, "garbage-state.json")
    with open(garbage, "w") as f:
        f.write("{not json")
    expect_error(titan, "--load-state that is not JSON",
                 ["data", "batches", *synthetic, "--load-state", garbage], "garbage-state.json")

    # ---- 6. validation ---------------------------------------------------------------------------
    val_file = os.path.join(tmp, "val.txt")
    with open(val_file, "w") as f:
        f.write("\n\n".join(paragraphs[:25]) + "\n")
    val = ["--validation.enable", "--validation.dataset", "text", "--validation.dataset_path", val_file,
           "--validation.seq_len", "64", "--validation.local_batch_size", "2"]
    dump = os.path.join(tmp, "val_run")
    p = run(titan, "train", *TRAIN_FAST, "--training.steps", "4", *val, "--validation.freq", "2",
            "--validation.steps", "2", "--job.dump_folder", dump, timeout=180)
    vlines = re.findall(r"validate step:\s+(\d+)\s+loss:\s+(\S+)", p.stdout)
    steps = [int(s) for s, _ in vlines]
    finite = all(math.isfinite(float(l)) and float(l) > 0 for _, l in vlines)
    check("validation at step 1 and every freq steps, finite loss",
          p.returncode == 0 and steps == [1, 2, 4] and finite, f"rc={p.returncode} {vlines} err={p.stderr[-300:]!r}")
    mpath = os.path.join(dump, "metrics.jsonl")
    entries = []
    if os.path.exists(mpath):
        with open(mpath) as f:
            entries = [json.loads(l) for l in f if '"validate_step"' in l]
    check("validation metrics in metrics.jsonl",
          [e.get("validate_step") for e in entries] == [1, 2, 4]
          and all(math.isfinite(e.get("validation_loss", float("nan"))) for e in entries), f"{entries}")
    p = run(titan, "train", *TRAIN_FAST, *val, "--validation.freq", "1", "--validation.steps", "-1",
            "--job.dump_folder", os.path.join(tmp, "val_all"), timeout=120)
    vlines = re.findall(r"validate step:\s+(\d+)\s+loss:\s+(\S+)", p.stdout)
    check("validation.steps -1 runs to the end of the data and stops",
          p.returncode == 0 and [int(s) for s, _ in vlines] == [1, 2]
          and all(math.isfinite(float(l)) for _, l in vlines), f"rc={p.returncode} {vlines} err={p.stderr[-300:]!r}")
    p, rows = batches(titan, ["--job.config_file", DEBUG, *val, "--validation.steps", "-1"], 1000, "--validation")
    check("finite validation data ends: `end of data after N batches`",
          p.returncode == 0 and rows and f"end of data after {len(rows)} batches" in p.stdout, p.stdout[-200:])
    tiny = os.path.join(tmp, "tiny_val.txt")
    with open(tiny, "w") as f:
        f.write("Too short.\n")
    expect_error(titan, "validation data shorter than one batch",
                 ["train", *TRAIN_FAST, *val, "--validation.dataset_path", tiny, "--validation.steps", "-1",
                  "--job.dump_folder", os.path.join(tmp, "val_tiny")], "tiny_val.txt", "shorter than one batch")

    # ---- 7. the debug model on tinyshakespeare with the Llama 3 tokenizer -----------------------
    shakes = ["--job.config_file", DEBUG, "--model.hf_assets_path", llama3, "--training.dataset", "text",
              "--training.dataset_path", shakespeare, "--training.seq_len", "128", "--training.local_batch_size", "2",
              "--training.steps", "8", "--activation_checkpoint.mode", "none", "--metrics.log_freq", "1",
              "--debug.seed", "1", "--job.dump_folder", os.path.join(tmp, "shakespeare")]
    p = run(titan, "train", *shakes, "--model.vocab_size", "128256", timeout=240)
    losses = [float(x) for x in re.findall(r"step:\s+\d+\s+loss:\s+(\S+)", p.stdout)]
    check("debug model learns tinyshakespeare with the Llama 3 tokenizer",
          p.returncode == 0 and len(losses) == 8 and losses[-1] < losses[0] - 0.3,
          f"rc={p.returncode} losses={losses} err={p.stderr[-300:]!r}")
    data_line = [l for l in p.stdout.splitlines() if " - root - INFO - Data: " in l]
    check("Data: line after training on a text file",
          len(data_line) == 1 and "input.txt (1 file)" in data_line[0]
          and re.search(r"waiting for data \d+\.\d\d% of step time$", data_line[0]) is not None, f"{data_line}")
    expect_error(titan, "Llama 3 tokenizer without model.vocab_size", ["train", *shakes], "model.vocab_size", "128256")

    # ---- 8. the repo tokenizer is reproducible -------------------------------------------------
    out = os.path.join(tmp, "tokenizer")
    p = run(titan, "tokenizer", "train", "--vocab-size", "2048", "--synthetic", "20000", "--output", out)
    ref = os.path.join(ROOT, "assets", "tokenizer")
    names = sorted(os.listdir(ref))
    same = p.returncode == 0 and os.path.isdir(out) and sorted(os.listdir(out)) == names and all(
        filecmp.cmp(os.path.join(out, n), os.path.join(ref, n), shallow=False) for n in names)
    check("titan tokenizer train reproduces assets/tokenizer byte for byte", same,
          f"rc={p.returncode} err={p.stderr[-300:]!r}")

    shutil.rmtree(tmp, ignore_errors=True)
    failed = sum(1 for _, ok, _ in results if not ok)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
