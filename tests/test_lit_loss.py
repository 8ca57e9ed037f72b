"""The official loss (0.9 weighted CE + 0.1 summed Dice) against values computed by hand."""

import math

import pytest
import torch

from rsam.losses import SegmentationLoss, dice_loss

# one sample, 2 classes, 1 x 2 pixels: pixel A logits (0, 0) -> p = (1/2, 1/2); pixel B (0, ln 3) -> p = (1/4, 3/4)
LOGITS = torch.tensor([[[[0.0, 0.0]], [[0.0, math.log(3.0)]]]])
TARGET = torch.tensor([[[1, 0]]])  # A is foreground, B background

# CE, weighted mean with class weights (0.9, 1.1): (1.1 * ln 2 + 0.9 * ln 4) / (1.1 + 0.9) = 1.45 ln 2
HAND_CE = 1.45 * math.log(2.0)
# Dice per class: class 0: I = 1/4, P + T = 3/4 + 1 -> 1 - 0.5/1.75 = 5/7; class 1: I = 1/2, P + T = 5/4 + 1 -> 5/9
HAND_DICE = 5 / 7 + 5 / 9


def test_dice_is_summed_over_classes():
    assert dice_loss(LOGITS, TARGET, smooth=0.0).item() == pytest.approx(HAND_DICE, rel=1e-6)


def test_official_loss_matches_hand_computation():
    loss = SegmentationLoss()(LOGITS, TARGET)
    assert loss.item() == pytest.approx(0.9 * HAND_CE + 0.1 * HAND_DICE, rel=1e-5)


def test_dice_is_summed_over_the_batch_while_ce_is_a_mean():
    twice_logits, twice_target = LOGITS.repeat(2, 1, 1, 1), TARGET.repeat(2, 1, 1)
    loss = SegmentationLoss()(twice_logits, twice_target)
    assert loss.item() == pytest.approx(0.9 * HAND_CE + 0.1 * 2 * HAND_DICE, rel=1e-5)


def test_class_weights_change_the_ce_term():
    unweighted = SegmentationLoss(dice_weight=0.0, class_weights=(1.0, 1.0))(LOGITS, TARGET)
    assert unweighted.item() == pytest.approx((math.log(2.0) + math.log(4.0)) / 2, rel=1e-6)


def test_smooth_keeps_an_empty_class_finite():
    logits = torch.tensor([[[[5.0, 5.0]], [[-5.0, -5.0]]]])  # confident background everywhere, target empty
    loss = dice_loss(logits, torch.zeros(1, 1, 2, dtype=torch.long))
    p1 = 1 / (1 + math.exp(10.0))  # foreground probability of both pixels
    p0, smooth = 1 - p1, 1e-6
    class0 = 1 - (2 * 2 * p0 + smooth) / (2 * p0 + 2 + smooth)
    class1 = 1 - smooth / (2 * p1 + smooth)  # no target pixel: only the smooth term keeps it defined
    assert loss.item() == pytest.approx(class0 + class1, rel=1e-4)
