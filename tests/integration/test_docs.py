#!/usr/bin/env python3
"""The commands in README.md and docs/*.md run as written (docs/reliability.md, "Docs").

Every fenced block that starts like a command (`$ `, `./`, `torchrun`, `NGPU=`, `bench/`, ...)
carries a marker on the line above it, invisible on the rendered page:

    <!-- doc-test -->                         run every command of the block
    <!-- doc-test: only 1,2 -->               run only these commands (1-based), the others are not
                                              runnable here (the marker says why after the numbers)
    <!-- doc-test: skip: REASON -->           not run (a GPU, a cluster, placeholders, minutes of work)
    <!-- doc-test: setup: SHELL -->           run SHELL first (hidden from the reader)
    <!-- doc-test: flags: --a b -->           appended to every `titan train` / `run_train.sh` command
                                              instead of the default shortening flags
    <!-- doc-test: output-of: COMMAND -->     the block is COMMAND's output (a block without commands)
    <!-- doc-test: numbers -->                numbers in the shown output stand for any number
    <!-- doc-test: optional: A | B -->        shown lines holding A or B may be absent (they differ
                                              between machines)

Options combine with `;`. A block of bare commands passes when each exits 0. In a `$ ` block the
lines after a command are its output: each shown line must appear in what the command printed, in
order (`...` stands for any text); a command whose shown output holds `titan: error:` must exit 2.

Each block runs in a folder of its own that links the repository's files (so `./outputs` and
`/tmp/...` paths land there, never in the repository), with OMP_NUM_THREADS=1. Training commands
get `--training.steps 2 --training.seq_len 64` appended unless the marker gives other flags.

Usage: python3 tests/integration/test_docs.py [--only FILE]
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from launch import scratch_dir  # noqa: E402
from launch import ROOT, Checks  # noqa: E402

COMMAND_START = re.compile(r"^(\$ |\./|build/titan|titan |torchrun |srun |mpirun |NGPU=|CONFIG_FILE=|BUILD_TYPE=|python3 |"
                           r"bench/|scripts/|#SBATCH|cmp |ctest )")
MARKER = re.compile(r"^<!-- doc-test(?::\s*(.*?))?\s*-->$")
DEFAULT_FLAGS = "--training.steps 2 --training.seq_len 64"
NOT_LINKED = {".git", "outputs", "build-asan", "build-fuzz"}
checks = Checks()
check = checks.check


class Block:
    def __init__(self, path: str, line: int, body: list[str], marker: str | None):
        self.path, self.line, self.body = path, line, body
        self.options: dict[str, str] = {}
        self.marked = marker is not None
        for part in (marker or "").split(";"):
            part = part.strip()
            if not part:
                continue
            key, _, value = part.partition(":") if not part.startswith("only ") else ("only", "", part[5:])
            self.options[key.strip()] = value.strip()

    @property
    def where(self) -> str:
        return f"{os.path.relpath(self.path, ROOT)}:{self.line}"


def blocks_of(path: str) -> list[Block]:
    lines = open(path, encoding="utf-8").read().split("\n")
    out, i = [], 0
    while i < len(lines):
        if lines[i].startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            m = MARKER.match(lines[i - 1].strip()) if i > 0 else None
            out.append(Block(path, i + 1, lines[i + 1:j], m.group(1) or "" if m else None))
            i = j + 1
        else:
            i += 1
    return out


def logical_lines(lines: list[str]) -> list[str]:
    """Joins lines continued with a trailing backslash."""
    out, cur = [], ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
        else:
            out.append(cur + line)
            cur = ""
    if cur:
        out.append(cur)
    return out


def shorten(command: str, flags: str) -> str:
    """Appends flags to a training command, before a trailing comment."""
    if not re.search(r"titan train|run_train\.sh", command) or "--help" in command:
        return command
    code, hash_, comment = command.partition(" #")
    return f"{code.rstrip()} {flags}" + (f"  #{comment}" if hash_ else "")


def pattern(expected: str, numbers: bool) -> re.Pattern:
    parts = []
    for piece in re.split(r"(\.\.\.)", expected.rstrip()):
        if piece == "...":
            parts.append(".*")
        elif numbers:
            parts.append("".join(r"[-+]?[\d][\d.,]*(?:e[-+]?\d+)?" if re.fullmatch(r"[\d][\d.,]*", tok) else re.escape(tok)
                                 for tok in re.split(r"(\d[\d.,]*)", piece)))
        else:
            parts.append(re.escape(piece))
    return re.compile("".join(parts))


def shown_lines_appear(shown: list[str], printed: str, numbers: bool, optional: list[str] = ()) -> tuple[bool, str]:
    """Whether every shown line is printed, in order; lines holding an `optional` text may be
    absent (they differ between machines)."""
    got = [line.rstrip() for line in printed.splitlines()]
    k = 0
    for want in shown:
        if not want.strip() or want.strip() == "...":
            continue
        rx = pattern(want, numbers)
        j = k
        while j < len(got) and not rx.fullmatch(got[j]):
            j += 1
        if j == len(got):
            if any(o in want for o in optional):
                continue
            return False, f"not printed (in order): {want!r}"
        k = j + 1
    return True, ""


def workdir(base: str, name: str) -> str:
    path = os.path.join(base, name)
    os.makedirs(os.path.join(path, "tmp"))
    for entry in os.listdir(ROOT):
        if entry not in NOT_LINKED:
            os.symlink(os.path.join(ROOT, entry), os.path.join(path, entry))
    return path


def shell(command: str, cwd: str, timeout: int) -> subprocess.CompletedProcess:
    command = command.replace("/tmp/", os.path.join(cwd, "tmp") + "/")
    env = dict(os.environ, OMP_NUM_THREADS="1", TMPDIR=os.path.join(cwd, "tmp"))
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=cwd, env=env, capture_output=True,
                          text=True, errors="replace", timeout=timeout)


def run_block(block: Block, base: str, index: int) -> None:
    opts = block.options
    cwd = workdir(base, f"b{index}")
    flags = opts.get("flags", DEFAULT_FLAGS)
    numbers = "numbers" in opts
    optional = [o.strip() for o in opts.get("optional", "").split("|") if o.strip()]
    started = time.time()
    if "setup" in opts:
        p = shell(opts["setup"], cwd, 600)
        if p.returncode != 0:
            check(f"{block.where}: setup", False, (p.stdout + p.stderr)[-600:])
            return
    if "output-of" in opts:  # the block is the output of a command
        p = shell(shorten(opts["output-of"], flags), cwd, 600)
        ok, why = shown_lines_appear(block.body, p.stdout + p.stderr, numbers, optional)
        check(f"{block.where}: the output of `{opts['output-of'][:60]}` as shown ({time.time() - started:.0f} s)",
              p.returncode == 0 and ok, why or (p.stdout + p.stderr)[-600:])
        return
    lines = logical_lines(block.body)
    if any(line.startswith("$ ") for line in lines):
        steps: list[tuple[str, list[str]]] = []
        for line in lines:
            if line.startswith("$ "):
                steps.append((line[2:], []))
            elif steps:
                steps[-1][1].append(line)
        for n, (command, shown) in enumerate(steps, 1):
            if "only" in opts and n not in only_numbers(opts["only"]):
                continue
            p = shell(shorten(command, flags), cwd, 600)
            error_shown = any(s.startswith("titan: error:") for s in shown)
            ok, why = shown_lines_appear(shown, p.stdout + p.stderr, numbers, optional)
            want_rc = 2 if error_shown else 0
            check(f"{block.where}: `{command[:70]}` exits {want_rc} and prints what is shown",
                  p.returncode == want_rc and ok, f"exit {p.returncode}; {why}; " + (p.stdout + p.stderr)[-800:])
        return
    commands = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    for n, command in enumerate(commands, 1):
        if "only" in opts and n not in only_numbers(opts["only"]):
            continue
        p = shell(shorten(command, flags), cwd, 600)
        check(f"{block.where}: `{command.strip()[:70]}` exits 0 ({time.time() - started:.0f} s)", p.returncode == 0,
              f"exit {p.returncode}: " + (p.stdout + p.stderr)[-800:])


def only_numbers(spec: str) -> set[int]:
    return {int(x) for x in re.findall(r"\d+", spec.split("(")[0])}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", help="one markdown file")
    opts = ap.parse_args()
    if not os.path.exists(os.path.join(ROOT, "build", "titan")):
        print("SKIP: build/titan is absent (build first)")
        return 77
    files = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
    if opts.only:
        files = [os.path.abspath(opts.only)]
    base = scratch_dir("titan_docs_")
    ran = skipped = 0
    try:
        index = 0
        for path in files:
            for block in blocks_of(path):
                first = next((line for line in block.body if line.strip()), "")
                if not block.marked:
                    if COMMAND_START.match(first):
                        check(f"{block.where}: a command block carries a doc-test marker", False,
                              f"first line {first!r}: add <!-- doc-test --> (or a skip with its reason) above it")
                    continue
                if "skip" in block.options:
                    skipped += 1
                    print(f"not run: {block.where}: {block.options['skip']}")
                    continue
                index += 1
                ran += 1
                run_block(block, base, index)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"{ran} blocks run, {skipped} not run (reasons above)")
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
