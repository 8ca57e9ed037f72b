"""One entry point for RemoteSAM weights: ``load_model(path_or_name)`` dispatches on what the path *is*.

* an rsam model folder (``config.json`` + ``model.safetensors``, written by ``rsam convert`` / ``rsam export``), or
  the ``model.safetensors`` inside one;
* a torch pickle, whatever its suffix, read weights-only and recognised by its content: a Lightning checkpoint of
  ``rsam fit`` (``state_dict`` + ``hyper_parameters.model_config``) or an official ``RemoteSAMv1.pth``
  (``model`` with ``backbone.*``/``classifier.*``/``text_encoder.*``, ``args``);
* a DeepSpeed checkpoint folder of ``rsam fit`` (``latest`` + ``checkpoint/``), merged to fp32 with DeepSpeed's own
  ``zero_to_fp32``;
* a registered model name (``remotesam-base``, ``demo``, ...): the converted folder ``$RSAM_MODELS_DIR/NAME``
  (default ``models/NAME``).

Anything else is one error that says what was found (an ImageNet Swin or a BERT checkpoint is pointed to
``init.backbone`` / ``init.text_encoder``). Every load is strict.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rsam.checkpoint.official import (
    CheckpointError,
    infer_config,
    load_strict,
    normalize_official_keys,
)
from rsam.checkpoint.weights_io import SAFETENSORS_SUFFIX, read_safetensors, safe_torch_load, tensor_mapping
from rsam.models import RemoteSAM, RemoteSAMConfig, build_model
from rsam.models.registry import MODEL_CONFIGS, model_names

log = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
NETWORK_PREFIX = "model."  # the LightningModule keeps the network under ``model``
DEEPSPEED_WRAPPER = "_forward_module."
MODELS_DIR_ENV = "RSAM_MODELS_DIR"

RSAM_FOLDER = "rsam model folder"
OFFICIAL = "official RemoteSAM checkpoint"
LIGHTNING = "Lightning checkpoint of rsam fit"
DEEPSPEED = "DeepSpeed checkpoint folder of rsam fit"


@dataclass
class LoadedModel:
    model: RemoteSAM
    kind: str
    source: str
    info: dict


def models_dir() -> Path:
    return Path(os.environ.get(MODELS_DIR_ENV) or "models")


def is_deepspeed_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "latest").is_file() or (path / "checkpoint").is_dir())


def _looks_like(state: Mapping[str, Any]) -> str:
    keys = [str(k) for k in state]
    if any(k.startswith("layers.") and ".blocks." in k for k in keys) or "patch_embed.proj.weight" in keys:
        return "an ImageNet Swin checkpoint (use it as init.backbone of a recipe)"
    if any(k.startswith(("bert.", "embeddings.word_embeddings", "encoder.layer.")) for k in keys):
        return "a BERT checkpoint (use its Hugging Face folder as init.text_encoder of a recipe)"
    return "keys " + ", ".join(keys[:6]) + (", ..." if len(keys) > 6 else "")


def network_state(state: Mapping, source: str) -> dict:
    """A LightningModule state_dict's ``model.*`` entries without the prefix; other keys are an error."""
    state = {(k[len(DEEPSPEED_WRAPPER) :] if str(k).startswith(DEEPSPEED_WRAPPER) else k): v for k, v in state.items()}
    foreign = sorted(str(k) for k in state if not str(k).startswith(NETWORK_PREFIX))
    if foreign:
        shown = ", ".join(foreign[:10]) + (f", ... ({len(foreign)} in all)" if len(foreign) > 10 else "")
        raise CheckpointError(
            f"{source}: state_dict keys outside '{NETWORK_PREFIX}' (not an rsam LightningModule checkpoint?): {shown}"
        )
    return {k[len(NETWORK_PREFIX) :]: v for k, v in state.items()}


def _config_from_hyperparameters(obj: Mapping, source: str) -> RemoteSAMConfig:
    config = (obj.get("hyper_parameters") or {}).get("model_config")
    if not isinstance(config, Mapping):
        raise CheckpointError(f"{source}: no hyper_parameters.model_config (not written by `rsam fit`?)")
    try:
        return RemoteSAMConfig.from_dict(dict(config))
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(f"{source}: bad hyper_parameters.model_config: {err}") from err


def _build_and_load(cfg: RemoteSAMConfig, state: Mapping, source: str) -> RemoteSAM:
    model = build_model(cfg)
    load_strict(model, state, source)
    return model.eval()


def _load_rsam_folder(folder: Path) -> LoadedModel:
    weights, config = folder / WEIGHTS_NAME, folder / CONFIG_NAME
    for needed in (weights, config):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed} not found (expected a folder written by `rsam convert`/`rsam export`)")
    try:
        cfg = RemoteSAMConfig.load(config)
    except (ValueError, TypeError) as err:  # json.JSONDecodeError is a ValueError
        raise CheckpointError(f"{config}: {err}") from err
    model = _build_and_load(cfg, read_safetensors(weights), str(weights))
    return LoadedModel(model, RSAM_FOLDER, str(folder), {})


