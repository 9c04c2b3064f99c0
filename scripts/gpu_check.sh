#!/usr/bin/env bash
# The GPU check (docs/gpu.md): one call on a GPU machine that says what works, in two halves.
#
#   scripts/gpu_check.sh pack [BUILD_DIR]
#       Here, on a machine that builds (the same torch wheel and CUDA toolkit as the GPU machine):
#       checks that BUILD_DIR (default build) has its CUDA part, builds the binaries the check runs
#       and copies them into build-gpu/ with the shared libraries they need besides torch's and
#       glibc's. build-gpu/ then travels to the GPU machine with the working tree.
#   scripts/gpu_check.sh
#       On the GPU machine, from the repository root, with build-gpu/ there: runs the checks, the
#       most telling first, each with its own time limit (about 6 minutes on one H100 in all). Prints
#       one line per check, PASS, FAIL or SKIP with its numbers, and writes the logs and
#       summary.json under $OUT/gpu_check (/tmp/gpu_check without OUT). Exits 0 only when nothing
#       failed; 1 on a machine without a GPU, before anything else.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = pack ]; then
  set -e
  B=${2:-build}
  [ -f "$B/build.ninja" ] || { echo "gpu_check pack: $B is not a build folder; run ./scripts/setup.sh first" >&2; exit 2; }
  grep -q 'fused_cuda\.cu' "$B/build.ninja" || {
    echo "gpu_check pack: $B was configured without its CUDA part (titan CUDA code: OFF); it needs a CUDA torch" \
         "and the CUDA toolkit (nvcc) when CMake runs" >&2; exit 2; }
  cmake --build "$B" --target titan titan_tests bench_train_step bench_moe >/dev/null
  rm -rf build-gpu && mkdir -p build-gpu/bin build-gpu/lib build-gpu/lib-fallback
  torch_lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
  for name in titan titan_tests bench_train_step bench_moe; do
    cp "$B/$name" build-gpu/bin/
    # Run through a wrapper that finds the copied libraries and the GPU machine's torch (its
    # TITAN_GPU_LIBS, set by this script), without putting them in the environment of anything else.
    printf '#!/bin/sh\nexport LD_LIBRARY_PATH="${TITAN_GPU_LIBS:?run through scripts/gpu_check.sh}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"\nexec "$(dirname "$(readlink -f "$0")")/bin/%s" "$@"\n' \
      "$name" > "build-gpu/$name"
    chmod +x "build-gpu/$name"
    ldd "$B/$name" | awk '$3 ~ /^\// {print $3}' | while read -r lib; do
      case "$lib" in
        "$torch_lib"/*) ;;  # the GPU machine's own torch provides these
        */libc.so*|*/libm.so*|*/libpthread.so*|*/libdl.so*|*/librt.so*|*/libutil.so*|*/ld-linux*) ;;
        # Used only where the GPU machine's own are older than the build's (checked there).
        */libstdc++.so*|*/libgcc_s.so*) cp -n "$lib" build-gpu/lib-fallback/ ;;
        *) cp -n "$lib" build-gpu/lib/ ;;
      esac
    done
  done
  {
    echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' (with uncommitted changes)')"
    echo "torch: $(python3 -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)')"
    echo "nvcc: $(nvcc --version 2>/dev/null | tail -1)"
    echo "cuda code: $(grep -o 'arch=compute_[0-9]*,code=[^ ]*' "$B/build.ninja" | sort -u | tr '\n' ' ')"
    echo "packed: $(date -u '+%Y-%m-%d %H:%M UTC') from $B"
  } > build-gpu/BUILD_INFO
  cat build-gpu/BUILD_INFO
  echo "build-gpu/: $(du -sh build-gpu | cut -f1) ($(ls build-gpu/lib build-gpu/lib-fallback | tr '\n' ' '))"
  exit 0
fi

