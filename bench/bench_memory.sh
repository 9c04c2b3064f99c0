#!/usr/bin/env bash
# Peak memory of one training step of a Llama 3 flavor on the CPU, with and without the chunked
# linear + cross entropy and in each activation-checkpointing mode, in one run. Each case is
# `titan train` for 2 steps on tinyshakespeare with Llama 3's tokenizer; the numbers are the
# step-2 peak resident memory (the log's memory column on the CPU; in step 1 the optimizer state
# is allocated after backward, so step 2 is the first with everything resident) and the
# parameter + gradient + optimizer bytes (metrics.jsonl), whose difference is what activations
# and the loss took.
#   bench/bench_memory.sh [--flavor 1B] [--seq 2048] [--batch 1] [--dtype bfloat16] [--assets tests/assets]
#                         [--cases all|loss]   (loss: only the full and chunked loss under full AC)
# Pure bf16 (training.dtype) by default so that a 1B model fits a 24 GiB machine; needs a CPU
# with native bf16 to be quick (float32: --dtype float32, about 20 GiB of state for 1B).
set -euo pipefail
cd "$(dirname "$0")/.."
FLAVOR=1B SEQ=2048 BATCH=1 DTYPE=bfloat16 ASSETS=tests/assets CASES=all
while [ $# -gt 0 ]; do
  case "$1" in
    --flavor) FLAVOR=$2 ;; --seq) SEQ=$2 ;; --batch) BATCH=$2 ;; --dtype) DTYPE=$2 ;; --assets) ASSETS=$2 ;;
    --cases) CASES=$2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done
./scripts/setup.sh --target titan >&2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
common=(--model.flavor "$FLAVOR" --model.hf_assets_path "$ASSETS/llama3" --training.dataset text
        --training.dataset_path "$ASSETS/tinyshakespeare/input.txt" --training.seq_len "$SEQ"
        --training.local_batch_size "$BATCH" --training.steps 2 --training.dtype "$DTYPE" --debug.seed 0
        --lr_scheduler.warmup_steps 1 --metrics.log_freq 1 --compile.enable)
cases=("full logits, AC none|--compile.components model --activation_checkpoint.mode none"
       "chunked loss, AC none|--compile.components model,loss --activation_checkpoint.mode none"
       "chunked loss, AC op|--compile.components model,loss --activation_checkpoint.mode selective --activation_checkpoint.selective_ac_option op"
       "chunked loss, AC selective 2|--compile.components model,loss --activation_checkpoint.mode selective --activation_checkpoint.selective_ac_option 2"
       "chunked loss, AC full|--compile.components model,loss --activation_checkpoint.mode full"
       "full logits, AC full|--compile.components model --activation_checkpoint.mode full")
[ "$CASES" = loss ] && cases=("${cases[4]}" "${cases[5]}")
printf '%-32s %12s %12s %14s %10s\n' "case" "peak GiB" "state GiB" "peak - state" "step s"
for c in "${cases[@]}"; do
  name=${c%%|*}
  read -r -a extra <<<"${c#*|}"
  dump="$tmp/run"
  rm -rf "$dump"
  ./build/titan train "${common[@]}" "${extra[@]}" --job.dump_folder "$dump" >"$tmp/log" 2>&1 || {
    echo "$name: failed"; tail -n 5 "$tmp/log"; continue; }
  python3 - "$name" "$tmp/log" "$dump/metrics.jsonl" <<'PY'
import json, re, sys
name, log, jsonl = sys.argv[1:]
peak = float(re.search(r"step:  2 .*?memory: +([\d.]+)GiB", open(log).read()).group(1))
rows = [json.loads(l) for l in open(jsonl) if '"step"' in l]
state = rows[0]["state_bytes"] / 2**30
print(f"{name:32s} {peak:12.2f} {state:12.2f} {peak - state:14.2f} {rows[1]['step_seconds']:10.1f}")
PY
done
