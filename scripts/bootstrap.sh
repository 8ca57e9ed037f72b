#!/usr/bin/env bash
# Create (or reuse) ./.venv and install rsam with its pinned dependencies, from nothing.
# torch/torchvision come first, with pip, from the local wheel store that pip's config points at;
# everything else is installed with uv (much faster; uv ignores pip's config, so torch must already be there).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${RSAM_VENV:-.venv}
PY=${PYTHON:-python3}
stamp="$VENV/.rsam-installed"
# jemalloc: rsam's commands run on it where it is installed (rsam/allocator.py: CPU training steps ~1.5x faster)
if ! ldconfig -p 2>/dev/null | grep -q libjemalloc.so.2; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends libjemalloc2 >/dev/null 2>&1 ||
      echo "warning: apt-get install libjemalloc2 failed; rsam runs on the system allocator" >&2
  else
    echo "note: no libjemalloc.so.2 (apt install libjemalloc2 / conda install jemalloc); rsam runs on the system allocator" >&2
  fi
fi
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
