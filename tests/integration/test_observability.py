#!/usr/bin/env python3
"""Observability: TensorBoard files read back by the real TensorBoard package, the JSON-lines
metrics, profiler traces (valid Chrome-trace JSON with our named ranges), colour only on a
terminal, and hang diagnosis: one rank skips a collective and the flight-recorder dumps point
at it.

Usage: python3 tests/integration/test_observability.py --titan build/titan
Prints one line per check and `N passed, N failed`; exits 0 only if none failed.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pty
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from launch import scratch_dir  # noqa: E402
from launch import ROOT, Checks, read_jsonl  # noqa: E402
from launch import launch as launch_ranks  # noqa: E402
FAST = ["--job.config_file", "configs/llama3/debug_model.toml", "--training.seq_len", "64",
        "--training.local_batch_size", "2", "--activation_checkpoint.mode", "none", "--debug.seed", "5"]
ENV = dict(os.environ, OMP_NUM_THREADS="1")
TB_TAGS = ["loss_metrics/global_avg_loss", "loss_metrics/global_max_loss", "grad_norm", "throughput(tps)", "tflops",
           "mfu(%)", "time_metrics/end_to_end(s)", "time_metrics/data_loading(s)", "time_metrics/data_loading(%)",
           "memory/max_active(GiB)", "memory/max_active(%)", "memory/max_reserved(GiB)", "memory/max_reserved(%)",
           "memory/num_alloc_retries", "memory/num_ooms", "n_tokens_seen", "lr"]
checks = Checks()
check, skip = checks.check, checks.skip


def launch(titan, world, args, extra_env=None, timeout=300):
    return launch_ranks(titan, world, args, extra_env=extra_env, timeout=timeout)


def jsonl(path):
    return read_jsonl(path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--titan", required=True)
    titan = os.path.abspath(ap.parse_args().titan)
    tmp = scratch_dir("titan_obs_")

    # ---- TensorBoard + metrics.jsonl ---------------------------------------------------------
    dump = os.path.join(tmp, "tb_run")
    p = subprocess.run([titan, "train", *FAST, "--training.steps", "6", "--metrics.log_freq", "2",
                        "--metrics.enable_tensorboard", "--job.dump_folder", dump], cwd=ROOT, env=ENV,
                       capture_output=True, text=True, timeout=300)
    check("training with TensorBoard on", p.returncode == 0, p.stderr[-500:])
    rows = jsonl(os.path.join(dump, "metrics.jsonl")) if p.returncode == 0 else []
    check("metrics.jsonl has every step with loss, lr, tps, memory timeline",
          [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
          and all(r["rss_gib"] > 0 and r["tps"] > 0 and "data_loading_seconds" in r for r in rows), str(rows[:1]))
    event_files = glob.glob(os.path.join(dump, "tb", "*", "events.out.tfevents.*"))
    check("event file under <dump>/tb/<YYYYmmdd-HHMM>/", len(event_files) == 1, str(event_files))
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        EventAccumulator = None
        skip("TensorBoard round trip", "the tensorboard package is not installed")
    if EventAccumulator and event_files:
        acc = EventAccumulator(os.path.dirname(event_files[0]), size_guidance={"scalars": 0})
        acc.Reload()
        tags = acc.Tags()["scalars"]
        check("TensorBoard reads every torchtitan scalar name", sorted(tags) == sorted(TB_TAGS),
              f"missing {set(TB_TAGS) - set(tags)}, extra {set(tags) - set(TB_TAGS)}")
        by_step = {r["step"]: r for r in rows}
        ok = True
        detail = ""
        for tag, key in (("loss_metrics/global_avg_loss", "loss"), ("grad_norm", "grad_norm"), ("lr", "lr"),
                         ("loss_metrics/global_max_loss", "max_loss"), ("n_tokens_seen", "tokens_seen")):
            events = acc.Scalars(tag) if tag in tags else []
            steps = [e.step for e in events]
            if steps != [1, 2, 4, 6]:
                ok, detail = False, f"{tag} steps {steps}"
            for e in events:
                want = by_step[e.step][key]
                if abs(e.value - want) > 1e-6 * max(1.0, abs(want)):
                    ok, detail = False, f"{tag} step {e.step}: {e.value} vs {want}"
        check("TensorBoard scalars equal the logged values at steps 1, 2, 4, 6", ok, detail)

    # ---- plot ------------------------------------------------------------------------------------
    try:
        import matplotlib  # noqa: F401
        png = os.path.join(tmp, "curves.png")
        q = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "plot_metrics.py"),
                            os.path.join(dump, "metrics.jsonl"), "-o", png], capture_output=True, text=True)
        with open(png, "rb") as f:
            magic = f.read(8)
        check("plot_metrics.py renders a PNG", q.returncode == 0 and magic == b"\x89PNG\r\n\x1a\n", q.stderr[-300:])
    except ImportError:
        skip("plot_metrics.py", "matplotlib is not installed")

    # ---- profiler traces -----------------------------------------------------------------------------
    dump = os.path.join(tmp, "prof")
    outs = launch(titan, 2, [*FAST, "--training.steps", "4", "--profiling.enable_profiling", "--profiling.profile_freq",
                             "2", "--profiling.profiler_warmup", "1", "--profiling.profiler_active", "1",
                             "--job.dump_folder", dump])
    check("profiled FSDP(2) run", all(o[0] == 0 for o in outs), outs[0][2][-500:])
    for it in (2, 4):
        for rank in (0, 1):
            path = os.path.join(dump, "profile_trace", f"iteration_{it}", f"rank{rank}_trace.json")
            try:
                with open(path) as f:
                    trace = json.load(f)
                names = {e.get("name") for e in trace.get("traceEvents", [])}
                want = {"forward", "backward", "optimizer", "data_loading", "comm:all_gather", "comm:reduce_scatter"}
                check(f"iteration_{it}/rank{rank}_trace.json: valid, with our ranges and aten ops",
                      want <= names and any(n and n.startswith("aten::") for n in names),
                      f"missing {want - names}")
            except (OSError, json.JSONDecodeError) as e:
                check(f"iteration_{it}/rank{rank}_trace.json", False, str(e))

    # ---- colour only on a terminal --------------------------------------------------------------------
    def run_on_pty(extra):
        master, slave = pty.openpty()
        proc = subprocess.Popen([titan, "train", *FAST, "--training.steps", "1", "--job.dump_folder",
                                 os.path.join(tmp, "pty"), *extra], cwd=ROOT, env=ENV, stdout=slave,
                                stderr=subprocess.DEVNULL)
        os.close(slave)
        data = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
        proc.wait()
        os.close(master)
        return data.decode(errors="replace")
    colored = run_on_pty([])
    plain = run_on_pty(["--metrics.disable_color_printing"])
    piped = subprocess.run([titan, "train", *FAST, "--training.steps", "1", "--job.dump_folder",
                            os.path.join(tmp, "pipe")], cwd=ROOT, env=ENV, capture_output=True, text=True).stdout
    check("colour on a terminal", "\x1b[31mstep:" in colored, colored[-300:])
    check("no colour with metrics.disable_color_printing", "step:" in plain and "\x1b[" not in plain, plain[-200:])
    check("no colour when not a terminal", "step:" in piped and "\x1b[" not in piped)

    # ---- hang diagnosis: rank 1 skips a collective --------------------------------------------------------
    dump = os.path.join(tmp, "hang")
    outs = launch(titan, 3, [*FAST, "--training.steps", "50", "--comm.train_timeout_seconds", "8",
                             "--comm.init_timeout_seconds", "60", "--job.dump_folder", dump],
                  extra_env={"TITAN_TEST_SKIP_COLLECTIVE": "1:45"}, timeout=120)
    codes = [o[0] for o in outs]
    check(f"a skipped collective: every rank fails instead of hanging (exit codes {codes})",
          all(c not in (0, None) for c in codes) and not any("(hung)" in o[2] for o in outs),
          str([o[2][-300:] for o in outs]))
    traces = sorted(glob.glob(os.path.join(dump, "comm_traces", "rank_*")))
    check("every rank dumped its flight recorder", len(traces) == 3, str(traces))
    report = outs[0][2]
    # With every rank's dump there is a majority ("DIVERGED: rank 1 ..."); when rank 0 summarises before the
    # third rank has dumped, two ranks tie and the summary says which one skipped ("rank 1 skipped the ...").
    culprit = ("DIVERGED: rank 1 ", "BEHIND: rank 1 ", "AHEAD: rank 1 ", "  rank 1 skipped the collective ")
    check("rank 0's summary names rank 1", any(c in report for c in culprit), report[-800:])
    q = subprocess.run([titan, "comm-report", os.path.join(dump, "comm_traces")], capture_output=True, text=True)
    check("titan comm-report names rank 1 and the collective",
          q.returncode == 0 and any(c in q.stdout for c in culprit) and "collective #" in q.stdout,
          q.stdout[-800:] + q.stderr[-300:])

    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
