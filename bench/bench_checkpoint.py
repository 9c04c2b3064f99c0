#!/usr/bin/env python3
"""Checkpoint save and load throughput against the disk's raw write and read speeds, measured in
the same run on the same folder, and the training step's stall with async against sync saves.

For each model: the raw speed (write the checkpoint's size in 64 MiB blocks, fsync, the way a
save ends; the best of 3 through the page cache and 3 with O_DIRECT), then `titan train` saving the full state after step 1 (sync, then async), then a
rerun loading it. Throughputs are what titan logs (bytes of tensor data / seconds, checksums
and fsync included).

Usage: python3 bench/bench_checkpoint.py [--titan build/titan] [--folder /tmp] [--flavors debugmodel,1B]
"""

from __future__ import annotations

import argparse
import mmap
import os
import re
import shutil
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def raw_write(folder: str, nbytes: int, direct: bool) -> float:
    """GB/s writing nbytes from memory and flushing: through the page cache, or with O_DIRECT
    from an aligned 64 MiB block."""
    path = os.path.join(folder, "raw_write.bin")
    block = mmap.mmap(-1, 64 << 20)
    block.write(os.urandom(1 << 20) * 64)
    nbytes = nbytes // 4096 * 4096
    start = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (os.O_DIRECT if direct else 0), 0o644)
    done = 0
    while done < nbytes:
        done += os.pwrite(fd, memoryview(block)[: min(nbytes - done, len(block))], done)
    os.fsync(fd)
    os.close(fd)
    secs = time.perf_counter() - start
    os.remove(path)
    return nbytes / secs / 1e9


def raw_read(folder: str, nbytes: int, direct: bool) -> float:
    """GB/s reading back a file of nbytes written with O_DIRECT (so not in the page cache)."""
    path = os.path.join(folder, "raw_read.bin")
    block = mmap.mmap(-1, 64 << 20)
    nbytes = nbytes // 4096 * 4096
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
    done = 0
    while done < nbytes:
        done += os.pwrite(fd, memoryview(block)[: min(nbytes - done, len(block))], done)
    os.fsync(fd)
    os.close(fd)
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECT if direct else 0))
    start = time.perf_counter()
    done = 0
    while done < nbytes:
        done += os.preadv(fd, [memoryview(block)[: min(nbytes - done, len(block))]], done)
    secs = time.perf_counter() - start
    os.close(fd)
    os.remove(path)
    return nbytes / secs / 1e9


def train(titan: str, dump: str, flavor: str, steps: int, extra: list[str]) -> str:
    args = [titan, "train", "--job.config_file", "configs/llama3/debug_model.toml", "--model.flavor", flavor,
            "--training.seq_len", "16", "--training.local_batch_size", "1", "--training.steps", str(steps),
            "--activation_checkpoint.mode", "none", "--debug.seed", "1", "--job.dump_folder", dump,
            "--checkpoint.enable", "--checkpoint.interval", "1", "--checkpoint.keep_latest_k", "0", *extra]
    if flavor != "debugmodel":  # the big flavors in bfloat16, so that the state fits in memory
        args += ["--training.dtype", "bfloat16", "--model.vocab_size", "128256"]
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="2"))
    if r.returncode != 0:
        raise SystemExit(f"titan failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return r.stdout + r.stderr


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--titan", default=os.path.join(ROOT, "build", "titan"))
    ap.add_argument("--folder", default=tempfile.gettempdir())
    ap.add_argument("--flavors", default="debugmodel,1B")
    opts = ap.parse_args()
    print(f"{'model':<11} {'GB':>6} {'raw write':>10} {'save':>8} {'save/raw':>9} {'raw read':>9} {'load':>8} {'load/raw':>9} "
          f"{'sync stall':>11} {'async stall':>12} {'(first)':>8}")
    for flavor in opts.flavors.split(","):
        dump = tempfile.mkdtemp(prefix="titan_ckpt_bench_", dir=opts.folder)
        try:
            log = train(opts.titan, dump, flavor, 1, [])
            m = re.search(r"Saved the checkpoint of step 1 to \S+ in ([0-9.]+) seconds: ([0-9.]+) GB written by this rank "
                          r"\(([0-9.]+) GB/s", log)
            sync_secs, gb, save_rate = float(m[1]), float(m[2]), float(m[3])
            print("  " + [l for l in log.splitlines() if "Saved the checkpoint" in l][0].split(" - ")[-1], flush=True)
            # Loading right after the save (the best of 2), before the raw tests stir the disk.
            load_rate = 0.0
            for _ in range(2):
                log = train(opts.titan, dump, flavor, 2, ["--checkpoint.interval", "1000", "--checkpoint.load_only"])
                m = re.search(r"Loaded the checkpoint \S+ in ([0-9.]+) seconds: ([0-9.]+) GB read by this rank "
                              r"\(([0-9.]+) GB/s\)", log)
                load_rate = max(load_rate, float(m[3]))
            # The disk's best: of 3 tries each through the page cache and with O_DIRECT.
            raw = max(raw_write(dump, int(gb * 1e9), direct) for direct in (False, True) for _ in range(3))
            raw_r = max(raw_read(dump, int(gb * 1e9), direct) for direct in (False, True) for _ in range(2))
            shutil.rmtree(os.path.join(dump, "checkpoint"))
            # Two async saves: the first allocates the staging copies, the second reuses them.
            log = train(opts.titan, dump, flavor, 2, ["--checkpoint.async_mode", "async"])
            stalls = [float(x) for x in re.findall(r"Staged the checkpoint of step \d+ in ([0-9.]+) seconds", log)]
            async_stall = stalls[-1]
            print(f"{flavor:<11} {gb:>6.2f} {raw:>8.2f}/s {save_rate:>6.2f}/s {save_rate / raw:>8.0%} {raw_r:>7.2f}/s "
                  f"{load_rate:>6.2f}/s {load_rate / raw_r:>8.0%} {sync_secs:>10.2f}s {async_stall:>11.2f}s {stalls[0]:>7.2f}s", flush=True)
        finally:
            shutil.rmtree(dump, ignore_errors=True)


if __name__ == "__main__":
    main()
