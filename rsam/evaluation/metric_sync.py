"""Cross-rank synchronisation of torchmetrics metrics whose states are lists of per-image tensors
(``MeanAveragePrecision`` behind :class:`rsam.metrics.CocoDetectionMetric`, :class:`rsam.metrics.VocDetectionMetric`).

torchmetrics gathers a list state without reduction entry by entry (one ``all_gather`` per tensor), which pairs up the
wrong tensors — or fails — as soon as ranks hold different numbers of images (any benchmark whose size is not a
multiple of the world size); a rank without any image sends a 1-D empty tensor where the others send 2-D boxes.
:func:`compute_synchronised` therefore gathers the whole states of metrics with list states with
``all_gather_object`` (rank order; lists concatenated, tensors reduced with the state's own reduction) and computes
with torchmetrics' sync switched off; metrics with tensor states only compute with torchmetrics' own sync.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def needs_object_gather(metric) -> bool:
    """True for a torchmetrics metric with a list state."""
    return isinstance(metric, Metric) and any(isinstance(default, list) for default in metric._defaults.values())


def gather_states(metric: Metric, group=None) -> None:
    """Replace every state of ``metric`` by the union over ranks (same on every rank afterwards)."""
    world = torch.distributed.get_world_size(group)
    for name in metric._defaults:
        local = getattr(metric, name)
        local = [t.cpu() for t in local] if isinstance(local, list) else local.cpu()
        parts = [None] * world
        torch.distributed.all_gather_object(parts, local, group=group)
        if isinstance(local, list):
            merged = [t.to(metric.device) for part in parts for t in part]
        else:
            reduce = metric._reductions[name]
            stacked = torch.stack([part.to(metric.device) for part in parts])
            merged = reduce(stacked) if reduce is not None else stacked
        setattr(metric, name, merged)


def compute_synchronised(metric, group=None):
    """``metric.compute()`` over all ranks (see the module docstring)."""
    if not (_distributed() and needs_object_gather(metric)):
        return metric.compute()
    gather_states(metric, group)
    saved = metric.sync_on_compute, metric._to_sync
    metric.sync_on_compute = metric._to_sync = False
    try:
        return metric.compute()
    finally:
        metric.sync_on_compute, metric._to_sync = saved
