"""Semantic-segmentation metrics from a confusion matrix (``tasks/code/eval/SEG.py``), synchronised across ranks.

Official iSAID rule: rows = ground truth, columns = prediction, over ``C`` classes *including background*; per-class
``IoU = diag / max(row + col - diag, 1)`` so a class absent from both scores 0 and is still averaged in;
``mIoU = mean`` over all C classes; ``mPA`` (the second number SEG.py prints) is the mean of the per-class pixel
accuracy ``diag / max(row, 1)`` over all C classes, so a class without ground-truth pixels scores 0 and is averaged
in, background included. Also reported: ``mIoU_present`` (mean over classes with a non-empty union) and
F1 per class ``2TP / (2TP + FP + FN)`` with ``mF1`` (SEG.py reports no F1; the paper's Potsdam mF1 has no script —
this definition is ours). ``mean_classes`` restricts the means to given class indices (e.g. to leave out a clutter
class); by default every class counts. Pixels whose target equals ``ignore_index`` are skipped (the official iSAID
protocol has none: unknown colours are background).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric

from rsam.metrics._common import as_tensor, require_samples, valid_map_pairs


class SemanticSegMetric(Metric):
    full_state_update = False
    higher_is_better = True

    def __init__(
        self,
        class_names: Sequence[str],
        ignore_index: int | None = None,
        mean_classes: Sequence[int] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.class_names = tuple(class_names)
        self.num_classes = len(self.class_names)
        if self.num_classes < 2:
            raise ValueError("semantic segmentation needs at least 2 classes (background included)")
        self.ignore_index = ignore_index
        self.mean_classes = tuple(range(self.num_classes)) if mean_classes is None else tuple(mean_classes)
        if not self.mean_classes or any(not 0 <= c < self.num_classes for c in self.mean_classes):
            raise ValueError(f"mean_classes must be indices in [0, {self.num_classes})")
        n = self.num_classes
        self.add_state("confusion", torch.zeros(n, n, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("images", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred_labels, target_labels, valid=None) -> None:
        pred = as_tensor(pred_labels).to(self.device, torch.long)
        target = as_tensor(target_labels).to(self.device, torch.long)
        pred, target = valid_map_pairs(pred, target, valid, self.device)
        counted = torch.ones_like(target, dtype=torch.bool)
        if self.ignore_index is not None:
            counted &= target != self.ignore_index
        pred, target = pred[counted], target[counted]
        n = self.num_classes
        for name, values in (("prediction", pred), ("target", target)):
            if values.numel() and (values.min() < 0 or values.max() >= n):
                raise ValueError(
                    f"{name} holds labels outside [0, {n}) (classes: {n}, ignore_index: {self.ignore_index})"
                )
        self.confusion += torch.bincount(target * n + pred, minlength=n * n).reshape(n, n)
        self.images += pred.shape[0]

    def compute(self) -> dict:
        require_samples(self.images, "semantic segmentation")
        cm = self.confusion.to(torch.float64)
        tp = cm.diag()
        gt_total, pred_total = cm.sum(1), cm.sum(0)
        union = gt_total + pred_total - tp
        iou = tp / union.clamp(min=1)
        f1 = 2 * tp / (gt_total + pred_total).clamp(min=1)
        pixel_accuracy = tp / gt_total.clamp(min=1)  # SEG.py per_class_PA
        index = torch.tensor(self.mean_classes, device=cm.device)
        present = index[union[index] > 0]
        return {
            "mIoU": float(iou[index].mean()),
            "mIoU_present": float(iou[present].mean()) if present.numel() else 0.0,
            "mF1": float(f1[index].mean()),
            "mPA": float(pixel_accuracy[index].mean()),
            "pixel_accuracy": float(tp.sum() / cm.sum().clamp(min=1)),
            "IoU_per_class": {name: float(v) for name, v in zip(self.class_names, iou)},
            "F1_per_class": {name: float(v) for name, v in zip(self.class_names, f1)},
            "PA_per_class": {name: float(v) for name, v in zip(self.class_names, pixel_accuracy)},
            "images": int(self.images),
        }
