"""Loading BERT-architecture text encoders from local HuggingFace-format folders (no hub).

A folder holds ``config.json`` (BertConfig fields) and ``model.safetensors``. Keys are mapped to ours by stripping a
``bert.`` prefix; the pooler, MLM/NSP heads (``cls.*``) and the ``position_ids``/``token_type_ids`` buffers are
dropped because RemoteSAM does not use them; everything else must match exactly.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from rsam.checkpoint.official import CheckpointError, load_strict
from rsam.models.config import TextConfig

_UNUSED = re.compile(r"^(pooler\.|cls\.|embeddings\.position_ids$|embeddings\.token_type_ids$)")


def text_config_from_hf(config_path: str | Path) -> TextConfig:
    path = Path(config_path)
    if not path.is_file():
        raise FileNotFoundError(f"text encoder config not found: {path}")
    data = json.loads(path.read_text())
    if data.get("model_type", "bert") != "bert" or data.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(
            f"{path}: only BERT encoders with erf GELU are supported "
            f"(model_type={data.get('model_type')!r}, hidden_act={data.get('hidden_act')!r})"
        )
    if data.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError(f"{path}: position_embedding_type {data['position_embedding_type']!r} is not supported")
    return TextConfig(
        vocab_size=data["vocab_size"],
        hidden_size=data["hidden_size"],
        num_layers=data["num_hidden_layers"],
        num_heads=data["num_attention_heads"],
        intermediate_size=data["intermediate_size"],
        max_position_embeddings=data["max_position_embeddings"],
        type_vocab_size=data.get("type_vocab_size", 2),
        layer_norm_eps=data.get("layer_norm_eps", 1e-12),
        hidden_dropout=data.get("hidden_dropout_prob", 0.1),
        attention_dropout=data.get("attention_probs_dropout_prob", 0.1),
        pad_token_id=data.get("pad_token_id", 0),
    )


def hf_bert_state(weights_path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(f"text encoder weights not found: {path}")
    state = {}
    for key, value in load_file(str(path)).items():
        key = key[len("bert.") :] if key.startswith("bert.") else key
        if not _UNUSED.match(key):
            state[key] = value
    return state


def load_text_encoder(encoder: torch.nn.Module, folder: str | Path) -> None:
    """Load a local HF BERT folder's weights into ``encoder`` (a ``BertTextEncoder``), strictly."""
    folder = Path(folder)
    load_strict(encoder, hf_bert_state(folder / "model.safetensors"), f"text encoder {folder}")
