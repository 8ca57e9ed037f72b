"""Loading the official ``RemoteSAMv1.pth`` safely and strictly.

The official file is a pickle of ``{'model', 'optimizer', 'epoch', 'args' (argparse.Namespace), 'lr_scheduler'}``.
We read it with torch's weights-only unpickler and only ``argparse.Namespace`` added to its allow-list, so a pickle that
tries to run code fails before anything runs. Keys: a ``module.`` prefix is stripped and the BERT pooler keys (the
official model sets ``pooler = None``) are dropped; any other missing or unexpected key is an error listing them.
Architecture numbers are inferred from tensor shapes; head counts come from ``args`` or an explicit config.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from rsam.checkpoint.weights_io import CheckpointError, safe_torch_load  # noqa: F401 (re-exported)
from rsam.models.config import RemoteSAMConfig, SwinConfig, TextConfig

log = logging.getLogger(__name__)

POOLER_KEYS = ("text_encoder.pooler.dense.weight", "text_encoder.pooler.dense.bias")
MODULE_PREFIX = "module."
KNOWN_BERT_HEADS = {"bert-base-uncased": 12, "bert-base-cased": 12, "bert-large-uncased": 16, "bert-large-cased": 16}


def extract_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The model weights of an official checkpoint dict (``['model']``) or of a bare state_dict."""
    state = obj.get("model", obj) if isinstance(obj, Mapping) else None
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"{source}: no model state_dict found (expected a dict with a 'model' entry)")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{source}: non-tensor entries in the state_dict: {bad[:10]}")
    return dict(state)


def normalize_official_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip a DDP ``module.`` prefix and drop the BERT pooler keys; nothing else is touched."""
    out = {}
    for key, value in state.items():
        if key.startswith(MODULE_PREFIX):
            key = key[len(MODULE_PREFIX) :]
        if key in POOLER_KEYS:
            continue
        out[key] = value
    return out


def load_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """``load_state_dict(strict=True)`` with an error that lists every missing / unexpected / mis-shaped key."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mis_shaped = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    )
    if missing or unexpected or mis_shaped:
        parts = []
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mis_shaped),
        ):
            if items:
                shown = ", ".join(items[:20]) + (f", ... ({len(items)} in all)" if len(items) > 20 else "")
                parts.append(f"{label}: {shown}")
        raise CheckpointError(f"{source} does not match the model: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def _count(state: Mapping[str, torch.Tensor], pattern: str) -> int:
    indices = {int(m.group(1)) for k in state for m in [re.match(pattern, k)] if m}
    return max(indices) + 1 if indices else 0


def infer_config(
    state: Mapping[str, torch.Tensor], args: Any = None, overrides: RemoteSAMConfig | None = None
) -> RemoteSAMConfig:
    """Architecture from tensor shapes; head counts and image size from ``args`` (official Namespace) or ``overrides``.

    Inferred: embed dim, patch size, depths, window, Swin heads (bias-table columns), mlp ratio, text widths/layers/
    vocab/positions. Not inferable from shapes: PWAM heads (``args.mha``), BERT heads (``args.ck_bert`` name).
    """

    def need(key):
        if key not in state:
            raise CheckpointError(f"cannot infer the architecture: key {key!r} is missing")
        return state[key]

    proj = need("backbone.patch_embed.proj.weight")
    embed_dim, patch = proj.shape[0], proj.shape[-1]
    num_stages = _count(state, r"backbone\.layers\.(\d+)\.")
    depths = tuple(_count(state, rf"backbone\.layers\.{i}\.blocks\.(\d+)\.") for i in range(num_stages))
    table = need("backbone.layers.0.blocks.0.attn.relative_position_bias_table")
    window = (math.isqrt(table.shape[0]) + 1) // 2
    swin_heads = tuple(
        need(f"backbone.layers.{i}.blocks.0.attn.relative_position_bias_table").shape[1] for i in range(num_stages)
    )
    mlp_ratio = need("backbone.layers.0.blocks.0.mlp.fc1.weight").shape[0] / embed_dim
    words = need("text_encoder.embeddings.word_embeddings.weight")
    text_layers = _count(state, r"text_encoder\.encoder\.layer\.(\d+)\.")

    base = overrides or RemoteSAMConfig()
    args_dict = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})

    if overrides is not None:
        pwam_heads, text_heads, image_size = overrides.pwam_heads, overrides.text.num_heads, overrides.image_size
        fusion_drop = overrides.fusion_drop
    else:
        mha = args_dict.get("mha", "")
        pwam_heads = tuple(int(h) for h in mha.split("-")) if mha else (1,) * num_stages
        bert_name = str(args_dict.get("ck_bert", "bert-base-uncased"))
        if bert_name not in KNOWN_BERT_HEADS:
            raise CheckpointError(
                f"cannot tell the text encoder's head count (args.ck_bert={bert_name!r}); pass an explicit config"
            )
        text_heads = KNOWN_BERT_HEADS[bert_name]
        img = args_dict.get("img_size", 896)
        image_size = (int(img), int(img))
        fusion_drop = float(args_dict.get("fusion_drop", 0.0))
        grid_tokens = state.get("backbone.cim.block.0.csa1.m.attention.proj.weight")
        if "img_size" not in args_dict and grid_tokens is not None:
            side = math.isqrt(grid_tokens.shape[0])
            image_size = (side * patch * 2 ** (num_stages - 1),) * 2
    swin = SwinConfig(
        embed_dim=embed_dim,
        depths=depths,
        num_heads=swin_heads,
        window_size=window,
        patch_size=patch,
        mlp_ratio=mlp_ratio,
        qkv_bias="backbone.layers.0.blocks.0.attn.qkv.bias" in state,
        drop_path_rate=base.swin.drop_path_rate,
        layer_norm_eps=base.swin.layer_norm_eps,
    )
    text = TextConfig(
        vocab_size=words.shape[0],
        hidden_size=words.shape[1],
        num_layers=text_layers,
        num_heads=text_heads,
        intermediate_size=need("text_encoder.encoder.layer.0.intermediate.dense.weight").shape[0]
        if text_layers
        else base.text.intermediate_size,
        max_position_embeddings=need("text_encoder.embeddings.position_embeddings.weight").shape[0],
        type_vocab_size=need("text_encoder.embeddings.token_type_embeddings.weight").shape[0],
        layer_norm_eps=base.text.layer_norm_eps,
    )
    return RemoteSAMConfig(
        image_size=image_size,
        swin=swin,
        text=text,
        pwam_heads=pwam_heads,
        fusion_drop=fusion_drop,
        cim_layers=_count(state, r"backbone\.cim\.block\.(\d+)\.") or 1,
        max_tokens=base.max_tokens,
        num_classes=need("classifier.conv1_1.weight").shape[0],
    )


def load_official_checkpoint(path: str | Path, config: RemoteSAMConfig | None = None):
    """Read an official ``.pth`` safely -> ``(model in eval mode, config, info)``; strict keys after normalisation.
    Other formats are refused (:func:`rsam.checkpoint.load_model` reads them all)."""
    from rsam.checkpoint.loader import OFFICIAL, open_model

    loaded = open_model(path, config=config)
    if loaded.kind != OFFICIAL:
        raise CheckpointError(f"{path}: a {loaded.kind}, not an official RemoteSAM checkpoint")
    return loaded.model, loaded.model.config, loaded.info
