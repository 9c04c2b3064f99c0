#!/usr/bin/env bash
# Trains a model the way torchtitan's run_train.sh does, from the current directory (the
# repository root: the configs name ./assets/tokenizer, and outputs go to ./outputs):
#   ./run_train.sh                                   # the debug model on built-in data
#   NGPU=4 ./run_train.sh                            # 4 processes (GPUs, or CPU processes)
#   CONFIG_FILE=configs/llama3/llama3_8b.toml ./run_train.sh --training.steps 20
# CONFIG_FILE: the TOML config (default configs/llama3/debug_model.toml).
# NGPU: processes on this node (default 1 = one plain process; above 1 they are launched with
#       torchrun --no-python, and parallelism.* decides the layout: FSDP over all by default).
# LOG_RANK: with NGPU > 1, the local ranks whose output is shown, as torchrun's
#       --local-ranks-filter takes them (default 0; "0,1" or "0,1,2,3" for more); each line
#       starts with [rankN]:.
# Every argument is passed on as a config override. Installs and builds what is missing first.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")" && pwd)
CONFIG_FILE=${CONFIG_FILE:-configs/llama3/debug_model.toml}
NGPU=${NGPU:-1}
LOG_RANK=${LOG_RANK:-0}
"$ROOT/scripts/setup.sh" --target titan >&2
if [ "$NGPU" -gt 1 ]; then
  PYTHON=${PYTHON:-python3}
  # torchrun exits 1 whatever its ranks' codes; each rank writes its error (and its exit code)
  # into torchrun's error file, so a user's error (exit 2 on a rank) is exit 2 here too.
  LOGS=$(mktemp -d "${TMPDIR:-/tmp}/titan_torchrun.XXXXXX")
  trap 'rm -rf "$LOGS"' EXIT
  rc=0
  "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$NGPU" --log-dir "$LOGS" \
    --local-ranks-filter "$LOG_RANK" --role rank --tee 3 --no-python \
    "$ROOT/build/titan" train --job.config_file "$CONFIG_FILE" "$@" || rc=$?
  if [ "$rc" -ne 0 ] && grep -rqs '"titan_exit_code": 2' "$LOGS"; then rc=2; fi
  exit "$rc"
fi
exec "$ROOT/build/titan" train --job.config_file "$CONFIG_FILE" "$@"
