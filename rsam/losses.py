"""The official RemoteSAM segmentation loss (``loss/loss.py``; the paper only names it L_seg).

``L = (1 - w) * CE(logits, y; class weights [0.9, 1.1]) + w * Dice(softmax(logits), onehot(y))`` with ``w = 0.1``.

- CE is PyTorch's weighted cross-entropy with its default ``mean`` reduction, i.e. the weighted mean
  ``sum_i c[y_i] * nll_i / sum_i c[y_i]`` over every pixel of the batch.
- Dice is computed per sample and per class over the pixels, ``1 - (2 I + s) / (P + T + s)`` with smooth ``s = 1e-6``,
  then **summed** over batch x classes (``reduction="sum"``), so its scale grows with the batch size, as upstream.
- Computed once, in float32 (also under bf16 autocast): one log-softmax gives the CE (``nll_loss``) and the Dice
  probabilities; the one-hot target is never materialised (upstream builds it for the Dice term).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rsam.models.norms import autocast_off

OFFICIAL_CLASS_WEIGHTS = (0.9, 1.1)
OFFICIAL_DICE_WEIGHT = 0.1
OFFICIAL_DICE_SMOOTH = 1e-6


def _dice_from_probs(probs: torch.Tensor, target: torch.Tensor, smooth: float) -> torch.Tensor:
    """Dice over (sample, class) from probabilities, without a one-hot target: the intersection of class c is the
    sum of p_c over the pixels labelled c (a scatter-add of the true-class probabilities), |T_c| a per-sample count."""
    batch, classes = probs.shape[:2]
    labels = target.reshape(batch, -1)
    true_class = probs.gather(1, target.unsqueeze(1)).reshape(batch, -1)
    intersection = true_class.new_zeros(batch, classes).scatter_add_(1, labels, true_class)
    counts = torch.zeros(batch, classes, dtype=probs.dtype, device=probs.device)
    counts.scatter_add_(1, labels, torch.ones_like(true_class))
    union = probs.flatten(2).sum(-1) + counts
    return (1 - (2 * intersection + smooth) / (union + smooth)).sum()


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = OFFICIAL_DICE_SMOOTH) -> torch.Tensor:
    """Sum over (sample, class) of ``1 - dice(softmax(logits)[:, c], target == c)``; logits (B, C, H, W)."""
    return _dice_from_probs(logits.softmax(dim=1), target.long(), smooth)


class SegmentationLoss(nn.Module):
    """Weighted CE + Dice as in the official trainer; ``forward(logits (B,C,H,W), target (B,H,W) int)``."""

    def __init__(
        self,
        dice_weight: float = OFFICIAL_DICE_WEIGHT,
        class_weights: Sequence[float] = OFFICIAL_CLASS_WEIGHTS,
        dice_smooth: float = OFFICIAL_DICE_SMOOTH,
    ):
        super().__init__()
        if not 0.0 <= dice_weight <= 1.0:
            raise ValueError(f"dice_weight must be in [0, 1], got {dice_weight}")
        self.dice_weight = float(dice_weight)
        self.dice_smooth = float(dice_smooth)
        self.register_buffer("class_weights", torch.tensor(list(class_weights), dtype=torch.float32), persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] != self.class_weights.numel():
            raise ValueError(f"logits have {logits.shape[1]} classes, class_weights {self.class_weights.numel()}")
        target = target.long()
        # float32 whatever the autocast state; one log-softmax serves both terms (probs = exp(log p))
        with autocast_off(logits.device):
            log_probs = F.log_softmax(logits.float(), dim=1)
            ce = F.nll_loss(log_probs, target, weight=self.class_weights.to(logits.device, torch.float32))
            dice = _dice_from_probs(log_probs.exp(), target, self.dice_smooth)
        return (1 - self.dice_weight) * ce + self.dice_weight * dice
