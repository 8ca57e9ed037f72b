"""Visual-grounding metrics (``tasks/code/eval/VG.py``): mean IoU and Acc@t (``IoU >= t``), synchronised across ranks.

Box IoU as ``VG.computeIoU``: areas ``(x2 - x1) * (y2 - y1)`` (no +1), 0 when the union is 0. A missing prediction
(``None`` / NaN box) scores IoU 0 — the official loop instead reuses the previous sample's IoU for its Prec@t (a bug,
not reproduced). The paper's "AP50" for RSVG is Acc@0.5.
"""

from __future__ import annotations

import math

import torch
from torchmetrics import Metric

from rsam.metrics._common import require_samples

ACC_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def box_iou(pred, target) -> float:
    """IoU of two ``[x1, y1, x2, y2]`` boxes (official VG formula); ``pred=None`` gives 0."""
    if pred is None or any(math.isnan(float(v)) for v in pred):
        return 0.0
    px1, py1, px2, py2 = (float(v) for v in pred)
    gx1, gy1, gx2, gy2 = (float(v) for v in target)
    inter = max(0.0, min(px2, gx2) - max(px1, gx1)) * max(0.0, min(py2, gy2) - max(py1, gy1))
    union = (px2 - px1) * (py2 - py1) + (gx2 - gx1) * (gy2 - gy1) - inter
    return inter / union if union > 0 else 0.0


class GroundingMetric(Metric):
    """``update(pred_boxes, target_boxes, valid=None)``: sequences of ``[x1, y1, x2, y2]`` (prediction may be None)."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, thresholds=ACC_THRESHOLDS, **kwargs):
        super().__init__(**kwargs)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.add_state("iou_sum", torch.tensor(0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("hits", torch.zeros(len(self.thresholds), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred_boxes, target_boxes, valid=None) -> None:
        pred_boxes, target_boxes = list(pred_boxes), list(target_boxes)
        if len(pred_boxes) != len(target_boxes):
            raise ValueError(f"{len(pred_boxes)} predictions for {len(target_boxes)} targets")
        flags = [True] * len(pred_boxes) if valid is None else [bool(v) for v in valid]
        if len(flags) != len(pred_boxes):
            raise ValueError(f"valid has {len(flags)} flags for {len(pred_boxes)} samples")
        for pred, target, keep in zip(pred_boxes, target_boxes, flags):
            if not keep:
                continue
            iou = box_iou(pred, target)
            self.iou_sum += iou
            self.count += 1
            self.hits += torch.tensor([iou >= t for t in self.thresholds], dtype=torch.long, device=self.device)

    def compute(self) -> dict[str, float]:
        require_samples(self.count, "visual grounding")
        result = {"mIoU": float(self.iou_sum / self.count)}
        for threshold, hits in zip(self.thresholds, self.hits.tolist()):
            result[f"Acc@{threshold:g}"] = hits / int(self.count)
        result["samples"] = int(self.count)
        return result
