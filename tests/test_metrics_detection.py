"""Detection AP: COCO AP50 against pycocotools' COCOeval run per class (the official DET.py way), VOC/DOTA AP and
polygon IoU on hand-worked cases and against cv2's convex intersection."""

import contextlib
import io

import cv2
import numpy as np
import pytest
import torch
from helpers.coco_cases import cocoeval_stats, random_coco_case
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from rsam.metrics import CocoDetectionMetric, VocDetectionMetric, polygon_iou
from rsam.metrics.voc import ClassGroundTruth, class_average_precision, voc_ap


def _coco_reference_ap50(images, class_id):
    """COCOeval with catIds=[class] as tasks/code/eval/DET.py runs it; returns stats[1]."""
    gt = {"images": [], "annotations": [], "categories": [{"id": c, "name": str(c)} for c in range(3)]}
    dets = []
    for image_id, (pred, target) in enumerate(images):
        gt["images"].append({"id": image_id, "width": 100, "height": 100})
        for box, label in zip(target["boxes"], target["labels"]):
            x1, y1, x2, y2 = box
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": label,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
        for box, label, score in zip(pred["boxes"], pred["labels"], pred["scores"]):
            x1, y1, x2, y2 = box
            dets.append(
                {"image_id": image_id, "category_id": label, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score}
            )
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(dets), "bbox")
        evaluator.params.catIds = [class_id]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats[1]


def _random_images(seed):
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(4):
        n_gt, n_det = rng.integers(1, 4), rng.integers(0, 6)
        gt_xy = rng.integers(0, 60, (n_gt, 2))
        gt_boxes = np.concatenate([gt_xy, gt_xy + rng.integers(10, 30, (n_gt, 2))], 1)
        jitter = rng.integers(-6, 7, (n_det, 4))
        det_boxes = np.clip(gt_boxes[rng.integers(0, n_gt, n_det)] + jitter, 0, 100)
        det_boxes[:, 2:] = np.maximum(det_boxes[:, 2:], det_boxes[:, :2] + 2)
        images.append(
            (
                {
                    "boxes": det_boxes.tolist(),
                    "labels": rng.integers(0, 2, n_det).tolist(),
                    "scores": rng.random(n_det).round(3).tolist(),
                },
                {"boxes": gt_boxes.tolist(), "labels": rng.integers(0, 2, n_gt).tolist()},
            )
        )
    return images


@pytest.mark.parametrize("seed", [0, 1])
def test_coco_ap50_per_class_equals_cocoeval_per_class(seed):
    images = _random_images(seed)
    metric = CocoDetectionMetric(["a", "b", "c"])
    for pred, target in images:
        metric.update(
            [
                {
                    "boxes": torch.tensor(pred["boxes"], dtype=torch.float32).reshape(-1, 4),
                    "scores": torch.tensor(pred["scores"]),
                    "labels": torch.tensor(pred["labels"]),
                }
            ],
            [{"boxes": torch.tensor(target["boxes"], dtype=torch.float32), "labels": torch.tensor(target["labels"])}],
        )
    result = metric.compute()
    for class_id, name in enumerate(["a", "b"]):
        reference = _coco_reference_ap50(images, class_id)
        if reference < 0:
            assert result["AP50_per_class"][name] is None
        else:
            assert result["AP50_per_class"][name] == pytest.approx(reference, abs=1e-6)
    assert result["AP50_per_class"]["c"] is None  # no ground truth -> left out of the mean
    scored = [v for v in result["AP50_per_class"].values() if v is not None]
    assert result["AP50"] == pytest.approx(np.mean(scored))


