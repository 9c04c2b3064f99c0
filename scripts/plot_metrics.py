#!/usr/bin/env python3
"""Renders loss, learning rate and throughput curves of a run to one PNG.

Usage: python3 scripts/plot_metrics.py OUTPUT_FOLDER/metrics.jsonl [-o curves.png] [--title TEXT]
Reads the JSON lines titan.cpp writes (one object per step). Needs matplotlib
(pip install matplotlib).
"""

from __future__ import annotations

import argparse
import json
import sys


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("metrics", nargs="+", help="metrics.jsonl files (several: one curve each)")
    ap.add_argument("-o", "--output", default="curves.png")
    ap.add_argument("--title", default="")
    opts = ap.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_metrics.py needs matplotlib: pip install matplotlib", file=sys.stderr)
        return 2
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    panels = [("loss", "loss"), ("grad_norm", "grad norm"), ("lr", "learning rate"), ("tps", "tokens/s per device")]
    for path in opts.metrics:
        try:
            with open(path) as f:
                # Step rows only: validation adds {"validate_step": ...} rows to the same file.
                rows = [r for r in (json.loads(line) for line in f if line.strip()) if "step" in r]
            # Runs into the same folder append (a resume, a rerun): the latest value of each step.
            rows = list({r["step"]: r for r in rows}.values())
            rows.sort(key=lambda r: r["step"])
        except (OSError, json.JSONDecodeError) as e:
            print(f"{path}: {e}", file=sys.stderr)
            return 2
        if not rows:
            print(f"{path}: no steps", file=sys.stderr)
            return 2
        steps = [r["step"] for r in rows]
        for ax, (key, label) in zip(axes.flat, panels):
            ax.plot(steps, [r.get(key) for r in rows], marker=".", label=path)
            ax.set_title(label)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
    if len(opts.metrics) > 1:
        axes.flat[0].legend(fontsize=7)
    if opts.title:
        fig.suptitle(opts.title)
    fig.tight_layout()
    fig.savefig(opts.output, dpi=110)
    print(f"wrote {opts.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
