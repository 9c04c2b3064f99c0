#!/usr/bin/env bash
# Installs what is missing, builds everything and runs every test with ctest: unit tests,
# Python parity tests against PyTorch, command-line tests; then the unit tests again in a
# Debug build with AddressSanitizer and UndefinedBehaviorSanitizer, and every fuzz target for 20
# seconds (scripts/fuzz.sh, clang). The sanitizer and fuzzing builds run at the lowest priority
# while the tests do (their log: build/sanitize.log).
#   ./run_tests.sh                 everything
#   ./run_tests.sh -R parity       only tests matching a ctest regex (no sanitizer pass)
#   TITAN_SKIP_SANITIZE=1 ./run_tests.sh   skip the sanitizer and fuzzing passes
set -euo pipefail
cd "$(dirname "$0")"
START=$(date +%s)
phase() { echo "[tests] $1 after $(( $(date +%s) - START )) s"; }
./scripts/setup.sh
phase "setup and build done"
# Python packages the tests read our output with (the test suite only; training needs none).
PYTHON=${PYTHON:-python3}
TEST_PACKAGES=(tensorboard matplotlib tiktoken tokenizers zstandard transformers safetensors torchao)
if ! "$PYTHON" -c 'import tensorboard, matplotlib, tiktoken, tokenizers, zstandard, transformers, safetensors, torchao' 2>/dev/null; then
  echo "[tests] installing ${TEST_PACKAGES[*]} (test-only)"
  "$PYTHON" -m pip install -q "${TEST_PACKAGES[@]}" 2>/dev/null ||
    "$PYTHON" -m pip install -q --break-system-packages "${TEST_PACKAGES[@]}"
fi
# The CPU's peak (for MFU) is measured once for the whole run and kept in the build folder, not
# in the home folder (each of the suite's ~1,000 processes would spend a quarter second on it).
export TITAN_PEAK_CACHE=${TITAN_PEAK_CACHE:-$PWD/build/cpu_peak.json}
rm -f "$PWD/build/cpu_peak.json"
SANITIZE=0
[ $# -eq 0 ] && [ "${TITAN_SKIP_SANITIZE:-0}" != 1 ] && SANITIZE=1
if [ $SANITIZE = 1 ]; then
  # The sanitizer and fuzzing builds, at the lowest priority while the tests run: they take the
  # cycles the tests leave idle (a rank waiting, a single-process phase, Python).
  # Its own process group (setsid), so that a failed test run stops it whole.
  setsid nice -n 19 bash -c 'BUILD_DIR=build-asan BUILD_TYPE=Debug TITAN_SANITIZE=ON ./scripts/setup.sh \
      --target titan_tests test_config test_pipeline_schedule && FUZZ_BUILD_ONLY=1 ./scripts/fuzz.sh' \
    > build/sanitize.log 2>&1 &
  BACKGROUND=$!
fi
# Two tests at a time, one thread each, on a 2-core machine.
status=0
ctest --test-dir build --output-on-failure --timeout 900 -j 2 "$@" || status=$?
phase "tests done"
if [ $status != 0 ]; then
  [ $SANITIZE = 1 ] && { kill -- -"$BACKGROUND" 2>/dev/null || true; }
  exit $status
fi
if [ $SANITIZE = 1 ]; then
  if ! wait $BACKGROUND; then
    tail -60 build/sanitize.log
    echo "[tests] the sanitizer or fuzzing build failed (build/sanitize.log)"
    exit 1
  fi
  phase "sanitizer and fuzzing builds done"
  ctest --test-dir build-asan --output-on-failure --timeout 900 -j 2 -L unit
  phase "sanitizer tests done"
  FUZZ_SECONDS=${FUZZ_SECONDS:-20} ./scripts/fuzz.sh
  phase "fuzzing done"
fi