def _load_pickle(path: Path, config: RemoteSAMConfig | None) -> LoadedModel:
    obj = safe_torch_load(path)
    source = str(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping) and "hyper_parameters" in obj:
        cfg = _config_from_hyperparameters(obj, source)
        model = _build_and_load(cfg, network_state(obj["state_dict"], source), source)
        info = {"epoch": obj.get("epoch"), "global_step": obj.get("global_step")}
        return LoadedModel(model, LIGHTNING, source, info)
    state = tensor_mapping(obj, source) if isinstance(obj, Mapping) else None
    if state is None:
        raise CheckpointError(f"{source}: a torch pickle holding a {type(obj).__name__}, not a model checkpoint")
    normalized = normalize_official_keys(state)
    if "backbone.patch_embed.proj.weight" in normalized and "classifier.conv1_1.weight" in normalized:
        args = obj.get("args")
        cfg = infer_config(normalized, args, overrides=config)
        model = _build_and_load(cfg, normalized, source)
        info = {"epoch": obj.get("epoch"), "has_optimizer": "optimizer" in obj}
        return LoadedModel(model, OFFICIAL, source, info)
    if isinstance(obj.get("state_dict"), Mapping):
        raise CheckpointError(
            f"{source}: a Lightning-style checkpoint without hyper_parameters.model_config (not written by `rsam fit`)"
        )
    raise CheckpointError(
        f"{source}: not a RemoteSAM checkpoint (neither a Lightning checkpoint of `rsam fit` nor an official "
        f"RemoteSAMv1.pth; missing backbone.* / classifier.* keys): it holds {_looks_like(state)}"
    )


def _load_deepspeed(folder: Path) -> LoadedModel:
    """A ZeRO checkpoint folder (any stage, any number of ranks) -> fp32 weights + the module's hyperparameters."""
    try:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint, get_model_state_file
    except ImportError as err:
        raise CheckpointError(f"{folder}: a DeepSpeed checkpoint folder, but deepspeed is not installed") from err
    source = str(folder)
    tag = (folder / "latest").read_text().strip() if (folder / "latest").is_file() else None
    try:
        state = get_fp32_state_dict_from_zero_checkpoint(str(folder), tag)
    except (FileNotFoundError, ValueError, RuntimeError, KeyError, EOFError) as err:
        raise CheckpointError(f"{source}: an unreadable DeepSpeed checkpoint folder ({err})") from None
    shard_dir = folder / tag if tag else folder
    model_files = sorted(shard_dir.glob("*model_states.pt"))
    hyper_source = model_files[0] if model_files else Path(get_model_state_file(str(shard_dir), 2))
    cfg = _config_from_hyperparameters(safe_torch_load(hyper_source), str(hyper_source))
    model = _build_and_load(cfg, network_state(state, source), source)
    return LoadedModel(model, DEEPSPEED, source, {"tag": tag})


def open_model(path_or_name: str | Path, *, config: RemoteSAMConfig | None = None) -> LoadedModel:
    """:func:`load_model` plus what was found (``kind``) and what the file said (epoch, step)."""
    path = Path(path_or_name)
    if not path.exists():
        name = str(path_or_name)
        if name in MODEL_CONFIGS:
            folder = models_dir() / name
            if not folder.is_dir():
                raise FileNotFoundError(
                    f"model {name!r}: no converted weights at {folder} (set ${MODELS_DIR_ENV} or convert the "
                    f"released checkpoint: `rsam convert RemoteSAMv1.pth --out {folder}`)"
                )
            path = folder
        else:
            raise FileNotFoundError(
                f"checkpoint not found: {path} (no such file or folder, and not a registered model name: "
                f"{', '.join(model_names())})"
            )
    if path.is_dir():
        if (path / WEIGHTS_NAME).is_file() or (path / CONFIG_NAME).is_file():
            loaded = _load_rsam_folder(path)
        elif is_deepspeed_folder(path):
            loaded = _load_deepspeed(path)
        else:
            listing = sorted(p.name for p in path.iterdir())[:8]
            raise CheckpointError(
                f"{path}: a folder that is neither an rsam model folder (config.json + model.safetensors) nor a "
                f"DeepSpeed checkpoint (latest + checkpoint/); it holds {listing or 'nothing'}"
            )
    elif path.suffix == SAFETENSORS_SUFFIX:
        if not (path.parent / CONFIG_NAME).is_file():
            state = read_safetensors(path)
            raise CheckpointError(
                f"{path}: a safetensors file without {CONFIG_NAME} next to it (an rsam model folder has both); "
                f"it holds {_looks_like(state)}"
            )
        loaded = _load_rsam_folder(path.parent)
    else:
        loaded = _load_pickle(path, config)
    log.info("loaded %s: %s %s", path_or_name, loaded.kind, {k: v for k, v in loaded.info.items() if v is not None})
    return loaded


def load_model(path_or_name: str | Path, *, config: RemoteSAMConfig | None = None) -> RemoteSAM:
    """A RemoteSAM in eval mode from any weights rsam knows (see the module docstring). ``config``: explicit numbers
    for an official checkpoint whose head counts its ``args`` do not tell."""
    return open_model(path_or_name, config=config).model


def load_network_state(path_or_name: str | Path) -> tuple[RemoteSAMConfig, dict[str, torch.Tensor]]:
    """(config, state_dict) of any weights :func:`load_model` reads, e.g. for ``init.weights``."""
    model = load_model(path_or_name)
    return model.config, model.state_dict()