@pytest.mark.parametrize("seed", range(6))
def test_coco_metric_equals_cocoeval_to_1e9(seed):
    gt, dets = random_coco_case(seed)
    n_classes = len(gt["categories"])
    metric = CocoDetectionMetric([f"c{c}" for c in range(n_classes)], box_format="xywh")
    for image in sorted(gt["images"], key=lambda img: img["id"]):
        mine = [d for d in dets if d["image_id"] == image["id"]]
        truth = [a for a in gt["annotations"] if a["image_id"] == image["id"]]
        metric.update(
            [
                {
                    "boxes": torch.tensor([d["bbox"] for d in mine], dtype=torch.float64).reshape(-1, 4),
                    "scores": torch.tensor([d["score"] for d in mine], dtype=torch.float64),
                    "labels": torch.tensor([d["category_id"] for d in mine], dtype=torch.long),
                }
            ],
            [
                {
                    "boxes": torch.tensor([a["bbox"] for a in truth], dtype=torch.float64).reshape(-1, 4),
                    "labels": torch.tensor([a["category_id"] for a in truth], dtype=torch.long),
                }
            ],
        )
    result = metric.compute()
    assert max(sum(d["image_id"] == i["id"] for d in dets) for i in gt["images"]) > 100  # maxDets cut-off used
    stats = cocoeval_stats(gt, dets)
    assert abs(result["AP"] - stats[0]) <= 1e-9
    assert abs(result["AP75"] - stats[2]) <= 1e-9
    per_class = []
    for c in range(n_classes):
        one = cocoeval_stats(gt, dets, [c])
        if one[1] < 0:  # no ground truth for this class
            assert result["AP50_per_class"][f"c{c}"] is None and result["AP_per_class"][f"c{c}"] is None
            continue
        per_class.append(one[1])
        assert abs(result["AP50_per_class"][f"c{c}"] - one[1]) <= 1e-9
        assert abs(result["AP_per_class"][f"c{c}"] - one[0]) <= 1e-9
    assert result["AP50_per_class"][f"c{n_classes - 1}"] is None  # the class without ground truth
    assert result["AP50_per_class"][f"c{n_classes - 2}"] == 0.0  # ground truth, no detection
    assert abs(result["AP50"] - np.mean(per_class)) <= 1e-9
    assert abs(result["AP50"] - stats[1]) <= 1e-9  # the all-class stats[1] is the same mean


def test_coco_ap50_hand_computed():
    # one class, 2 GT; detections by score: TP, FP, TP -> precision envelope 1 up to recall .5, 2/3 up to 1
    metric = CocoDetectionMetric(["a"])
    metric.update(
        [
            {
                "boxes": torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]]),
                "scores": torch.tensor([0.9, 0.8, 0.7]),
                "labels": torch.tensor([0, 0, 0]),
            }
        ],
        [{"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), "labels": torch.tensor([0, 0])}],
    )
    # 101 recall points: r = 0 .. 0.5 (51 points) at precision 1, r = 0.51 .. 1.0 (50 points) at 2/3
    expected = (51 * 1.0 + 50 * 2 / 3) / 101
    assert metric.compute()["AP50"] == pytest.approx(expected)


def test_coco_metric_rejects_unknown_class_and_empty():
    metric = CocoDetectionMetric(["a"])
    with pytest.raises(ValueError, match="class indices"):
        metric.update(
            [{"boxes": torch.zeros(1, 4), "scores": torch.ones(1), "labels": torch.tensor([1])}],
            [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}],
        )
    with pytest.raises(ValueError, match="no valid samples"):
        metric.compute()


def test_polygon_iou_hand_worked():
    square = [0, 0, 2, 0, 2, 2, 0, 2]
    assert polygon_iou(square, square) == pytest.approx(1.0)
    assert polygon_iou(square, [1, 0, 3, 0, 3, 2, 1, 2]) == pytest.approx(2 / 6)
    diamond = [1, 0, 2, 1, 1, 2, 0, 1]  # area 2, inside the square
    assert polygon_iou(square, diamond) == pytest.approx(2 / 4)
    clockwise = [0, 0, 0, 2, 2, 2, 2, 0]
    assert polygon_iou(clockwise, diamond) == pytest.approx(0.5)
    assert polygon_iou(square, [5, 5, 6, 5, 6, 6, 5, 6]) == 0.0
    # non-convex "L" (area 3) against the unit square in its corner (area 1): inter 1, union 3
    ell = [0, 0, 2, 0, 2, 1, 1, 1, 1, 2, 0, 2]
    assert polygon_iou(ell, [0, 0, 1, 0, 1, 1, 0, 1]) == pytest.approx(1 / 3)
    assert polygon_iou(ell, [1, 1, 2, 1, 2, 2, 1, 2]) == pytest.approx(0.0)


