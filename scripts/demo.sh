#!/usr/bin/env bash
# The main job on a fresh machine: set up ./.venv, then (until the training demo recipe lands) build the model,
# prove parity with the official code on the golden set, and segment a real aerial image (NEON, CC0, from the
# deepforest wheel) with the golden weights, writing PNG overlays to outputs/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline
REF=${RSAM_REFERENCE_DIR:-}
for candidate in "$REF" ../shared/reference /work/shared/reference; do
  if [ -n "$candidate" ] && [ -f "$candidate/tiny_config.json" ]; then REF=$candidate; break; fi
done
[ -f "$REF/tiny_config.json" ] || { echo "golden reference folder not found (set RSAM_REFERENCE_DIR)" >&2; exit 2; }

ASSETS=data/assets
IMAGE=$ASSETS/deepforest/data/OSBS_029.png
if [ ! -f "$IMAGE" ]; then
  mkdir -p "$ASSETS"
  .venv/bin/python -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    deepforest==2.1.0 -d "$ASSETS" 2>&1 | grep -v "is ignored" || true
  .venv/bin/python - "$ASSETS" <<'PY'
import glob, sys, zipfile
folder = sys.argv[1]
with zipfile.ZipFile(glob.glob(f"{folder}/deepforest-2.1.0-*.whl")[0]) as wheel:
    for name in wheel.namelist():
        if name.startswith("deepforest/data/OSBS_029"):
            wheel.extract(name, folder)
PY
fi

echo "== parity with the official code (golden set in $REF) =="
.venv/bin/rsam parity --config "$REF/tiny_config.json" --weights "$REF/tiny_weights.safetensors" \
  --golden "$REF/tiny_golden.npz"
echo "== referring segmentation of a real aerial image (golden random weights: the masks are not meaningful) =="
.venv/bin/rsam segment --golden "$REF/tiny_config.json" "$REF/tiny_weights.safetensors" --image "$IMAGE" \
  --text "trees in the image" --text "the dead tree on the left" --out outputs/demo
echo "overlays written to outputs/demo/"
