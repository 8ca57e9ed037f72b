"""Shared helpers of the metric modules: input checks and the 'no samples' rule (never a silent zero)."""

from __future__ import annotations

import numpy as np
import torch


def as_tensor(value, *, dtype=None) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach() if dtype is None else value.detach().to(dtype)
    return torch.as_tensor(np.asarray(value), dtype=dtype)


def valid_flags(valid, batch: int, device) -> torch.Tensor:
    """``valid`` as a bool tensor of length ``batch`` (all True when ``None``)."""
    if valid is None:
        return torch.ones(batch, dtype=torch.bool, device=device)
    flags = as_tensor(valid).to(device=device, dtype=torch.bool).reshape(-1)
    if flags.numel() != batch:
        raise ValueError(f"valid has {flags.numel()} flags for a batch of {batch}")
    return flags


def valid_map_pairs(pred: torch.Tensor, target: torch.Tensor, valid, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Check that two maps are both (H, W) or both (B, H, W); return them as (B, H, W) with invalid samples dropped."""
    if pred.ndim == 2:
        pred, target = pred[None], target[None]
    if pred.shape != target.shape or pred.ndim != 3:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must both be (B, H, W)")
    keep = valid_flags(valid, pred.shape[0], device)
    return pred[keep], target[keep]


def require_samples(count: int | torch.Tensor, what: str) -> None:
    """Raise instead of returning 0 when a metric saw no (valid) sample on any rank."""
    if int(count) == 0:
        raise ValueError(f"{what}: no valid samples were given, the metric is undefined")


def dist_rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0
