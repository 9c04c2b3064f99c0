#!/usr/bin/env bash
# Installs what is missing, builds everything and runs every test with ctest: unit tests,
# Python parity tests against PyTorch, command-line tests; then the unit tests again in a
# Debug build with AddressSanitizer and UndefinedBehaviorSanitizer, and every fuzz target for 20
# seconds (scripts/fuzz.sh, clang).
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
# Measured CPU peaks (MFU) are not kept in the home folder by test runs.
export TITAN_PEAK_CACHE=${TITAN_PEAK_CACHE:-off}
# Two tests at a time, one thread each, on a 2-core machine.
ctest --test-dir build --output-on-failure --timeout 900 -j 2 "$@"
phase "tests done"
if [ $# -eq 0 ] && [ "${TITAN_SKIP_SANITIZE:-0}" != 1 ]; then
  BUILD_DIR=build-asan BUILD_TYPE=Debug TITAN_SANITIZE=ON ./scripts/setup.sh --target titan_tests test_config test_pipeline_schedule
  phase "sanitizer build done"
  ctest --test-dir build-asan --output-on-failure --timeout 900 -j 2 -L unit
  phase "sanitizer tests done"
  FUZZ_SECONDS=${FUZZ_SECONDS:-20} ./scripts/fuzz.sh
  phase "fuzzing done"
fi
