#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: builds titan.cpp against that machine's Python torch (which
# has CUDA), runs the unit tests (the CUDA ones included: the model on CUDA against the CPU, the
# fused CUDA kernels against their references), a 20-step bf16 training of the debug model,
# a checkpoint save and resume on the GPU, 1-GPU torchrun trainings, and the training-step benchmarks on the GPU: the debug model against
# PyTorch eager, and the 1B flavor (bf16 autocast, fused kernels) against PyTorch with
# torch.compile, with tokens/s and MFU; prints a summary.
#   scripts/gpu_check.sh            (OUT=<folder> also keeps the logs there)
# Where the -dev packages are missing and nothing can be installed, run scripts/gpu_deps.sh on
# a machine with Debian's packages first and bring .gpu-deps/ along.
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=${OUT:-/tmp}/gpu_check
mkdir -p "$LOG"
summary=()
note() { summary+=("$*"); echo "== $*"; }

if [ -d .gpu-deps ] && ls .gpu-deps/*.deb >/dev/null 2>&1; then
  prefix=/tmp/titan-gpu-deps
  for f in .gpu-deps/*.deb; do dpkg -x "$f" "$prefix"; done
  export CMAKE_PREFIX_PATH="$prefix/usr:$prefix/usr/lib/x86_64-linux-gnu/cmake:${CMAKE_PREFIX_PATH:-}"
  export LD_LIBRARY_PATH="$prefix/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
  export CPLUS_INCLUDE_PATH="$prefix/usr/include:${CPLUS_INCLUDE_PATH:-}"
  note "using Debian packages from .gpu-deps"
fi
# No GPU: say so and fail, before anything is built (a CPU machine must never pass for a GPU one).
if ! python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  note "FAIL: no GPU (torch.cuda.is_available() is false; nvidia-smi: $(command -v nvidia-smi >/dev/null && nvidia-smi -L 2>&1 | head -1 || echo not installed))"
  exit 1
fi
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))' \
  | tee "$LOG/torch.txt" || { note "FAIL: python3 torch with CUDA"; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tee -a "$LOG/torch.txt"

if cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE="$(command -v python3)" \
     >"$LOG/cmake.txt" 2>&1 && cmake --build build-gpu -j "$(nproc)" >"$LOG/build.txt" 2>&1; then
  note "build: ok ($(grep -o 'titan CUDA code: [A-Z]*' "$LOG/cmake.txt"))"
else
  tail -30 "$LOG/cmake.txt" "$LOG/build.txt"; note "FAIL: build"; printf '%s\n' "${summary[@]}"; exit 1
fi

./build-gpu/titan_tests >"$LOG/unit.txt" 2>&1; rc=$?
note "unit tests: rc=$rc, $(grep -E '^\[  PASSED  \]|^\[  FAILED  \]|SKIPPED \]' "$LOG/unit.txt" | sort | uniq -c | tr '\n' ' ')"
grep -A3 'Gpu\.' "$LOG/unit.txt" | grep -E 'OK|FAILED|SKIPPED' | head -4
./build-gpu/titan_tests --gtest_filter='Gpu.*' >"$LOG/unit_gpu.txt" 2>&1
note "GPU unit tests (model on CUDA, fused CUDA kernels): rc=$?, $(grep -cE '^\[       OK \] Gpu' "$LOG/unit_gpu.txt") passed, $(grep -cE '^\[  FAILED  \] Gpu' "$LOG/unit_gpu.txt") failed"

./build-gpu/titan train --job.config_file configs/llama3/debug_model.toml --training.steps 20 \
  --metrics.log_freq 5 --debug.seed 42 >"$LOG/train.txt" 2>&1; rc=$?
grep -E 'CUDA capacity|Mixed precision|step: ' "$LOG/train.txt"
note "20-step bf16 debug training: rc=$rc, $(grep -c 'step: ' "$LOG/train.txt") step lines, last: $(grep 'step: ' "$LOG/train.txt" | tail -1 | sed 's/.*step:/step:/')"

# Checkpoints on the GPU: 10 steps with a save at 5, then a rerun from step 5 (data, optimizer
# and schedule restored): the rerun's steps 6-10 must print the first run's losses.
CK="--job.config_file configs/llama3/debug_model.toml --training.steps 10 --metrics.log_freq 1 --debug.seed 42 \
  --checkpoint.enable --checkpoint.interval 5 --job.dump_folder $LOG/ckpt"
./build-gpu/titan train $CK >"$LOG/ckpt_a.txt" 2>&1
rm -rf "$LOG/ckpt/checkpoint/step-10"
./build-gpu/titan train $CK >"$LOG/ckpt_b.txt" 2>&1; rc=$?
a=$(grep 'step: ' "$LOG/ckpt_a.txt" | sed -n '6,10p' | sed 's/.*step:/step:/' | awk '{print $2, $4, $6}')
b=$(grep 'step: ' "$LOG/ckpt_b.txt" | sed 's/.*step:/step:/' | awk '{print $2, $4, $6}')
note "checkpoint resume on the GPU: rc=$rc, $(grep -o 'Saved the checkpoint of step 5.*' "$LOG/ckpt_a.txt" | head -1), \
$(grep -c 'Resuming training from step 5' "$LOG/ckpt_b.txt") resume line(s), steps 6-10 $([ "$a" = "$b" ] && echo identical || echo DIFFER: "$a" vs "$b")"

# One GPU through torchrun (world size 1) in bf16: the debug model and the 1B flavor.
for run in "debugmodel 8" "1B 2"; do
  set -- $run
  python3 -m torch.distributed.run --standalone --nproc_per_node=1 --no-python ./build-gpu/titan train \
    --job.config_file configs/llama3/debug_model.toml --model.flavor "$1" --training.local_batch_size "$2" \
    --training.steps 10 --metrics.log_freq 5 --debug.seed 42 --job.dump_folder "$LOG/out_$1" >"$LOG/train_$1.txt" 2>&1
  note "torchrun 1 GPU, $1, local batch $2, seq 2048, bf16: rc=$?, $(grep 'step: ' "$LOG/train_$1.txt" | tail -1 | sed 's/.*step:/step:/')"
done

# Pipeline parallelism over NCCL needs a GPU per rank: PP(2) 1F1B (and with 8 GPUs the 3D layout
# pp=2, dp_shard=2, tp=2) against one GPU, float32, the same global batch.
NGPUS=$(nvidia-smi -L 2>/dev/null | wc -l)
PPB="--job.config_file configs/llama3/debug_model.toml --model.n_layers 8 --training.seq_len 256 --training.steps 10 \
  --training.mixed_precision_param float32 --debug.seed 42 --metrics.log_freq 1 --training.local_batch_size 8 \
  --parallelism.pipeline_parallel_microbatch_size 2"
pp_layout() {  # $1: label, $2: processes, $3: flags
  python3 -m torch.distributed.run --standalone --nproc_per_node="$2" --no-python ./build-gpu/titan train $PPB $3 \
    --job.dump_folder "$LOG/pp_$2" >"$LOG/pp_$2.txt" 2>&1
  local rc=$?
  note "$1 on $2 GPUs: rc=$rc, last $(grep 'step: ' "$LOG/pp_$2.txt" | tail -1 | sed 's/.*step:/step:/' | awk '{print $2, $3, $4}') vs one GPU $(grep 'step: ' "$LOG/pp_1.txt" | tail -1 | sed 's/.*step:/step:/' | awk '{print $2, $3, $4}')"
}
if [ "$NGPUS" -ge 2 ]; then
  ./build-gpu/titan train $PPB --job.dump_folder "$LOG/pp_1" >"$LOG/pp_1.txt" 2>&1
  pp_layout "PP(2) 1F1B" 2 "--parallelism.pipeline_parallel_degree 2 --parallelism.pipeline_parallel_schedule 1F1B"
  [ "$NGPUS" -ge 8 ] && pp_layout "PP(2)xFSDP(2)xTP(2) Interleaved1F1B" 8 "--parallelism.pipeline_parallel_degree 2 \
    --parallelism.tensor_parallel_degree 2 --parallelism.data_parallel_shard_degree 2 --training.local_batch_size 4"
else
  note "SKIP pipeline parallelism over NCCL: $NGPUS GPU(s), it needs 2 or more"
fi

bench_pair() {  # $1: label; $2: titan.cpp flags; $3: peer flags; $4: shape
  local ours peer
  ours=$(./build-gpu/bench_train_step $4 $2 --device cuda --steps 20 --warmup 5 2>&1 | tail -1)
  peer=$(python3 bench/peer_train_step.py $4 $3 --device cuda --steps 20 --warmup 5 2>/dev/null | tail -1)
  echo "$ours"; echo "$peer"
  note "bench $1 ($4): $(python3 -c 'import json,sys; a,b=(json.loads(s) for s in sys.argv[1:3]); peak=float(sys.argv[3]); f=a["flops_per_token"]; print(f"titan.cpp {a[\"tokens_per_s\"]:,.0f} tok/s (MFU {100*f*a[\"tokens_per_s\"]/peak:.1f}%), {b[\"impl\"]} {b[\"tokens_per_s\"]:,.0f} tok/s (MFU {100*f*b[\"tokens_per_s\"]/peak:.1f}%), ratio {a[\"tokens_per_s\"]/b[\"tokens_per_s\"]:.3f}x")' "$ours" "$peer" "$PEAK" 2>&1)"
}
PEAK=$(python3 -c 'import torch; n=torch.cuda.get_device_name(0); print(989e12 if ("H100" in n or "H200" in n) else 2.25e15 if "B200" in n else 312e12)')
bench_pair "fp32 eager" "--compile 0" "" "--flavor debugmodel --batch 8 --seq 2048"
bench_pair "fp32, fused kernels vs torch.compile" "--compile 1" "--compile" "--flavor debugmodel --batch 8 --seq 2048"
bench_pair "bf16 autocast, fused kernels vs torch.compile" "--compile 1 --bf16 1" "--compile --bf16" "--flavor 1B --batch 2 --seq 2048"

echo; echo "==== gpu_check summary"; printf '%s\n' "${summary[@]}"
