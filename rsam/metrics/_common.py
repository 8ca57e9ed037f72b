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


def require_samples(count: int | torch.Tensor, what: str) -> None:
    """Raise instead of returning 0 when a metric saw no (valid) sample on any rank."""
    if int(count) == 0:
        raise ValueError(f"{what}: no valid samples were given, the metric is undefined")


def dist_rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0
