#!/usr/bin/env bash
# Installs what is missing, builds everything and runs every test (ctest): unit tests,
# Python parity tests against PyTorch, and command-line tests.
# Arguments are passed to ctest (e.g. ./run_tests.sh -R parity).
set -euo pipefail
cd "$(dirname "$0")"
./scripts/setup.sh
# Two processes share the cores: each test gets its share of threads.
ctest --test-dir build --output-on-failure --timeout 900 -j 2 "$@"
