"""Checkpoints: one loader for RemoteSAM weights (:func:`load_model`: rsam folders, official ``.pth``, Lightning
``.ckpt``, DeepSpeed folders, registered names), pretrained initialisation (Swin: ``swin_pretrained``; BERT:
``text_encoder``), golden sets, safe readers."""

from __future__ import annotations

from rsam.checkpoint.loader import load_model, open_model
from rsam.checkpoint.official import load_official_checkpoint, load_strict
from rsam.checkpoint.pretrained import load_pretrained, save_pretrained
from rsam.checkpoint.weights_io import CheckpointError, read_state_dict, safe_torch_load

__all__ = [
    "CheckpointError",
    "load_model",
    "load_official_checkpoint",
    "load_pretrained",
    "load_strict",
    "open_model",
    "read_state_dict",
    "safe_torch_load",
    "save_pretrained",
]
