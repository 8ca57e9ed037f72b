"""Grounding, classification and counting metrics on hand-computed cases, and rank synchronisation with 2 processes."""

import numpy as np
import pytest
import torch

from rsam.metrics import (
    CountingAccuracy,
    GroundingMetric,
    MultiLabelAccuracy,
    ReferringSegMetric,
    SceneAccuracy,
    VocDetectionMetric,
    box_iou,
)


def test_box_iou_official_formula():
    assert box_iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert box_iou(None, [0, 0, 1, 1]) == 0.0
    assert box_iou([0, 0, 0, 0], [0, 0, 0, 0]) == 0.0  # union 0 -> 0


def test_grounding_metric_missing_prediction_scores_zero():
    metric = GroundingMetric()
    metric.update(
        [[0, 0, 10, 10], None, [0, 0, 10, 10], [0, 0, 10, 10]],
        [[0, 0, 10, 10], [0, 0, 5, 5], [0, 0, 10, 16], [50, 50, 60, 60]],
        valid=[1, 1, 1, 0],
    )
    result = metric.compute()
    # IoUs: 1, 0 (no prediction; the official loop would reuse the previous IoU), 100/160 = .625; 4th invalid
    assert result["mIoU"] == pytest.approx((1 + 0 + 0.625) / 3)
    assert result["Acc@0.5"] == pytest.approx(2 / 3) and result["Acc@0.7"] == pytest.approx(1 / 3)
    assert result["samples"] == 3


def test_multi_label_accuracy_is_label_wise():
    metric = MultiLabelAccuracy(["a", "b", "c"])
    metric.update(np.array([[1, 0, 0], [1, 1, 0]]), np.array([[1, 0, 1], [1, 1, 0]]))
    result = metric.compute()
    assert result["accuracy"] == pytest.approx(5 / 6)  # one wrong cell out of 6
    assert result["subset_accuracy"] == 0.5
    assert result["f1_micro"] == pytest.approx(2 * 3 / (2 * 3 + 0 + 1))
    assert result["accuracy_per_class"] == pytest.approx({"a": 1.0, "b": 1.0, "c": 0.5})
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        metric.update(np.ones((1, 2)), np.ones((1, 2)))


def test_scene_accuracy_from_scores_and_labels():
    metric = SceneAccuracy(["x", "y", "z"])
    metric.update(np.array([[0.9, 0.1, 0.0], [0.5, 0.5, 0.1], [0.0, 0.2, 0.8]]), [0, 1, 2])  # tie -> x (wrong)
    metric.update([1], [1])
    result = metric.compute()
    assert result["accuracy"] == pytest.approx(3 / 4)
    assert result["accuracy_per_class"]["y"] == pytest.approx(1 / 2)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        metric.update([3], [0])


def test_counting_accuracy_exact_match():
    metric = CountingAccuracy()
    metric.update([3, 0, 5, 2], [3, 1, 5, 4])
    result = metric.compute()
    assert result["accuracy"] == 0.5 and result["MAE"] == pytest.approx(3 / 4)
    with pytest.raises(ValueError, match="integers"):
        metric.update([1.5], [1])
    with pytest.raises(ValueError, match=">= 0"):
        metric.update([-1], [1])


def _two_rank_sync(metric_cls, updates, monkeypatch, **kwargs):
    """Build rank 0 and rank 1 metrics, run their updates, and compute rank 0 with a gather that returns both ranks'
    states (torchmetrics' own sync path with an in-process stand-in for all_gather; forked or spawned gloo workers
    are too slow or hang on this 2-core machine)."""
    import rsam.metrics.detection as detection_module

    other_states: list = []

    def record(tensor, group=None):
        other_states.append(tensor)
        return [tensor]

    def gather(tensor, group=None):
        return [tensor, other_states.pop(0)]

    rank1 = metric_cls(dist_sync_fn=record, distributed_available_fn=lambda: True, **kwargs)
    monkeypatch.setattr(detection_module, "dist_rank", lambda: 1)
    updates(rank1, 1)
    monkeypatch.setattr(detection_module, "dist_rank", lambda: 0)
    rank1.sync(dist_sync_fn=record)  # records rank 1's states in the order torchmetrics gathers them
    rank0 = metric_cls(dist_sync_fn=gather, distributed_available_fn=lambda: True, **kwargs)
    updates(rank0, 0)
    return rank0.compute()


def test_referring_metric_sums_states_over_ranks(monkeypatch):
    def updates(metric, rank):
        masks = torch.zeros(2, 4, 4, dtype=torch.bool)
        masks[0, :2, :2] = True
        target = torch.zeros(2, 4, 4, dtype=torch.bool)
        target[0, :1, :2] = True
        target[1, 3, 3] = rank == 0  # rank 0: a disjoint sample; rank 1: an invalid (padding) sample
        metric.update(masks, target, valid=[True, rank == 0])

    res = _two_rank_sync(ReferringSegMetric, updates, monkeypatch)
    # samples: rank0 (I=2, U=4), rank0 disjoint (I=0, U=1), rank1 (I=2, U=4)
    assert res["samples"] == 3
    assert res["oIoU"] == pytest.approx(4 / 9)
    assert res["mIoU"] == pytest.approx((0.5 + 0 + 0.5) / 3)


def test_voc_metric_concatenates_detections_over_ranks(monkeypatch):
    box = np.array([[0, 0, 9, 9]])

    def updates(metric, rank):
        # both ranks call their image "image 0" locally; rank 0 detects `box` where only rank 1's image has it
        if rank == 0:
            metric.update([{"boxes": box, "scores": [0.9], "labels": [0]}], [{"boxes": np.zeros((0, 4)), "labels": []}])
        else:
            metric.update([{"boxes": box + 50, "scores": [0.4], "labels": [0]}], [{"boxes": box, "labels": [0]}])

    voc = _two_rank_sync(VocDetectionMetric, updates, monkeypatch, class_names=["a"], box_kind="hbb")
    # the rank-tagged image ids keep the images apart: both detections are false positives -> AP 0
    # (merged into one "image 0", rank 0's detection would wrongly match rank 1's box and give AP 1)
    assert voc["images"] == 2 and voc["AP50"] == 0.0
