"""Referring-segmentation metrics (``tasks/code/eval/REF.py``), as a torchmetrics ``Metric`` synchronised across ranks.

Per sample (one sentence): ``I = |P and G|``, ``U = |P or G|``, ``IoU = I / U`` and **0 when U = 0** (empty prediction
and empty target: the official rule). oIoU = sum(I) / sum(U) over the set; mIoU = mean per-sample IoU;
Prec@t = fraction of samples with ``IoU >= t`` for t in 0.5 ... 0.9. Values are fractions (x100 for the paper's %).

The official script computes them at 896 x 896 with the target nearest-resized to that size; the caller chooses
the resolution (see :mod:`rsam.evaluation.runner`). Samples whose ``valid`` flag is False (padding added to even out
ranks) are ignored.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from rsam.metrics._common import as_tensor, require_samples, valid_map_pairs

PREC_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


class ReferringSegMetric(Metric):
    """``update(pred_mask, target_mask, valid=None)`` with masks ``(B, H, W)`` (nonzero = foreground)."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, thresholds=PREC_THRESHOLDS, **kwargs):
        super().__init__(**kwargs)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.add_state("cum_intersection", torch.tensor(0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("cum_union", torch.tensor(0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("iou_sum", torch.tensor(0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("hits", torch.zeros(len(self.thresholds), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred_mask, target_mask, valid=None) -> None:
        pred = as_tensor(pred_mask).to(self.device) != 0
        target = as_tensor(target_mask).to(self.device) != 0
        pred, target = valid_map_pairs(pred, target, valid, self.device)
        inter = (pred & target).flatten(1).sum(1).to(torch.float64)
        union = (pred | target).flatten(1).sum(1).to(torch.float64)
        iou = torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))
        self.cum_intersection += inter.sum()
        self.cum_union += union.sum()
        self.iou_sum += iou.sum()
        self.count += iou.numel()
        thresholds = torch.tensor(self.thresholds, dtype=torch.float64, device=self.device)
        self.hits += (iou[:, None] >= thresholds[None, :]).sum(0)

    def compute(self) -> dict[str, float]:
        require_samples(self.count, "referring segmentation")
        result = {
            "oIoU": float(self.cum_intersection / self.cum_union) if self.cum_union > 0 else 0.0,
            "mIoU": float(self.iou_sum / self.count),
        }
        for threshold, hits in zip(self.thresholds, self.hits.tolist()):
            result[f"Prec@{threshold:g}"] = hits / int(self.count)
        result["samples"] = int(self.count)
        return result
