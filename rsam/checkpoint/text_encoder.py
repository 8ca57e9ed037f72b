"""Loading BERT-architecture text encoders from local HuggingFace-format folders (no hub).

A folder holds ``config.json`` (BertConfig fields) and ``model.safetensors`` or ``pytorch_model.bin`` (read
weights-only), as ``save_pretrained`` writes them and as bert-base-uncased is published on the HF hub. Keys are mapped
to ours by stripping a ``bert.`` prefix and renaming the TF-era ``LayerNorm.gamma/beta`` to ``weight/bias`` (as
transformers does on load); the pooler (the official model sets ``pooler = None``), MLM/NSP heads (``cls.*``) and the
``position_ids``/``token_type_ids`` buffers are dropped because RemoteSAM does not use them; everything else must
match exactly. A folder whose architecture differs from the model's text section is refused naming both.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from rsam.checkpoint.official import CheckpointError, load_strict
from rsam.checkpoint.weights_io import read_state_dict
from rsam.models.config import TextConfig

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
CHECKED_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_layers",
    "num_heads",
    "intermediate_size",
    "max_position_embeddings",
)
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


def bert_weights_file(folder: str | Path) -> Path:
    """``model.safetensors``, else ``pytorch_model.bin``, of a Hugging Face folder."""
    folder = Path(folder)
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"text encoder weights not found in {folder} (expected one of {', '.join(WEIGHT_FILES)})")


def hf_bert_state(weights_path: str | Path) -> dict[str, torch.Tensor]:
    """Our text-encoder keys from a HF BERT weights file (or folder)."""
    path = Path(weights_path)
    if path.is_dir():
        path = bert_weights_file(path)
    if not path.is_file():
        raise FileNotFoundError(f"text encoder weights not found: {path}")
    state = {}
    for key, value in read_state_dict(path).items():
        key = key[len("bert.") :] if key.startswith("bert.") else key
        key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key))
        if not _UNUSED.match(key):
            state[key] = value
    return state


def check_text_config(found: TextConfig, expected: TextConfig, source: str, expected_name: str = "the model") -> None:
    """Refuse a text encoder whose architecture differs from ``expected``, naming both values."""
    diffs = [
        f"{name} {getattr(found, name)} vs {getattr(expected, name)}"
        for name in CHECKED_FIELDS
        if getattr(found, name) != getattr(expected, name)
    ]
    if diffs:
        raise CheckpointError(
            f"text encoder {source} does not match {expected_name} ({'; '.join(diffs)}: folder vs model.text)"
        )


def load_text_encoder(encoder: torch.nn.Module, folder: str | Path) -> Path:
    """Load a local HF BERT folder's weights into ``encoder`` (a ``BertTextEncoder``), strictly; returns the file."""
    folder = Path(folder)
    check_text_config(text_config_from_hf(folder / "config.json"), encoder.config, str(folder))
    weights = bert_weights_file(folder)
    load_strict(encoder, hf_bert_state(weights), f"text encoder {weights}")
    return weights
