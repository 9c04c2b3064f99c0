#!/usr/bin/env bash
# Encode throughput of titan.cpp's tokenizer against tiktoken on the same Llama 3 rank file and
# the same text, measured in one run (alternating rounds); prints both and the ratios, one
# thread and batch encoding on N threads.
#   bench/run_tokenizer_bench.sh [--text FILE] [--tokenizer FILE] [--rounds 3] [--threads N]
set -euo pipefail
cd "$(dirname "$0")/.."
TEXT=tests/assets/tinyshakespeare/input.txt
TOKENIZER=tests/assets/llama3/tokenizer.model
ROUNDS=3 THREADS=$(nproc) REPEATS=5
while [ $# -gt 0 ]; do
  case "$1" in
    --text) TEXT=$2 ;; --tokenizer) TOKENIZER=$2 ;; --rounds) ROUNDS=$2 ;; --threads) THREADS=$2 ;;
    --repeats) REPEATS=$2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done
for f in "$TEXT" "$TOKENIZER"; do
  [ -f "$f" ] || { echo "missing $f" >&2; exit 2; }
done
python3 -c 'import tiktoken' 2>/dev/null || python3 -m pip install -q tiktoken 2>/dev/null ||
  python3 -m pip install -q --break-system-packages tiktoken
./scripts/setup.sh --target bench_tokenizer >&2
results=()
for ((r = 1; r <= ROUNDS; r++)); do
  while read -r line; do echo "round $r: $line"; results+=("$line"); done \
    < <(./build/bench_tokenizer "$TOKENIZER" "$TEXT" "$REPEATS" "$THREADS"; python3 bench/peer_tokenizer.py "$TOKENIZER" "$TEXT" "$REPEATS" "$THREADS")
done
python3 - "${results[@]}" <<'PY'
import json, statistics, sys
rows = [json.loads(s) for s in sys.argv[1:]]
for mode in ("single", "batch"):
    ours = statistics.median(r["mb_per_s"] for r in rows if r["impl"] == "titan" and r["mode"] == mode)
    peer = statistics.median(r["mb_per_s"] for r in rows if r["impl"] == "tiktoken" and r["mode"] == mode)
    threads = next(r["threads"] for r in rows if r["mode"] == mode)
    print(f"{mode:6} ({threads} thread{'s' if threads > 1 else ''}): titan.cpp {ours:.1f} MB/s vs tiktoken {peer:.1f} MB/s "
          f"-> ratio {ours / peer:.2f}x")
PY
