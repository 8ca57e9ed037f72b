"""Named model configurations, so that recipes and the API can say ``model: remotesam-base`` instead of numbers.

``model_config_by_name(name)`` -> a fresh :class:`RemoteSAMConfig`; ``create_model(name)`` -> a network with the
official random init (weights come from :func:`rsam.checkpoint.load_model` or a recipe's ``init`` section).
"""

from __future__ import annotations

from collections.abc import Callable

from rsam.models.config import RemoteSAMConfig, SwinConfig, minilm_text_config, official_config


def _demo() -> RemoteSAMConfig:
    """The embedded demo's small model: Swin 32-wide, one block per stage, window 7, 224², MiniLM-L6 text."""
    swin = SwinConfig(embed_dim=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8), window_size=7, drop_path_rate=0.1)
    return RemoteSAMConfig(image_size=(224, 224), swin=swin, text=minilm_text_config())


def _tiny() -> RemoteSAMConfig:
    """Swin-T (embed 96, depths 2-2-6-2, window 7: ``swin_tiny_patch4_window7_224``) + BERT-base at 896²."""
    swin = SwinConfig(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7, drop_path_rate=0.2)
    return RemoteSAMConfig(swin=swin)


MODEL_CONFIGS: dict[str, Callable[[], RemoteSAMConfig]] = {
    "remotesam-base": official_config,  # the released RemoteSAM: Swin-B window 12 + BERT-base, 896²
    "remotesam-tiny": _tiny,
    "demo": _demo,
}


def model_names() -> list[str]:
    return sorted(MODEL_CONFIGS)


def model_config_by_name(name: str) -> RemoteSAMConfig:
    if name not in MODEL_CONFIGS:
        raise KeyError(f"unknown model name {name!r}; registered: {', '.join(model_names())}")
    return MODEL_CONFIGS[name]()


def create_model(name: str):
    """A network of a registered configuration with the official random init."""
    from rsam.models.remotesam import build_model

    return build_model(model_config_by_name(name))
