"""Reading weight files safely: torch pickles with the weights-only unpickler, safetensors, one error per bad file.

Every reader raises :class:`CheckpointError` (a ``ValueError``: one line on the CLI) naming the file when it is
missing, truncated, corrupt, or a pickle that would need code execution; nothing in a file is ever executed.
"""

from __future__ import annotations

import argparse
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

SAFETENSORS_SUFFIX = ".safetensors"
TORCH_MAGIC = (b"PK", b"\x80")  # torch.save's zip archive; a legacy (protocol >= 2) pickle


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as asked (unsafe pickle, wrong keys, missing numbers, unreadable file)."""


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def safe_torch_load(path: str | Path) -> Any:
    """``torch.load`` with weights-only unpickling; allows ``argparse.Namespace`` and nothing else extra."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes; an interrupted write?)")
    with path.open("rb") as handle:
        magic = handle.read(2)
    if magic not in TORCH_MAGIC:
        raise CheckpointError(f"{path}: not a readable torch checkpoint (neither a torch.save zip nor a pickle)")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        lines = str(err).strip().splitlines()
        detail = next((line for line in lines if "GLOBAL" in line or "Unsupported" in line), lines[-1] if lines else "")
        raise CheckpointError(
            f"{path}: refused to unpickle (weights-only loading allows tensors, containers and argparse.Namespace "
            f"only; nothing in the file was executed): {detail.strip()}"
        ) from None
    except (RuntimeError, EOFError, OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise CheckpointError(
            f"{path}: not a readable torch checkpoint (truncated or corrupt? {_first_line(err)[:160]})"
        ) from None


def read_safetensors(path: str | Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights not found: {path}")
    try:
        return load_file(str(path), device=device)
    except Exception as err:  # safetensors raises its own SafetensorError (an Exception) for every bad file
        raise CheckpointError(
            f"{path}: not a readable safetensors file (truncated or corrupt? {_first_line(err)[:160]})"
        ) from None


def tensor_mapping(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """The state_dict inside a loaded file: ``obj['model']``, ``obj['state_dict']`` or ``obj`` itself."""
    state = obj
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), Mapping):
                state = obj[key]
                break
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"{source}: no state_dict found (expected tensors, or a dict with 'model'/'state_dict')")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{source}: non-tensor entries in the state_dict: {bad[:10]}")
    return dict(state)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or of a torch pickle (``.pth``/``.bin``/``.pt``/``.ckpt``), weights-only."""
    path = Path(path)
    if path.suffix == SAFETENSORS_SUFFIX:
        return read_safetensors(path)
    return tensor_mapping(safe_torch_load(path), str(path))
