"""Shared by the multi-process tests and benchmarks: start `titan train` on N ranks the way
torchrun would (RANK, WORLD_SIZE, ... in the environment), collect the results, read
metrics.jsonl, and count checks."""

from __future__ import annotations

import atexit
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ---- no process outlives the test that started it ------------------------------------------------
# Every test script imports this module. When the script ends, however it ends (a failed check, an
# exception, SIGTERM or Ctrl-C), every process it started and their children are killed, so that a
# trainer left running by a failed assertion never competes with the next test.
def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_leftover_processes() -> None:
    for pid in _descendants(os.getpid()):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _exit_on_signal(signum, _frame) -> None:
    raise SystemExit(128 + signum)  # runs the atexit handler below


atexit.register(kill_leftover_processes)


def scratch_dir(prefix: str) -> str:
    """A new temporary folder for a test's runs (GBs of checkpoints), removed when the test's
    process ends, once the processes it started are gone; TITAN_KEEP_TEST_TMP=1 keeps it."""
    import shutil
    import tempfile
    path = tempfile.mkdtemp(prefix=prefix)
    if not os.environ.get("TITAN_KEEP_TEST_TMP"):
        def remove() -> None:
            kill_leftover_processes()
            shutil.rmtree(path, ignore_errors=True)
        atexit.register(remove)
    return path
for _sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    if signal.getsignal(_sig) in (signal.SIG_DFL, signal.default_int_handler):
        signal.signal(_sig, _exit_on_signal)


def read_until(proc: subprocess.Popen, needle: str, timeout: float) -> tuple[str, bool]:
    """Reads a text-mode process's stdout until a line contains `needle`, the stream ends or `timeout`
    seconds pass (a process that hangs without printing cannot block the test). Returns what was read
    and whether the needle came."""
    out = ""
    deadline = time.time() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.time() < deadline:
            if not sel.select(timeout=max(0.0, deadline - time.time())):
                break
            line = proc.stdout.readline()
            if not line:
                break
            out += line
            if needle in line:
                return out, True
    return out, False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, world: int, port: int, threads: int = 1, extra: dict | None = None) -> dict:
    return dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS=str(threads), **(extra or {}))


