"""rsam's own model format: a folder with ``model.safetensors`` + ``config.json`` (written by ``rsam convert`` and
``rsam export``, read by :func:`rsam.checkpoint.load_model`). Loading is strict: every key and shape must match the
config's model."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import save_file

from rsam.checkpoint.loader import CONFIG_NAME, WEIGHTS_NAME, _load_rsam_folder
from rsam.models import RemoteSAM


def save_pretrained(model: RemoteSAM, out_dir: str | Path, extra_metadata: dict[str, str] | None = None) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": "rsam-v1", **(extra_metadata or {})}
    save_file(state, str(out / WEIGHTS_NAME), metadata=metadata)
    model.config.save(out / CONFIG_NAME)
    return out


def load_pretrained(path: str | Path) -> RemoteSAM:
    """Load a ``save_pretrained`` folder (or the weights file inside one) into a model in eval mode."""
    path = Path(path)
    return _load_rsam_folder(path.parent if path.is_file() else path).model