def test_polygon_iou_equals_cv2_on_random_rotated_rectangles():
    rng = np.random.default_rng(0)
    for _ in range(100):
        rects = [
            ((rng.uniform(20, 40), rng.uniform(20, 40)), (rng.uniform(5, 30), rng.uniform(5, 30)), rng.uniform(0, 180))
            for _ in range(2)
        ]
        p, q = (cv2.boxPoints(r).astype(np.float32) for r in rects)
        inter, _ = cv2.intersectConvexConvex(p, q)
        expected = inter / (cv2.contourArea(p) + cv2.contourArea(q) - inter)
        assert polygon_iou(p.reshape(-1), q.reshape(-1)) == pytest.approx(expected, abs=1e-4)


def test_voc_ap_11_point_and_all_point_hand_computed():
    recall = np.array([0.5, 0.5, 1.0])
    precision = np.array([1.0, 0.5, 2 / 3])
    # 11-point: t = 0..0.5 (6 points) max precision 1; t = 0.6..1.0 (5 points) 2/3
    assert voc_ap(recall, precision, True) == pytest.approx((6 + 5 * 2 / 3) / 11)
    assert voc_ap(recall, precision, False) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_class_ap_difficult_duplicates_and_missing_images():
    square = np.array([0, 0, 10, 0, 10, 10, 0, 10], float)
    far = square + 100
    truth = {
        "img1": ClassGroundTruth(np.stack([square, far]), np.array([False, True])),
        "img2": ClassGroundTruth(np.zeros((0, 8)), np.zeros(0, bool)),
    }
    dets = [("img1", 0.9, square), ("img1", 0.8, square + 1), ("img1", 0.7, far), ("img2", 0.6, square)]
    # ranks: TP, FP (duplicate of a matched box: IoU 81/119 > .5), ignored (difficult), FP
    # -> tp = [1,1,1,1], fp = [0,1,1,2] (difficult one counts as neither), npos = 1
    ap = class_average_precision(dets, truth, use_07_metric=False)
    assert ap == pytest.approx(1.0)
    false_first = [("img2", 0.9, square), ("img1", 0.8, square)]  # precision [0, 1/2] at recall [0, 1]
    assert class_average_precision(false_first, truth, use_07_metric=False) == pytest.approx(0.5)
    with pytest.raises(KeyError, match="img3"):
        class_average_precision([("img3", 0.5, square)], truth)
    only_difficult = {"img1": ClassGroundTruth(far[None], np.array([True]))}
    assert class_average_precision(dets, only_difficult) is None


def test_voc_metric_hbb_uses_inclusive_iou():
    # boxes [0,0,9,9] vs [0,0,9,19]: devkit IoU 100/200 = 0.5 -> not > 0.5 -> FP
    metric = VocDetectionMetric(["a"], box_kind="hbb")
    metric.update(
        [{"boxes": np.array([[0, 0, 9, 9]]), "scores": [0.9], "labels": [0]}],
        [{"boxes": np.array([[0, 0, 9, 19]]), "labels": [0]}],
    )
    assert metric.compute()["AP50"] == 0.0
    metric = VocDetectionMetric(["a"], box_kind="hbb")
    metric.update(
        [{"boxes": np.array([[0, 0, 9, 10]]), "scores": [0.9], "labels": [0]}],
        [{"boxes": np.array([[0, 0, 9, 19]]), "labels": [0]}],
    )
    assert metric.compute()["AP50"] == pytest.approx(1.0)
