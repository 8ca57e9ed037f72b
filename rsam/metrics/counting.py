"""Counting metric (``tasks/code/eval/CNT.py``): accuracy = fraction of samples whose count equals the ground truth
exactly. MAE is reported as well (not in the paper). Synchronised across ranks."""

from __future__ import annotations

import torch
from torchmetrics import Metric

from rsam.metrics._common import as_tensor, require_samples, valid_flags


class CountingAccuracy(Metric):
    """``update(pred_counts, target_counts, valid=None)`` with integer sequences."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("correct", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("abs_error", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred_counts, target_counts, valid=None) -> None:
        pred = as_tensor(pred_counts).to(self.device).reshape(-1)
        target = as_tensor(target_counts).to(self.device).reshape(-1)
        if pred.shape != target.shape:
            raise ValueError(f"{pred.numel()} predicted counts for {target.numel()} targets")
        for name, values in (("predicted", pred), ("target", target)):
            if values.is_floating_point() and not torch.equal(values, values.round()):
                raise ValueError(f"{name} counts must be integers")
            if values.numel() and values.min() < 0:
                raise ValueError(f"{name} counts must be >= 0")
        keep = valid_flags(valid, pred.numel(), self.device)
        pred, target = pred[keep].long(), target[keep].long()
        self.correct += (pred == target).sum()
        self.abs_error += (pred - target).abs().sum()
        self.count += pred.numel()

    def compute(self) -> dict:
        require_samples(self.count, "counting")
        return {
            "accuracy": int(self.correct) / int(self.count),
            "MAE": int(self.abs_error) / int(self.count),
            "samples": int(self.count),
        }
