#!/usr/bin/env bash
# Trains a model the way torchtitan's run_train.sh does:
#   ./run_train.sh                                   # the debug model on built-in data
#   CONFIG_FILE=configs/llama3/llama3_8b.toml ./run_train.sh --training.steps 20
# CONFIG_FILE: the TOML config (default configs/llama3/debug_model.toml).
# NGPU: processes on this node (default 1 = one plain process; more processes arrive with
#       distributed training). Every argument is passed on as a config override.
# Installs and builds what is missing first (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")"
CONFIG_FILE=${CONFIG_FILE:-configs/llama3/debug_model.toml}
NGPU=${NGPU:-1}
./scripts/setup.sh --target titan >&2
if [ "$NGPU" -gt 1 ]; then
  echo "run_train.sh: NGPU=$NGPU needs distributed training, which is not supported yet; use NGPU=1" >&2
  exit 2
fi
exec ./build/titan train --job.config_file "$CONFIG_FILE" "$@"
