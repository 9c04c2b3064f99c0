#!/usr/bin/env python3
"""Renders the named ranges of profiler traces (one row pair per rank: the step phases, and the
collectives) to a PNG timeline, a quick look before opening the traces in Perfetto.

Usage: python3 scripts/plot_trace.py OUTPUT/profile_trace/iteration_N [-o timeline.png]
Reads every rank*_trace.json there. Needs matplotlib.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys

PHASES = ["data_loading", "forward", "backward", "clip_grad_norm", "optimizer"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("-o", "--output", default="timeline.png")
    opts = ap.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_trace.py needs matplotlib: pip install matplotlib", file=sys.stderr)
        return 2
    files = sorted(glob.glob(os.path.join(opts.folder, "rank*_trace.json")))
    if not files:
        print(f"no rank*_trace.json in {opts.folder}", file=sys.stderr)
        return 2
    colors = dict(zip(PHASES + ["comm"], ["#999999", "#1f77b4", "#ff7f0e", "#9467bd", "#2ca02c", "#d62728"]))
    fig, ax = plt.subplots(figsize=(11, 1.0 + 0.9 * len(files)))
    t0 = None
    rows = []
    for path in files:
        rank = int(re.search(r"rank(\d+)_trace", path).group(1))
        with open(path) as f:
            events = [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X" and "dur" in e]
        ours = [e for e in events if e["name"] in PHASES or e["name"].startswith("comm:")]
        if ours:
            t0 = min([t0] + [e["ts"] for e in ours] if t0 is not None else [e["ts"] for e in ours])
        rows.append((rank, ours))
    for i, (rank, ours) in enumerate(rows):
        for e in ours:
            comm = e["name"].startswith("comm:")
            y = 2 * i + (1 if comm else 0)
            ax.broken_barh([((e["ts"] - t0) / 1000, max(e["dur"] / 1000, 0.05))], (y + 0.1, 0.8),
                           color=colors["comm" if comm else e["name"]])
    ax.set_yticks([2 * i + k + 0.5 for i in range(len(rows)) for k in (0, 1)])
    ax.set_yticklabels([f"rank {r} {lbl}" for r, _ in rows for lbl in ("phases", "collectives")])
    ax.set_xlabel("ms since the first range")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colors.values()]
    ax.legend(handles, list(colors), ncol=6, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 1.25))
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(opts.output, dpi=110)
    print(f"wrote {opts.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
