"""Checkpoints: official ``.pth`` (safe, strict), rsam folders (safetensors + config.json), golden sets,
text encoders."""

from __future__ import annotations

from pathlib import Path

from rsam.checkpoint.official import CheckpointError, load_official_checkpoint, load_strict, safe_torch_load
from rsam.checkpoint.pretrained import load_pretrained, save_pretrained


def load_model(path: str | Path):
    """A model in eval mode from an rsam folder (or its ``model.safetensors``) or an official ``.pth`` file."""
    path = Path(path)
    if path.is_dir() or path.suffix == ".safetensors":
        return load_pretrained(path)
    if path.suffix in {".pth", ".pt", ".ckpt", ".bin"}:
        return load_official_checkpoint(path)[0]
    raise FileNotFoundError(f"{path}: expected an rsam model folder, a model.safetensors or an official .pth file")


__all__ = [
    "CheckpointError",
    "load_model",
    "load_official_checkpoint",
    "load_pretrained",
    "load_strict",
    "safe_torch_load",
    "save_pretrained",
]
