"""The official RemoteSAM segmentation loss (``loss/loss.py``; the paper only names it L_seg).

``L = (1 - w) * CE(logits, y; class weights [0.9, 1.1]) + w * Dice(softmax(logits), onehot(y))`` with ``w = 0.1``.

- CE is PyTorch's weighted cross-entropy with its default ``mean`` reduction, i.e. the weighted mean
  ``sum_i c[y_i] * nll_i / sum_i c[y_i]`` over every pixel of the batch.
- Dice is computed per sample and per class over the pixels, ``1 - (2 I + s) / (P + T + s)`` with smooth ``s = 1e-6``,
  then **summed** over batch x classes (``reduction="sum"``), so its scale grows with the batch size, as upstream.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

OFFICIAL_CLASS_WEIGHTS = (0.9, 1.1)
OFFICIAL_DICE_WEIGHT = 0.1
OFFICIAL_DICE_SMOOTH = 1e-6


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = OFFICIAL_DICE_SMOOTH) -> torch.Tensor:
    """Sum over (sample, class) of ``1 - dice(softmax(logits)[:, c], target == c)``; logits (B, C, H, W)."""
    probs = logits.softmax(dim=1)
    onehot = F.one_hot(target.long(), probs.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    intersection = (probs * onehot).flatten(2).sum(-1)
    union = (probs + onehot).flatten(2).sum(-1)
    return (1 - (2 * intersection + smooth) / (union + smooth)).sum()


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
        ce = F.cross_entropy(logits.float(), target, weight=self.class_weights.to(logits.device, torch.float32))
        dice = dice_loss(logits.float(), target, self.dice_smooth)
        return (1 - self.dice_weight) * ce + self.dice_weight * dice