def launch(titan: str, world: int, args: list[str], extra_env: dict | None = None, timeout: int = 300,
           threads: int = 1) -> list[tuple[int, str, str]]:
    """Runs `titan train ARGS` on `world` ranks; returns (exit code, stdout, stderr) per rank.
    A rank still running at the deadline is killed and its stderr ends with '(hung)'."""
    port = free_port()
    start = time.time()
    procs = [subprocess.Popen([titan, "train", *args], cwd=ROOT, env=rank_env(r, world, port, threads, extra_env),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(world)]
    outs = []
    deadline = time.time() + timeout
    for p in procs:
        try:
            out, err = p.communicate(timeout=max(1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            err += "\n(hung)"
        outs.append((p.returncode, out, err))
    if os.environ.get("TITAN_TEST_TIMES"):  # where the suite's time goes: one line per launch
        with open(os.environ["TITAN_TEST_TIMES"], "a") as f:
            f.write(f"{time.time() - start:6.1f} s  {world} ranks  {os.path.basename(sys.argv[0])}  {' '.join(args)}\n")
    return outs


def kill_at_random_moment(titan: str, world: int, args: list[str], dump: str, rng, step_time: float,
                          first: int = 6, last: int = 8) -> tuple[list[int], int, str]:
    """Starts `titan train ARGS` on `world` ranks into `dump` and kills every rank at once with
    SIGKILL at a random moment: once a random step from `first` to `last` has been logged (the run
    must log every step), then a random part of a step (up to 0.8 `step_time`). Returns the exit
    codes, the last step logged and the moment in words."""
    port = free_port()
    cmd = [titan, "train", *args, "--job.dump_folder", dump]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=rank_env(r, world, port), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for r in range(world)]
    after, pause = rng.randint(first, last), rng.uniform(0, 0.8 * step_time)
    metrics = os.path.join(dump, "metrics.jsonl")
    deadline = time.time() + 180
    while time.time() < deadline and all(p.poll() is None for p in procs):
        rows = step_metrics(dump) if os.path.exists(metrics) else []
        if rows and rows[-1]["step"] >= after:
            break
        time.sleep(0.01)
    time.sleep(pause)
    for p in procs:
        p.kill()
    codes = [p.wait() for p in procs]
    logged = step_metrics(dump)[-1]["step"] if os.path.exists(metrics) else 0
    return codes, logged, f"killed after step {after} was logged plus {pause:.2f} s (step {logged} logged)"


def read_jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# What the multi-process tests compare layouts on: the debug model at seq 64, 10 float32 steps.
LAYOUT_BASE = ["--job.config_file", "configs/llama3/debug_model.toml", "--training.seq_len", "64",
               "--training.steps", "10", "--training.mixed_precision_param", "float32", "--debug.seed", "7",
               "--activation_checkpoint.mode", "none", "--metrics.log_freq", "5", "--lr_scheduler.warmup_steps", "2"]


def launch_into(titan: str, world: int, args: list[str], dump: str, timeout: int = 300,
                env: dict | None = None) -> list[tuple[int, str, str]]:
    """launch() with the run's outputs in `dump`."""
    return launch(titan, world, args + ["--job.dump_folder", dump], extra_env=env, timeout=timeout)


def latest_run(rows: list[dict]) -> list[dict]:
    """The rows of the last run in a metrics.jsonl (a rerun into the same folder appends)."""
    return [r for r in rows if r.get("run_id") == rows[-1].get("run_id")] if rows else rows


def step_metrics(dump: str) -> list[dict]:
    """The training-step rows of the last run in rank 0's metrics.jsonl."""
    return [r for r in latest_run(read_jsonl(os.path.join(dump, "metrics.jsonl"))) if "step" in r]


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


class Checks:
    """One PASS/FAIL line per check and the closing `N passed, N failed` line."""

    def __init__(self) -> None:
        self.results: list[bool] = []
        self.skipped: list[str] = []

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        self.results.append(bool(ok))
        print(f"{'PASS' if ok else 'FAIL'} {name}" + ("" if ok else f": {detail}"), flush=True)

    def skip(self, name: str, why: str) -> None:
        print(f"SKIP {name}: {why}", flush=True)
        self.skipped.append(name)

    def summary(self) -> int:
        """1 when a check failed; else 77 (ctest's SKIP_RETURN_CODE: the test is listed as skipped)
        when a part was skipped, so that nothing is skipped in silence; else 0."""
        failed = self.results.count(False)
        print(f"{len(self.results) - failed} passed, {failed} failed"
              + (f"; skipped: {', '.join(self.skipped)}" if self.skipped else ""))
        return 1 if failed else 77 if self.skipped else 0


def run_layout(checks: "Checks", titan: str, name: str, world: int, args: list[str], dump: str,
               env: dict | None = None) -> list[dict] | None:
    """Trains a layout; returns rank 0's step rows, or None after a failed check when a rank failed."""
    outs = launch_into(titan, world, args, dump, env=env)
    bad = [(i, o[0], o[2][-600:]) for i, o in enumerate(outs) if o[0] != 0]
    if bad:
        checks.check(f"{name} runs", False, str(bad[0]))
        return None
    return step_metrics(dump)


def check_refused(checks: "Checks", titan: str, label: str, world: int, args: list[str], dump: str,
                  needle: str) -> None:
    """A config every rank must refuse: each exits 2 within 30 s with one error naming `needle`."""
    start = time.time()
    outs = launch_into(titan, world, args, dump, timeout=60)
    took = time.time() - start
    ok = all(o[0] == 2 for o in outs) and all(needle in o[2] and o[2].count("titan: error") == 1 for o in outs)
    checks.check(f"{label}: every rank exits 2 in {took:.1f}s naming {needle}", ok and took < 30,
                 str([(o[0], o[2][-400:]) for o in outs]))


def worst_rel(got: list[dict], ref: list[dict], key: str) -> float:
    """The largest relative difference of `key` between two runs' step rows."""
    return max(rel(g[key], r[key]) for g, r in zip(got, ref))



def read_state(path: str) -> dict:
    """Parameters written by TITAN_TEST_INITIAL_STATE / TITAN_TEST_FINAL_STATE=path, by name, as
    float32 torch tensors; with pipeline parallelism the stages' files path.pp<k> together."""
    import glob

    import torch
    files = [path] if os.path.exists(path) else sorted(glob.glob(path + ".pp*[0-9]"))
    out = {}
    for f in files:
        index = json.load(open(f + ".json"))
        with open(f, "rb") as data:
            values = torch.frombuffer(bytearray(data.read()), dtype=torch.float32)
        at = 0
        for entry in index:
            n = 1
            for d in entry["shape"]:
                n *= d
            out[entry["name"]] = values[at:at + n].view(entry["shape"])
            at += n
    return out


def worst_update_diff(got: dict, ref: dict, initial: dict) -> tuple[float, str]:
    """How far the training's update of each parameter (final - initial) is from the reference's:
    the largest ||got - ref|| / ||ref - initial|| (L2 over a tensor), and which tensor; infinity when
    the names or shapes differ or nothing was read. Adam moves a weight whose gradient is near zero
    by about the learning rate whatever the gradient's rounding, so single elements may differ by a
    good part of their update; a wrong update rule moves every element (swapped Adam betas: 8e-2)."""
    if not ref or set(got) != set(ref) or set(ref) - set(initial):
        return float("inf"), f"names differ: {sorted(set(got) ^ set(ref))[:4]}"
    worst, where = 0.0, ""
    for name, r in ref.items():
        g = got[name]
        if g.shape != r.shape:
            return float("inf"), f"{name}: {tuple(g.shape)} vs {tuple(r.shape)}"
        moved = (r.double() - initial[name].double()).norm().item()
        diff = (g.double() - r.double()).norm().item()
        d = diff / moved if moved > 0 else (0.0 if diff == 0 else float("inf"))
        if d > worst:
            worst, where = d, name
    return worst, where



def bias_diff(got: dict, ref: dict) -> float:
    """The largest difference between two runs' MoE expert biases (inf when one has none)."""
    names = [n for n in ref if n.endswith("moe.expert_bias")]
    if not names or any(n not in got for n in names):
        return float("inf")
    return max(float((got[n] - ref[n]).abs().max()) for n in names)


def check_moe_layout(checks: "Checks", titan: str, label: str, world: int, args: list[str], dump: str,
                     ref: list[dict], final: dict, initial: dict, tol: float = 1e-5, update_tol: float = 1e-4,
                     env: dict | None = None) -> None:
    """A mixture-of-experts layout against one process (`ref` its step rows, `final` and `initial`
    its parameters and buffers): the loss and grad norm of every step within `tol` (relative), every
    parameter's update within `update_tol` and the same expert biases (1e-9). `env`: more variables
    for the launch."""
    got = run_layout(checks, titan, label, world, args, dump,
                     env={**(env or {}), "TITAN_TEST_FINAL_STATE": os.path.join(dump, "final")})
    if got is None:
        return
    lw, gw = worst_rel(got, ref, "loss"), worst_rel(got, ref, "grad_norm")
    mine = read_state(os.path.join(dump, "final"))
    worst, where = worst_update_diff(mine, final, initial)
    bd = bias_diff(mine, final)
    checks.check(f"{label}: loss {lw:.1e} and grad norm {gw:.1e} of one process's (<= {tol:g}); updates within "
                 f"{worst:.1e} ({where}); expert bias {bd:.1e} from one process's",
                 len(got) == len(ref) and lw <= tol and gw <= tol and worst <= update_tol and bd <= 1e-9)
