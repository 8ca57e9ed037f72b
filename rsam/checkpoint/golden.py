"""Golden reference sets made by running the official code (format of ``shared/reference``).

* Weights: a safetensors file whose float32 tensors are stored as int8 codes with a per-tensor power-of-two exponent
  in the header metadata (``"exponents"``: key -> e; value = float32(code) · 2^-e, exact); int64 tensors verbatim;
  ``"format": "remotesam-golden-int8-pow2-v1"``.
* Config: a JSON with ``backbone`` (Swin numbers, ``pwam``), ``text_encoder`` (BERT numbers) and ``cases``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from rsam.models.config import RemoteSAMConfig, SwinConfig, TextConfig

GOLDEN_WEIGHT_FORMAT = "remotesam-golden-int8-pow2-v1"


def load_golden_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Decode an int8 x 2^-e golden weight file into float32 / int64 tensors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"golden weight file not found: {path}")
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
        if meta.get("format") != GOLDEN_WEIGHT_FORMAT:
            raise ValueError(f"{path}: format {meta.get('format')!r} is not {GOLDEN_WEIGHT_FORMAT!r}")
        exponents = json.loads(meta.get("exponents", "{}"))
        out = {}
        for key in handle.keys():
            tensor = handle.get_tensor(key)
            if tensor.dtype == torch.int8:
                if key not in exponents:
                    raise ValueError(f"{path}: int8 tensor {key!r} has no exponent in the header")
                tensor = tensor.to(torch.float32) * (2.0 ** -int(exponents[key]))
            elif tensor.dtype != torch.int64:
                raise ValueError(f"{path}: tensor {key!r} has unexpected dtype {tensor.dtype}")
            out[key] = tensor
    return out


def _eps_from(norm_layer: Any, default: float) -> float:
    """Parse ``"LayerNorm(eps=1e-5)"`` (the golden config's notation)."""
    if isinstance(norm_layer, str) and "eps=" in norm_layer:
        return float(norm_layer.split("eps=")[1].rstrip(")"))
    return default


def config_from_golden(data: dict[str, Any], image_size: tuple[int, int] | None = None) -> RemoteSAMConfig:
    """Build our typed config from a golden-set config JSON (the official hyper-parameter names)."""
    try:
        bb = data["backbone"]
        te = data["text_encoder"]
    except KeyError as err:
        raise ValueError(f"golden config lacks the {err.args[0]!r} section") from err
    if image_size is None:
        sizes = {tuple(case["image_hw"]) for case in data.get("cases", {}).values() if "image_hw" in case}
        image_size = sorted(sizes)[0] if sizes else (896, 896)
    pwam = bb.get("pwam", {})
    swin = SwinConfig(
        embed_dim=bb["embed_dim"],
        depths=tuple(bb["depths"]),
        num_heads=tuple(bb["num_heads"]),
        window_size=bb["window_size"],
        patch_size=bb.get("patch_size", 4),
        mlp_ratio=float(bb["mlp_ratio"]),
        qkv_bias=bb.get("qkv_bias", True),
        drop_path_rate=bb.get("drop_path_rate", 0.3),
        layer_norm_eps=_eps_from(bb.get("norm_layer"), 1e-5),
    )
    text = TextConfig(
        vocab_size=te["vocab_size"],
        hidden_size=te["hidden_size"],
        num_layers=te["num_hidden_layers"],
        num_heads=te["num_attention_heads"],
        intermediate_size=te["intermediate_size"],
        max_position_embeddings=te["max_position_embeddings"],
        type_vocab_size=te.get("type_vocab_size", 2),
        layer_norm_eps=te.get("layer_norm_eps", 1e-12),
        hidden_dropout=te.get("hidden_dropout_prob", 0.1),
        attention_dropout=te.get("attention_probs_dropout_prob", 0.1),
        pad_token_id=te.get("pad_token_id", 0),
    )
    cim = bb.get("cim", {})
    return RemoteSAMConfig(
        image_size=tuple(image_size),
        swin=swin,
        text=text,
        pwam_heads=tuple(pwam.get("num_heads_fusion", [1] * len(swin.depths))),
        fusion_drop=pwam.get("fusion_drop", 0.0),
        cim_layers=cim.get("num_layers", 1),
        max_tokens=te.get("max_tokens", 20),
    )


def load_golden_config(path: str | Path, image_size: tuple[int, int] | None = None) -> RemoteSAMConfig:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"golden config not found: {path}")
    return config_from_golden(json.loads(path.read_text()), image_size)
