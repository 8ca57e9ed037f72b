"""Classification metrics, synchronised across ranks.

* Multi-label (``tasks/code/eval/MLC.py`` -> ``MultiLabelRunningScore.accuracy``): the paper's "Acc" is
  ``(TP + TN) / (TP + TN + FP + FN)`` over all image x class decisions (label-wise / Hamming accuracy). Also
  reported: per-class accuracy, exact-match (subset) accuracy, micro F1.
* Scene (``MCC.py``): accuracy of the argmax class (ties -> first class).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric

from rsam.metrics._common import as_tensor, require_samples, valid_flags


class MultiLabelAccuracy(Metric):
    """``update(pred, target, valid=None)``: boolean ``(B, C)`` presence matrices."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, class_names: Sequence[str], **kwargs):
        super().__init__(**kwargs)
        self.class_names = tuple(class_names)
        c = len(self.class_names)
        for name in ("tp", "tn", "fp", "fn"):
            self.add_state(name, torch.zeros(c, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("exact", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred, target, valid=None) -> None:
        pred = as_tensor(pred).to(self.device) != 0
        target = as_tensor(target).to(self.device) != 0
        if pred.ndim == 1:
            pred, target = pred[None], target[None]
        if pred.shape != target.shape or pred.ndim != 2 or pred.shape[1] != len(self.class_names):
            raise ValueError(
                f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must be (B, {len(self.class_names)})"
            )
        keep = valid_flags(valid, pred.shape[0], self.device)
        pred, target = pred[keep], target[keep]
        self.tp += (pred & target).sum(0)
        self.tn += (~pred & ~target).sum(0)
        self.fp += (pred & ~target).sum(0)
        self.fn += (~pred & target).sum(0)
        self.exact += (pred == target).all(1).sum()
        self.count += pred.shape[0]

    def compute(self) -> dict:
        require_samples(self.count, "multi-label classification")
        tp, tn, fp, fn = (int(t.sum()) for t in (self.tp, self.tn, self.fp, self.fn))
        per_class = (self.tp + self.tn).double() / (self.tp + self.tn + self.fp + self.fn).double()
        return {
            "accuracy": (tp + tn) / (tp + tn + fp + fn),
            "subset_accuracy": int(self.exact) / int(self.count),
            "f1_micro": 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 0.0,
            "accuracy_per_class": {n: float(v) for n, v in zip(self.class_names, per_class)},
            "samples": int(self.count),
        }


class SceneAccuracy(Metric):
    """``update(pred, target, valid=None)``: ``pred`` class indices ``(B,)`` or scores ``(B, C)`` (argmax)."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, class_names: Sequence[str], **kwargs):
        super().__init__(**kwargs)
        self.class_names = tuple(class_names)
        c = len(self.class_names)
        self.add_state("confusion", torch.zeros(c, c, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred, target, valid=None) -> None:
        pred = as_tensor(pred).to(self.device)
        if pred.ndim == 2:
            if pred.shape[1] != len(self.class_names):
                raise ValueError(f"scores have {pred.shape[1]} columns for {len(self.class_names)} classes")
            pred = pred.argmax(1)
        pred = pred.reshape(-1).long()
        target = as_tensor(target).to(self.device).reshape(-1).long()
        if pred.shape != target.shape:
            raise ValueError(f"{pred.numel()} predictions for {target.numel()} targets")
        keep = valid_flags(valid, pred.numel(), self.device)
        pred, target = pred[keep], target[keep]
        c = len(self.class_names)
        if pred.numel() and (min(pred.min(), target.min()) < 0 or max(pred.max(), target.max()) >= c):
            raise ValueError(f"class indices must be in [0, {c})")
        self.confusion += torch.bincount(target * c + pred, minlength=c * c).reshape(c, c)

    def compute(self) -> dict:
        total = int(self.confusion.sum())
        require_samples(total, "scene classification")
        per_class = self.confusion.diag().double() / self.confusion.sum(1).double().clamp(min=1)
        return {
            "accuracy": int(self.confusion.diag().sum()) / total,
            "accuracy_per_class": {n: float(v) for n, v in zip(self.class_names, per_class)},
            "samples": total,
        }
