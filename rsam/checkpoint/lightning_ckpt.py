"""Kept for imports written before the one loader: use :func:`rsam.checkpoint.load_model`, which reads a Lightning
checkpoint of ``rsam fit`` and every other format."""

from rsam.checkpoint.loader import load_model as load_any_model
from rsam.checkpoint.loader import network_state

__all__ = ["load_any_model", "network_state"]
