"""RemoteSAM model package: plain PyTorch (no Lightning, no files, no CLI)."""

from rsam.models.config import RemoteSAMConfig, SwinConfig, TextConfig, minilm_text_config, official_config
from rsam.models.remotesam import RemoteSAM, build_model

__all__ = [
    "RemoteSAM",
    "RemoteSAMConfig",
    "SwinConfig",
    "TextConfig",
    "build_model",
    "minilm_text_config",
    "official_config",
]
