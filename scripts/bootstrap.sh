#!/usr/bin/env bash
# Create (or reuse) ./.venv and install rsam with its pinned dependencies, from nothing.
# torch/torchvision come first, with pip, from the local wheel store that pip's config points at;
# everything else is installed with uv (much faster; uv ignores pip's config, so torch must already be there).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${RSAM_VENV:-.venv}
PY=${PYTHON:-python3}
stamp="$VENV/.rsam-installed"
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check uv 2>&1 | grep -v "is ignored" || true
torch_pins=$(grep -E '^(torch|torchvision)==' requirements.txt | tr '\n' ' ')
"$VENV/bin/python" -m pip install -q --disable-pip-version-check $torch_pins 2>&1 | grep -v "is ignored" || true
"$VENV/bin/python" -c "import torch, torchvision" >/dev/null
"$VENV/bin/uv" pip install -q -p "$VENV/bin/python" --compile-bytecode -r requirements.txt
"$VENV/bin/uv" pip install -q -p "$VENV/bin/python" --no-deps -e .
echo "$want" > "$stamp"
