"""Referring and semantic segmentation metrics on hand-computed cases."""

import numpy as np
import pytest

from rsam.metrics import ReferringSegMetric, SemanticSegMetric


def _mask(cells, shape=(4, 4)):
    m = np.zeros(shape, bool)
    for y, x in cells:
        m[y, x] = True
    return m


def test_referring_metric_hand_computed():
    # sample 1: pred 4 px, target 2 px inside it -> I=2, U=4, IoU .5
    p1, t1 = _mask([(0, 0), (0, 1), (1, 0), (1, 1)]), _mask([(0, 0), (0, 1)])
    # sample 2: identical 3 px -> I=3, U=3, IoU 1
    p2 = t2 = _mask([(2, 2), (2, 3), (3, 3)])
    # sample 3: empty prediction and empty target -> U=0 -> IoU 0 (official)
    p3 = t3 = _mask([])
    # sample 4: disjoint 1 px each -> I=0, U=2, IoU 0
    p4, t4 = _mask([(0, 3)]), _mask([(3, 0)])
    metric = ReferringSegMetric()
    metric.update(np.stack([p1, p2]), np.stack([t1, t2]))
    metric.update(np.stack([p3, p4]), np.stack([t3, t4]))
    result = metric.compute()
    assert result["oIoU"] == pytest.approx(5 / 9)
    assert result["mIoU"] == pytest.approx((0.5 + 1 + 0 + 0) / 4)
    assert result["Prec@0.5"] == 0.5 and result["Prec@0.6"] == 0.25 and result["Prec@0.9"] == 0.25
    assert result["samples"] == 4


def test_referring_metric_ignores_invalid_samples_and_refuses_no_samples():
    good = _mask([(0, 0)])
    metric = ReferringSegMetric()
    metric.update(np.stack([good, good]), np.stack([good, _mask([(3, 3)])]), valid=[True, False])
    result = metric.compute()
    assert result["mIoU"] == 1.0 and result["oIoU"] == 1.0 and result["samples"] == 1
    empty = ReferringSegMetric()
    empty.update(good[None], good[None], valid=[False])
    with pytest.raises(ValueError, match="no valid samples"):
        empty.compute()
    with pytest.raises(ValueError, match="flags"):
        empty.update(good[None], good[None], valid=[True, True])


def test_semantic_metric_official_iou_with_absent_classes_and_f1():
    classes = ["background", "a", "b", "c"]
    target = np.array([[0, 0, 1, 1], [0, 0, 1, 1]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 2, 1]])
    metric = SemanticSegMetric(classes)
    metric.update(pred, target)
    result = metric.compute()
    # background: TP 3, FN 1 (pred 1), FP 0 -> IoU 3/4; a: TP 3, FP 1, FN 1 -> 3/5; b: TP 0, FP 1 -> 0; c: absent -> 0
    iou = [3 / 4, 3 / 5, 0.0, 0.0]
    assert result["IoU_per_class"] == pytest.approx(dict(zip(classes, iou)))
    assert result["mIoU"] == pytest.approx(np.mean(iou))  # absent class averaged in as 0 (max(union, 1))
    assert result["mIoU_present"] == pytest.approx(np.mean(iou[:3]))
    f1 = [2 * 3 / (2 * 3 + 1), 2 * 3 / (2 * 3 + 2), 0.0, 0.0]
    assert result["mF1"] == pytest.approx(np.mean(f1))
    assert result["pixel_accuracy"] == pytest.approx(6 / 8)


def test_semantic_metric_mpa_official_rule_hand_computed():
    """SEG.py ``per_class_PA = diag / max(row, 1)`` averaged over every class: a class predicted but absent from the
    ground truth (b) and a class absent from both (c) score 0 and count; background included; two images add up."""
    classes = ["background", "a", "b", "c"]
    metric = SemanticSegMetric(classes)
    metric.update(np.array([[0, 1, 1, 1], [0, 0, 2, 1]]), np.array([[0, 0, 1, 1], [0, 0, 1, 1]]))
    metric.update(np.array([[1, 1, 0]]), np.array([[0, 1, 1]]))
    result = metric.compute()
    # rows (gt) / diag: background 5 px, 3 right; a 6 px, 4 right; b 0 px; c 0 px
    pa = [3 / 5, 4 / 6, 0.0, 0.0]
    assert result["PA_per_class"] == pytest.approx(dict(zip(classes, pa)), abs=1e-12)
    assert result["mPA"] == pytest.approx(sum(pa) / 4, abs=1e-12)
    assert result["mPA"] == pytest.approx(0.31666666666666665, abs=1e-12)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_semantic_metric_ignore_index_and_bad_labels():
    metric = SemanticSegMetric(["bg", "a"], ignore_index=255, mean_classes=[1])
    metric.update(np.array([[1, 1, 0]]), np.array([[1, 255, 0]]))
    result = metric.compute()
    assert result["IoU_per_class"]["a"] == 1.0 and result["mIoU"] == 1.0
    with pytest.raises(ValueError, match="outside"):
        metric.update(np.array([[2]]), np.array([[1]]))
    with pytest.raises(ValueError, match="no valid samples"):
        SemanticSegMetric(["bg", "a"]).compute()
