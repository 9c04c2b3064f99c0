#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/*.cpp: the TOML loader, tokenizer.json, tokenizer.model,
# token shards and their manifest, saved data positions, flight-recorder dumps, checkpoint
# metadata) with clang under AddressSanitizer + UndefinedBehaviorSanitizer, and runs each for
# FUZZ_SECONDS (default 60), two at a time, from the seeds in fuzz/seeds/<target>. Prints
# executions per target; exits 1 on any finding (the crashing input is left in
# build-fuzz/findings/).
#   scripts/fuzz.sh                   every target, 60 s each
#   FUZZ_SECONDS=600 scripts/fuzz.sh fuzz_tokenizer_json
#   FUZZ_BUILD_ONLY=1 scripts/fuzz.sh  build them, run nothing
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${FUZZ_SECONDS:-60}
BUILD=${FUZZ_BUILD_DIR:-build-fuzz}
if ! command -v clang++ >/dev/null; then
  SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
  echo "[fuzz] installing clang (libFuzzer)"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq clang >/dev/null
fi
TARGETS=(fuzz_config fuzz_tokenizer_json fuzz_tiktoken fuzz_token_shard fuzz_data_position fuzz_comm_report
         fuzz_checkpoint_metadata)
[ $# -gt 0 ] && TARGETS=("$@")
CXX=clang++ cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTITAN_WITH_TORCH=OFF \
  -DTITAN_FUZZ=ON >/dev/null
cmake --build "$BUILD" --target "${TARGETS[@]}"
[ "${FUZZ_BUILD_ONLY:-0}" = 1 ] && exit 0  # run_tests.sh builds them while the tests run
python3 fuzz/make_seeds.py "$BUILD/seeds"
mkdir -p "$BUILD/findings"
# Two targets at a time (FUZZ_JOBS), one core each.
JOBS=${FUZZ_JOBS:-2}
run_one() {
  local t=$1 corpus="$BUILD/corpus/$1" log="$BUILD/$1.log" status execs
  mkdir -p "$corpus"
  # -rss_limit_mb: an input that makes a loader allocate GBs is a finding too.
  if ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
     "$BUILD/$t" -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
       -print_final_stats=1 -artifact_prefix="$BUILD/findings/$t-" "$corpus" "$BUILD/seeds/$t" >"$log" 2>&1; then
    status=clean
  else
    status="FINDING (see $log and $BUILD/findings/)"
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  printf '[fuzz] %-22s %4ss  %10s executions  %s\n' "$t" "$SECONDS_EACH" "$execs" "$status"
  [ "$status" = clean ] || { tail -40 "$log"; return 1; }
}
failed=0
pids=()
for t in "${TARGETS[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 1; done
  run_one "$t" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || failed=1; done
exit $failed
