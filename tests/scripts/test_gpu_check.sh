#!/usr/bin/env bash
# scripts/gpu_check.sh parses, and on a machine without a GPU it fails saying "no GPU" rather
# than passing (docs/gpu.md). Skipped (exit 77) where a GPU is present: the check itself runs there.
set -uo pipefail
cd "$(dirname "$0")/../.."
bash -n scripts/gpu_check.sh || { echo "FAIL: scripts/gpu_check.sh does not parse"; exit 1; }
if python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "SKIP: this machine has a GPU; run scripts/gpu_check.sh itself"
  exit 77
fi
out=$(OUT=$(mktemp -d) timeout 120 bash scripts/gpu_check.sh 2>&1); rc=$?
if [ "$rc" -ne 0 ] && grep -q "FAIL: no GPU" <<<"$out"; then
  echo "PASS: without a GPU, scripts/gpu_check.sh exits $rc saying: $(grep 'FAIL: no GPU' <<<"$out")"
  exit 0
fi
echo "FAIL: without a GPU, scripts/gpu_check.sh exited $rc with: ${out: -500}"
exit 1