LOG=${OUT:-/tmp}/gpu_check
mkdir -p "$LOG"
: > "$LOG/checks.tsv"
failed=0
# result STATUS NAME DETAIL: one line for the reader, one row for summary.json.
result() {
  local detail=${3//$'\n'/ }
  detail=${detail//$'\t'/ }
  printf '%s %s: %s\n' "$1" "$2" "$detail"
  printf '%s\t%s\t%s\n' "$1" "$2" "$detail" | tr -d '\r' >> "$LOG/checks.tsv"
  [ "$1" = FAIL ] && failed=1
  return 0
}
summary() {
  python3 - "$LOG" <<'PY' || true
import json, os, sys
log = sys.argv[1]
rows = [l.rstrip("\n").split("\t", 2) for l in open(os.path.join(log, "checks.tsv")) if l.strip()]
checks = [{"status": s, "check": n, "detail": d} for s, n, d in rows]
verdict = "FAIL" if any(c["status"] == "FAIL" for c in checks) else "PASS"
info = os.path.join("build-gpu", "BUILD_INFO")
json.dump({"verdict": verdict, "build": open(info).read() if os.path.exists(info) else None, "checks": checks},
          open(os.path.join(log, "summary.json"), "w"), indent=1)
print(f"==== gpu_check: {verdict} ({sum(c['status'] == 'PASS' for c in checks)} passed, "
      f"{sum(c['status'] == 'FAIL' for c in checks)} failed, {sum(c['status'] == 'SKIP' for c in checks)} skipped); "
      f"{os.path.join(log, 'summary.json')}")
PY
}
finish() { summary; exit "$failed"; }

# ---- the machine ---------------------------------------------------------------------------------
# No GPU: say so and fail before anything else (a CPU machine must never pass for a GPU one).
if ! python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  result FAIL "no GPU" "torch.cuda.is_available() is false; nvidia-smi: $(command -v nvidia-smi >/dev/null && nvidia-smi -L 2>&1 | head -1 || echo not installed)"
  echo "FAIL: no GPU"
  finish
fi
NGPUS=$(python3 -c 'import torch; print(torch.cuda.device_count())')
result PASS "machine" "$(python3 -c 'import torch; print(torch.cuda.get_device_name(0), "x", torch.cuda.device_count(), "| torch", torch.__version__, "cuda", torch.version.cuda)')"
if [ ! -x build-gpu/titan ] || [ ! -f build-gpu/BUILD_INFO ]; then
  result FAIL "build-gpu/" "missing: run 'scripts/gpu_check.sh pack' on the build machine and bring build-gpu/ along"
  finish
fi
TORCH_LIB=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export TITAN_GPU_LIBS="$PWD/build-gpu/lib:$TORCH_LIB"
# The build's C++ runtime only where this machine's is older (a missing GLIBCXX_/GCC_ version).
if LD_LIBRARY_PATH="$TITAN_GPU_LIBS" ldd build-gpu/bin/titan 2>&1 | grep -qE "(GLIBCXX|CXXABI|GCC)_[0-9.]+' not found"; then
  export TITAN_GPU_LIBS="$TITAN_GPU_LIBS:$PWD/build-gpu/lib-fallback"
fi
if ! build-gpu/titan --help >/dev/null 2>"$LOG/load.log"; then
  result FAIL "binaries load" "$(head -c 300 "$LOG/load.log"); $(LD_LIBRARY_PATH="$TITAN_GPU_LIBS" ldd build-gpu/bin/titan | grep 'not found' | tr '\n' ' ')"
  finish
fi
TITAN=$PWD/build-gpu/titan
export TITAN_PEAK_CACHE=off

# last_steps FILE: "step loss grad_norm host_syncs" per step of metrics.jsonl, the latest run.
steps_of() {
  python3 - "$1" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = [r for r in rows if "step" in r and r.get("run_id") == rows[-1].get("run_id")]
for r in rows:
    print(r["step"], repr(r["loss"]), repr(r["grad_norm"]), r.get("host_syncs"))
PY
}
# compare A B TOL: the worst relative difference of the losses of two runs, and whether it is within TOL.
compare() {
  python3 - "$1" "$2" "$3" <<'PY'
import sys
a = [l.split() for l in open(sys.argv[1])]
b = [l.split() for l in open(sys.argv[2])]
tol = float(sys.argv[3])
if len(a) != len(b) or not a:
    print(f"steps {len(a)} vs {len(b)}"); sys.exit(1)
worst = max(abs(float(x[1]) - float(y[1])) / abs(float(y[1])) for x, y in zip(a, b))
print(f"{len(a)} steps, worst loss difference {worst:.2e} (limit {tol:g}); last loss {float(a[-1][1]):.5f} vs {float(b[-1][1]):.5f}")
sys.exit(0 if worst <= tol else 1)
PY
}
train() {  # train LABEL SECONDS FLAGS...: a training run on one process, its log in $LOG/LABEL.log
  local label=$1 limit=$2
  shift 2
  timeout "$limit" "$TITAN" train "$@" --job.dump_folder "$LOG/$label" >"$LOG/$label.log" 2>&1
}
SMALL=(--job.config_file configs/llama3/debug_model.toml --training.seq_len 256 --training.local_batch_size 4
       --training.steps 20 --metrics.log_freq 5 --debug.seed 42 --no-validation.enable)

# ---- 1. the GPU unit tests: the device each rank uses, the model on CUDA against the CPU, every
# fused CUDA kernel against its reference, the optimizer with the clip scale on the device, the
# step's read with a deadline ---------------------------------------------------------------------
timeout 240 build-gpu/titan_tests --gtest_filter='Gpu.*' >"$LOG/unit_gpu.log" 2>&1; rc=$?
count() { grep -oE "^\[ *$1 *\] Gpu\.[A-Za-z0-9_]+" "$LOG/unit_gpu.log" | sort -u | wc -l; }
ok=$(count OK); bad=$(count FAILED); skipped=$(count SKIPPED)
detail="$ok passed, $bad failed, $skipped skipped (rc $rc)$(grep -E '^\[  FAILED  \] Gpu\.' "$LOG/unit_gpu.log" | sort -u | sed 's/.*Gpu\./; Gpu./' | tr -d '\n')"
if [ "$rc" -eq 0 ] && [ "$ok" -ge 7 ] && [ "$skipped" -eq 0 ]; then result PASS "GPU unit tests" "$detail"
else result FAIL "GPU unit tests" "$detail"; fi

# ---- 2. the debug model on the GPU against the CPU, float32 (deterministic) and bf16 ------------
train gpu_fp32 150 "${SMALL[@]}" --training.mixed_precision_param float32 --debug.deterministic; rc_gpu=$?
CUDA_VISIBLE_DEVICES= train cpu_fp32 240 "${SMALL[@]}" --training.mixed_precision_param float32; rc_cpu=$?
[ -f "$LOG/cpu_fp32/metrics.jsonl" ] && steps_of "$LOG/cpu_fp32/metrics.jsonl" > "$LOG/cpu_fp32.steps"
if ! grep -q 'CUDA capacity' "$LOG/gpu_fp32.log"; then
  result FAIL "training on the GPU" "rc $rc_gpu, no 'CUDA capacity' line: $(grep -m1 -E 'CPU:|ERROR|error' "$LOG/gpu_fp32.log" | cut -c1-200)"
else
  result PASS "training on the GPU" "$(grep -m1 -o 'CUDA capacity.*' "$LOG/gpu_fp32.log"); $(grep -m1 -o 'Attention: .*' "$LOG/gpu_fp32.log" | cut -c1-120)"
fi
if ! grep -q 'CUDA capacity' "$LOG/gpu_fp32.log" || [ "$rc_gpu" -ne 0 ] || [ "$rc_cpu" -ne 0 ] || [ ! -s "$LOG/cpu_fp32.steps" ]; then
  why="rc $rc_gpu (GPU), $rc_cpu (CPU)$(grep -q 'CUDA capacity' "$LOG/gpu_fp32.log" || echo ', not on the GPU'): $(grep -m1 -iE 'error' "$LOG/gpu_fp32.log" "$LOG/cpu_fp32.log" | cut -c1-300)"
  result FAIL "float32 curve, GPU vs CPU" "$why"
  result FAIL "one host synchronisation per step" "no GPU run to count in"
else
  steps_of "$LOG/gpu_fp32/metrics.jsonl" > "$LOG/gpu_fp32.steps"
  if d=$(compare "$LOG/gpu_fp32.steps" "$LOG/cpu_fp32.steps" 2e-3); then result PASS "float32 curve, GPU vs CPU" "$d"
  else result FAIL "float32 curve, GPU vs CPU" "$d"; fi
  syncs=$(awk '{print $4}' "$LOG/gpu_fp32.steps" | sort -u | tr '\n' ' ')
  ms=$(python3 -c "import json; r=[json.loads(l) for l in open('$LOG/gpu_fp32/metrics.jsonl')][5:]; print(f'{1000*sum(x[\"step_seconds\"] for x in r)/len(r):.1f} ms per step')")
  if [ "$syncs" = "1 " ]; then result PASS "one host synchronisation per step" "host_syncs per step: $syncs; $ms"
  else result FAIL "one host synchronisation per step" "host_syncs per step: $syncs"; fi
fi
train gpu_bf16 150 "${SMALL[@]}" --training.mixed_precision_param bfloat16; rc=$?
if [ "$rc" -eq 0 ] && [ -s "$LOG/cpu_fp32.steps" ] && grep -q 'CUDA capacity' "$LOG/gpu_bf16.log"; then
  steps_of "$LOG/gpu_bf16/metrics.jsonl" > "$LOG/gpu_bf16.steps"
  if d=$(compare "$LOG/gpu_bf16.steps" "$LOG/cpu_fp32.steps" 3e-2); then result PASS "bf16 curve on the GPU vs float32 on the CPU" "$d"
  else result FAIL "bf16 curve on the GPU vs float32 on the CPU" "$d"; fi
else
  result FAIL "bf16 curve on the GPU vs float32 on the CPU" "rc $rc$(grep -q 'CUDA capacity' "$LOG/gpu_bf16.log" || echo ', not on the GPU')$([ -s "$LOG/cpu_fp32.steps" ] || echo ', no CPU curve'): $(grep -m1 -iE 'error' "$LOG/gpu_bf16.log" | cut -c1-300)"
fi

# ---- 2b. float8 (at::_scaled_mm) against its float32 emulation and against bf16, tensorwise and rowwise --
for recipe in tensorwise rowwise; do
  train "gpu_f8_$recipe" 150 "${SMALL[@]}" --training.mixed_precision_param bfloat16 --model.converters float8 \
    --quantize.linear.float8.recipe_name "$recipe"; rc1=$?
  train "gpu_f8_${recipe}_emulated" 150 "${SMALL[@]}" --training.mixed_precision_param bfloat16 --model.converters float8 \
    --quantize.linear.float8.recipe_name "$recipe" --quantize.linear.float8.emulate; rc2=$?
  if [ "$rc1" -eq 0 ] && [ "$rc2" -eq 0 ] && grep -q 'float8 GEMMs (at::_scaled_mm)' "$LOG/gpu_f8_$recipe.log" && [ -f "$LOG/gpu_bf16/metrics.jsonl" ]; then
    steps_of "$LOG/gpu_f8_$recipe/metrics.jsonl" > "$LOG/gpu_f8_$recipe.steps"
    steps_of "$LOG/gpu_f8_${recipe}_emulated/metrics.jsonl" > "$LOG/gpu_f8_${recipe}_emulated.steps"
    if d=$(compare "$LOG/gpu_f8_$recipe.steps" "$LOG/gpu_f8_${recipe}_emulated.steps" 1e-2) &&
       d2=$(compare "$LOG/gpu_f8_$recipe.steps" "$LOG/gpu_bf16.steps" 3e-2); then
      result PASS "float8 $recipe on the GPU vs its emulation and vs bf16" "$d; vs bf16: $d2"
    else result FAIL "float8 $recipe on the GPU vs its emulation and vs bf16" "$d ${d2:-}"; fi
  else
    result FAIL "float8 $recipe on the GPU vs its emulation and vs bf16" "rc $rc1 / $rc2: $(grep -m1 -iE 'error|Float8 training' "$LOG/gpu_f8_$recipe.log" | cut -c1-300)"
  fi
done

# ---- 2c. MX: refused below compute capability 10.0 with exit 2; on 10.x, emulated, near bf16 -------
train gpu_mx 150 "${SMALL[@]}" --training.mixed_precision_param bfloat16 --model.converters quantize.linear.mx; rc=$?
if grep -q 'compute capability 10.0 or newer' "$LOG/gpu_mx.log"; then
  if [ "$rc" -eq 2 ]; then result PASS "MX on this GPU: refused (below 10.0), exit 2" "$(grep -m1 -o 'MX (mxfp8).*has [0-9.]*' "$LOG/gpu_mx.log")"
  else result FAIL "MX on this GPU: refused (below 10.0), exit 2" "rc $rc"; fi
elif [ "$rc" -eq 0 ] && [ -f "$LOG/gpu_bf16.steps" ]; then
  steps_of "$LOG/gpu_mx/metrics.jsonl" > "$LOG/gpu_mx.steps"
  if d=$(compare "$LOG/gpu_mx.steps" "$LOG/gpu_bf16.steps" 3e-2); then result PASS "MX (emulated) on the GPU vs bf16" "$d"
  else result FAIL "MX (emulated) on the GPU vs bf16" "$d"; fi
else
  result FAIL "MX on the GPU" "rc $rc: $(grep -m1 -iE 'error' "$LOG/gpu_mx.log" | cut -c1-300)"
fi

# ---- 2d. block-causal attention (documents) on the GPU: trains, masks, stays near causal -----------
train gpu_docs 150 "${SMALL[@]}" --training.mixed_precision_param float32 --debug.deterministic \
  --model.flavor debugmodel_flex_attn; rc=$?
if [ "$rc" -eq 0 ] && grep -q 'block-causal: documents split' "$LOG/gpu_docs.log" && [ -f "$LOG/gpu_fp32.steps" ]; then
  steps_of "$LOG/gpu_docs/metrics.jsonl" > "$LOG/gpu_docs.steps"
  if d=$(compare "$LOG/gpu_docs.steps" "$LOG/gpu_fp32.steps" 3e-2) && ! cmp -s "$LOG/gpu_docs.steps" "$LOG/gpu_fp32.steps"; then
    result PASS "block-causal attention on the GPU (masked, near causal)" "$d"
  else result FAIL "block-causal attention on the GPU (masked, near causal)" "$d (identical to causal: $(cmp -s "$LOG/gpu_docs.steps" "$LOG/gpu_fp32.steps" && echo yes || echo no))"; fi
else
  result FAIL "block-causal attention on the GPU" "rc $rc: $(grep -m1 -iE 'error|Attention:' "$LOG/gpu_docs.log" | cut -c1-300)"
fi

# ---- 2e. DeepSeek-V3 (latent attention, MoE with grouped GEMMs) on the GPU against the CPU ------------
DS=(--job.config_file configs/deepseek_v3/debug_model.toml --model.n_layers 2 --training.seq_len 256
    --training.local_batch_size 4 --training.steps 20 --metrics.log_freq 5 --debug.seed 42 --compile.enable=false)
train gpu_ds_fp32 150 "${DS[@]}" --training.mixed_precision_param float32 --debug.deterministic; rc1=$?
CUDA_VISIBLE_DEVICES= train cpu_ds_fp32 240 "${DS[@]}" --training.mixed_precision_param float32; rc2=$?
train gpu_ds_bf16 150 "${DS[@]}" --training.mixed_precision_param bfloat16; rc3=$?
if [ "$rc1" -eq 0 ] && [ "$rc2" -eq 0 ] && [ "$rc3" -eq 0 ] && grep -q 'CUDA capacity' "$LOG/gpu_ds_fp32.log"; then
  for r in gpu_ds_fp32 cpu_ds_fp32 gpu_ds_bf16; do steps_of "$LOG/$r/metrics.jsonl" > "$LOG/$r.steps"; done
  # A token whose two best experts score within rounding may route differently on the two devices.
  if d=$(compare "$LOG/gpu_ds_fp32.steps" "$LOG/cpu_ds_fp32.steps" 1e-2) &&
     d2=$(compare "$LOG/gpu_ds_bf16.steps" "$LOG/cpu_ds_fp32.steps" 3e-2); then
    result PASS "DeepSeek-V3 on the GPU vs the CPU (float32; bf16)" "$d; bf16: $d2"
  else result FAIL "DeepSeek-V3 on the GPU vs the CPU (float32; bf16)" "$d ${d2:-}"; fi
else
  result FAIL "DeepSeek-V3 on the GPU" "rc $rc1 (GPU float32), $rc2 (CPU), $rc3 (GPU bf16): $(grep -m1 -iE 'error' "$LOG/gpu_ds_fp32.log" "$LOG/cpu_ds_fp32.log" "$LOG/gpu_ds_bf16.log" | cut -c1-300)"
fi

# ---- 3. checkpoint on the GPU: pinned asynchronous save at step 5, resumed: steps 6-10 bit for bit --
CK=("${SMALL[@]}" --training.steps 10 --metrics.log_freq 1 --debug.deterministic --checkpoint.enable
    --checkpoint.interval 5 --checkpoint.async_mode async_with_pinned_mem)
train ckpt 150 "${CK[@]}"; rc1=$?
rm -rf "$LOG/ckpt/checkpoint/step-10"
timeout 150 "$TITAN" train "${CK[@]}" --job.dump_folder "$LOG/ckpt" >"$LOG/ckpt_resumed.log" 2>&1; rc2=$?
if [ "$rc1" -eq 0 ] && [ "$rc2" -eq 0 ] && grep -q 'Resuming training from step 5' "$LOG/ckpt_resumed.log"; then
  python3 - "$LOG/ckpt/metrics.jsonl" > "$LOG/ckpt.cmp" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
runs = {}
for r in rows:
    if "step" in r: runs.setdefault(r["run_id"], {})[r["step"]] = (r["loss"], r["grad_norm"])
first, second = list(runs.values())[:2]
same = all(first[s] == second[s] for s in range(6, 11))
print("identical" if same else f"DIFFER: {[first[s] for s in range(6, 11)]} vs {[second[s] for s in range(6, 11)]}")
PY
  if grep -q '^identical' "$LOG/ckpt.cmp"; then result PASS "checkpoint resume on the GPU" "async_with_pinned_mem save at step 5; the resumed run's steps 6-10 equal the first run's bit for bit"
  else result FAIL "checkpoint resume on the GPU" "$(cat "$LOG/ckpt.cmp" | cut -c1-300)"; fi
else
  result FAIL "checkpoint resume on the GPU" "rc $rc1 then $rc2: $(grep -m1 -iE 'error' "$LOG/ckpt.log" "$LOG/ckpt_resumed.log" | cut -c1-300)"
fi

# ---- 4. several GPUs over NCCL: FSDP, TP and PP against one GPU; a skipped collective reported ------
if [ "$NGPUS" -ge 2 ]; then
  steps_of "$LOG/gpu_fp32/metrics.jsonl" > "$LOG/one.steps" 2>/dev/null
  for layout in "FSDP(2)|--training.local_batch_size 2" "TP(2)|--parallelism.tensor_parallel_degree 2" \
                "PP(2) 1F1B|--parallelism.pipeline_parallel_degree 2 --parallelism.pipeline_parallel_schedule 1F1B --parallelism.pipeline_parallel_microbatch_size 1" \
                "CP(2) ring|--parallelism.context_parallel_degree 2 --parallelism.context_parallel_rotate_method alltoall"; do
    name=${layout%%|*}; flags=${layout#*|}; dir="$LOG/nccl_$(echo "$name" | tr -c 'A-Za-z0-9' _)"
    # shellcheck disable=SC2086
    timeout 180 python3 -m torch.distributed.run --standalone --nproc_per_node=2 --no-python "$TITAN" train \
      "${SMALL[@]}" --training.mixed_precision_param float32 --debug.deterministic $flags --job.dump_folder "$dir" \
      >"$dir.log" 2>&1; rc=$?
    if [ "$rc" -eq 0 ]; then
      steps_of "$dir/metrics.jsonl" > "$dir.steps"
      if d=$(compare "$dir.steps" "$LOG/one.steps" 2e-3); then result PASS "$name over NCCL vs one GPU" "$d"
      else result FAIL "$name over NCCL vs one GPU" "$d"; fi
    else
      result FAIL "$name over NCCL vs one GPU" "rc $rc: $(grep -m1 -iE 'error' "$dir.log" | cut -c1-300)"
    fi
  done
  TITAN_TEST_SKIP_COLLECTIVE=1:45 timeout 240 python3 -m torch.distributed.run --standalone --nproc_per_node=2 \
    --no-python "$TITAN" train "${SMALL[@]}" --training.steps 50 --comm.train_timeout_seconds 15 \
    --job.dump_folder "$LOG/hang" >"$LOG/hang.log" 2>&1; rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && grep -qE 'rank 1 (entered|skipped|fell|issued)' "$LOG/hang.log"; then
    result PASS "a skipped collective on NCCL is reported, not hung" "rc $rc; $(grep -m1 -E 'rank 1 (entered|skipped|fell|issued)' "$LOG/hang.log" | cut -c1-200)"
  else
    result FAIL "a skipped collective on NCCL is reported, not hung" "rc $rc (124: hung until the limit); $(tail -3 "$LOG/hang.log" | tr '\n' ' ' | cut -c1-300)"
  fi
else
  result SKIP "FSDP, TP, PP, CP and hang diagnosis over NCCL" "$NGPUS GPU: they need 2 or more (NCCL refuses two ranks on one GPU)"
fi

# ---- 5. speed: the 1B flavor, bf16 autocast and fused kernels, against PyTorch with torch.compile ----
PEAK=$(python3 -c 'import torch; n=torch.cuda.get_device_name(0); print(989e12 if ("H100" in n or "H200" in n) and "PCIe" not in n and "NVL" not in n else 835e12 if "NVL" in n else 756e12 if "PCIe" in n else 2.25e15 if "B200" in n else 312e12)')
SHAPE="--flavor 1B --batch 2 --seq 2048"
ours=$(timeout 150 build-gpu/bench_train_step $SHAPE --compile 1 --bf16 1 --device cuda --steps 20 --warmup 5 2>"$LOG/bench_ours.err" | tail -1)
peer=$(timeout 200 python3 bench/peer_train_step.py $SHAPE --compile --bf16 --device cuda --steps 20 --warmup 5 2>"$LOG/bench_peer.err" | tail -1)
echo "$ours" > "$LOG/bench_ours.json"; echo "$peer" > "$LOG/bench_peer.json"
if d=$(python3 - "$ours" "$peer" "$PEAK" <<'PY'
import json, sys
a = json.loads(sys.argv[1])
peak = float(sys.argv[3])
f = a["flops_per_token"]
s = f"titan.cpp {a['tokens_per_s']:,.0f} tok/s (MFU {100 * f * a['tokens_per_s'] / peak:.1f}%)"
try:
    b = json.loads(sys.argv[2])
    s += (f", PyTorch {b['impl']} {b['tokens_per_s']:,.0f} tok/s (MFU {100 * f * b['tokens_per_s'] / peak:.1f}%),"
          f" ratio {a['tokens_per_s'] / b['tokens_per_s']:.3f}x")
except Exception:
    s += ", the PyTorch peer did not finish (see bench_peer.err)"
print(s)
PY
); then result PASS "1B bf16 training step, batch 2 x 2048" "$d"
else result FAIL "1B bf16 training step, batch 2 x 2048" "$(tail -c 300 "$LOG/bench_ours.err")"; fi

# ---- 5b. speed: the MoE layer at DeepSeek-V3 16B's shapes, bf16, against PyTorch eager's grouped GEMMs -----
timeout 150 python3 bench/bench_moe.py --bin build-gpu/bench_moe --device cuda --dtype bfloat16 --shapes 16B \
  --tokens 8192 --repeats 10 --rounds 3 >"$LOG/bench_moe.log" 2>&1; rc=$?
if [ "$rc" -eq 0 ] && grep -q 'x the peer' "$LOG/bench_moe.log"; then
  result PASS "MoE layer, DeepSeek-V3 16B shapes, bf16, 8192 tokens" "$(grep -E 'PyTorch eager|titan.cpp' "$LOG/bench_moe.log" | tr -s ' ' | tr '\n' ';' | cut -c1-300)"
else result FAIL "MoE layer, DeepSeek-V3 16B shapes, bf16, 8192 tokens" "rc $rc: $(tail -c 300 "$LOG/bench_moe.log")"; fi

finish
