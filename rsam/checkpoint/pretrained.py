"""rsam's own model format: a folder with ``model.safetensors`` + ``config.json`` (written by ``rsam convert`` and
``rsam export``, read by the predictor). Loading is strict: every key and shape must match the config's model."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from rsam.checkpoint.official import CheckpointError, load_strict
from rsam.models import RemoteSAM, RemoteSAMConfig, build_model

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def save_pretrained(model: RemoteSAM, out_dir: str | Path, extra_metadata: dict[str, str] | None = None) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": "rsam-v1", **(extra_metadata or {})}
    save_file(state, str(out / WEIGHTS_NAME), metadata=metadata)
    model.config.save(out / CONFIG_NAME)
    return out


def load_pretrained(path: str | Path, map_location: str | torch.device = "cpu") -> RemoteSAM:
    """Load a ``save_pretrained`` folder (or the weights file inside one) into a model in eval mode."""
    path = Path(path)
    folder = path.parent if path.is_file() else path
    weights, config = folder / WEIGHTS_NAME, folder / CONFIG_NAME
    for needed in (weights, config):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed} not found (expected a folder written by `rsam convert`/`rsam export`)")
    try:
        cfg = RemoteSAMConfig.load(config)
    except (ValueError, TypeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{config}: {err}") from err
    model = build_model(cfg)
    load_strict(model, load_file(str(weights), device=str(map_location)), str(weights))
    return model.eval()
