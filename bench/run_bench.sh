#!/usr/bin/env bash
# Training-step throughput of titan.cpp against Python PyTorch eager on the same model, batch,
# sequence length, threads and torch, measured in one run; prints both and the ratio.
#   bench/run_bench.sh [--flavor debugmodel] [--batch 8] [--seq 512] [--steps 10] [--threads N]
# Both sides: fp32, AdamW (fused), clip 1.0, random tokens, median step time after warm-up.
set -euo pipefail
cd "$(dirname "$0")/.."
FLAVOR=debugmodel BATCH=8 SEQ=512 STEPS=10 WARMUP=3 THREADS=$(nproc) ROUNDS=3
while [ $# -gt 0 ]; do
  case "$1" in
    --flavor) FLAVOR=$2 ;; --batch) BATCH=$2 ;; --seq) SEQ=$2 ;; --steps) STEPS=$2 ;;
    --warmup) WARMUP=$2 ;; --threads) THREADS=$2 ;; --rounds) ROUNDS=$2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done
./scripts/setup.sh --target bench_train_step >&2
common=(--flavor "$FLAVOR" --batch "$BATCH" --seq "$SEQ" --steps "$STEPS" --warmup "$WARMUP" --threads "$THREADS")
# The two alternate for ROUNDS rounds, so that a slow spell of the machine hits both; the
# ratio is of the medians.
results=()
for ((r = 1; r <= ROUNDS; r++)); do
  ours=$(OMP_NUM_THREADS=$THREADS ./build/bench_train_step "${common[@]}")
  peer=$(OMP_NUM_THREADS=$THREADS python3 bench/peer_train_step.py "${common[@]}" 2>/dev/null | tail -n 1)
  echo "round $r: $ours"
  echo "round $r: $peer"
  results+=("$ours" "$peer")
done
python3 - "${results[@]}" <<'PY'
import json, statistics, sys
rows = [json.loads(s) for s in sys.argv[1:]]
ours = [r["tokens_per_s"] for r in rows[0::2]]
peer = [r["tokens_per_s"] for r in rows[1::2]]
o, p = statistics.median(ours), statistics.median(peer)
first = rows[0]
print(f"titan.cpp {o:,.0f} tok/s vs PyTorch eager {p:,.0f} tok/s (medians of {len(ours)} rounds) "
      f"-> ratio {o / p:.3f}x (batch {first['batch']}, seq {first['seq']}, threads {first['threads']})")
PY
