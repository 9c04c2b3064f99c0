#!/usr/bin/env bash
# Training-step throughput of titan.cpp against Python PyTorch on the same model, batch, sequence
# length, threads and torch, measured in one run, alternating rounds:
#   titan.cpp            compile.enable off (ATen ops)          bench_train_step --compile 0
#   titan.cpp compile    compile.enable on (fused kernels)      bench_train_step --compile 1
#   PyTorch eager                                              bench/peer_train_step.py
#   PyTorch compile      torch.compile of each block and the loss, as torchtitan
# plus a 2048^3 float32 matmul in each round, the rate MFU-style fractions are taken against.
#   bench/run_bench.sh [--flavor debugmodel] [--batch 8] [--seq 512] [--steps 10] [--threads N]
#                      [--rounds 3] [--no-torch-compile]
# Every side: fp32, AdamW (fused), clip 1.0, random tokens, median step time after warm-up.
set -euo pipefail
cd "$(dirname "$0")/.."
FLAVOR=debugmodel BATCH=8 SEQ=512 STEPS=10 WARMUP=3 THREADS=$(nproc) ROUNDS=3 TORCH_COMPILE=1
while [ $# -gt 0 ]; do
  case "$1" in
    --flavor) FLAVOR=$2 ;; --batch) BATCH=$2 ;; --seq) SEQ=$2 ;; --steps) STEPS=$2 ;;
    --warmup) WARMUP=$2 ;; --threads) THREADS=$2 ;; --rounds) ROUNDS=$2 ;;
    --no-torch-compile) TORCH_COMPILE=0; shift; continue ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done
./scripts/setup.sh --target bench_train_step >&2
common=(--flavor "$FLAVOR" --batch "$BATCH" --seq "$SEQ" --steps "$STEPS" --warmup "$WARMUP" --threads "$THREADS")
export OMP_NUM_THREADS=$THREADS
results=()
for ((r = 1; r <= ROUNDS; r++)); do
  sides=("./build/bench_train_step ${common[*]} --compile 0" "./build/bench_train_step ${common[*]} --compile 1"
         "python3 bench/peer_train_step.py ${common[*]}")
  [ "$TORCH_COMPILE" = 1 ] && sides+=("python3 bench/peer_train_step.py ${common[*]} --compile")
  sides+=("./build/bench_train_step --matmul-peak 2048 --threads $THREADS")
  for side in "${sides[@]}"; do
    line=$($side 2>/dev/null | tail -n 1)
    echo "round $r: $line"
    results+=("$line")
  done
done
python3 - "${results[@]}" <<'PY'
import json, statistics, sys
rows = [json.loads(s) for s in sys.argv[1:]]
by = {}
for r in rows:
    by.setdefault(r["impl"], []).append(r)
med = {k: statistics.median(x["tokens_per_s"] for x in v) for k, v in by.items() if k != "matmul"}
peak = statistics.median(x["flops_per_s"] for x in by["matmul"])
first = next(r for r in rows if r["impl"] == "titan.cpp")
fpt = next(r["flops_per_token"] for r in rows if "flops_per_token" in r)
n = len(by["titan.cpp"])
print(f"medians of {n} rounds (batch {first['batch']}, seq {first['seq']}, threads {first['threads']}):")
for k, v in med.items():
    print(f"  {k:18s} {v:9,.0f} tok/s   model FLOP/s = {fpt * v / peak:5.1%} of a 2048^3 fp32 matmul ({peak / 1e9:.0f} GFLOP/s)")
tc = med["titan.cpp-compile"]
print(f"titan.cpp compile / PyTorch eager   = {tc / med['pytorch-eager']:.3f}x")
if "pytorch-compile" in med:
    print(f"titan.cpp compile / PyTorch compile = {tc / med['pytorch-compile']:.3f}x")
print(f"titan.cpp (no compile) / PyTorch eager = {med['titan.cpp'] / med['pytorch-eager']:.3f}x")
PY
