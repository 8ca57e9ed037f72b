"""RemoteSAM model package: plain PyTorch (no Lightning, no files, no CLI)."""

from rsam.models.config import RemoteSAMConfig, SwinConfig, TextConfig, minilm_text_config, official_config
from rsam.models.registry import create_model, model_config_by_name, model_names
from rsam.models.remotesam import RemoteSAM, build_model

__all__ = [
    "RemoteSAM",
    "RemoteSAMConfig",
    "SwinConfig",
    "TextConfig",
    "build_model",
    "create_model",
    "minilm_text_config",
    "model_config_by_name",
    "model_names",
    "official_config",
]
