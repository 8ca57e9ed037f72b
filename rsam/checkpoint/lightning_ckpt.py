"""The RemoteSAM network of a Lightning checkpoint written by ``rsam fit``, and one loader for every model file.

A Lightning ``.ckpt`` holds ``state_dict`` (the LightningModule's: the network under ``model.``) and
``hyper_parameters`` (``model_config``: the network's config as a plain dict, see :mod:`rsam.lit.module`). It is read
with torch's weights-only unpickler (nothing in the file runs); the network is rebuilt from ``model_config`` and
loaded strictly. Any state_dict key outside ``model.`` is an error (the module keeps no other persistent state).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from rsam.checkpoint.official import CheckpointError, load_strict, safe_torch_load
from rsam.models import RemoteSAM, RemoteSAMConfig, build_model

log = logging.getLogger(__name__)

NETWORK_PREFIX = "model."
LIGHTNING_SUFFIX = ".ckpt"


def network_state(state: Mapping, source: str) -> dict:
    """The LightningModule state_dict's ``model.*`` entries without the prefix; other keys are an error."""
    foreign = sorted(k for k in state if not str(k).startswith(NETWORK_PREFIX))
    if foreign:
        shown = ", ".join(foreign[:10]) + (f", ... ({len(foreign)} in all)" if len(foreign) > 10 else "")
        raise CheckpointError(
            f"{source}: state_dict keys outside '{NETWORK_PREFIX}' (not an rsam LightningModule checkpoint?): {shown}"
        )
    return {k[len(NETWORK_PREFIX) :]: v for k, v in state.items()}


def load_lightning_network(path: str | Path) -> RemoteSAM:
    """The network of an ``rsam fit`` checkpoint, in eval mode."""
    path = Path(path)
    obj = safe_torch_load(path)
    if not isinstance(obj, Mapping) or "state_dict" not in obj:
        raise CheckpointError(
            f"{path}: not a Lightning checkpoint (no 'state_dict'); official checkpoints are "
            ".pth files, rsam models are folders"
        )
    config = (obj.get("hyper_parameters") or {}).get("model_config")
    if not isinstance(config, Mapping):
        raise CheckpointError(f"{path}: no hyper_parameters.model_config (not written by `rsam fit`?)")
    try:
        cfg = RemoteSAMConfig.from_dict(dict(config))
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(f"{path}: bad hyper_parameters.model_config: {err}") from err
    model = build_model(cfg)
    load_strict(model, network_state(obj["state_dict"], str(path)), str(path))
    log.info("loaded the network of %s (epoch %s, step %s)", path, obj.get("epoch"), obj.get("global_step"))
    return model.eval()


def load_any_model(path: str | Path) -> RemoteSAM:
    """A model in eval mode from a Lightning ``.ckpt`` (``rsam fit``), an rsam model folder / ``model.safetensors``
    or an official ``.pth``."""
    from rsam.checkpoint import load_model

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_file() and path.suffix == LIGHTNING_SUFFIX:
        return load_lightning_network(path)
    return load_model(path)
