"""VOC-style average precision as the DOTA devkit computes it (``dota_evaluation_task1.py`` / ``task2.py``).

Per class: detections of all images sorted by decreasing score (stable sort here; the devkit's ``np.argsort`` is not
stable, so only the order of equal scores may differ); each detection takes the ground truth of its image with the
highest IoU; ``IoU > 0.5`` (strict) on a not-yet-matched box is a true positive, on an already-matched box a false
positive, on a *difficult* box neither; otherwise a false positive. ``recall = TP / #non-difficult GT``,
``precision = TP / max(TP + FP, eps)``. AP: the VOC07 11-point rule (``use_07_metric=True``, what the devkit's
``main`` passes) or the all-point area under the interpolated curve.

IoU: oriented boxes (task 1) by polygon IoU (:func:`rsam.tasks.polygon.polygon_iou`), with the devkit's prefilter on
the pixel-inclusive horizontal extents; horizontal boxes (task 2) by the devkit's pixel-inclusive formula
``(x2 - x1 + 1) * (y2 - y1 + 1)``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from rsam.tasks.polygon import hbb_extents, polygon_iou

IOU_THRESHOLD = 0.5


@dataclass(frozen=True)
class ClassGroundTruth:
    """Ground truth of one class in one image: ``boxes`` ``(M, 4)`` hbb or ``(M, 8)`` polygons, ``difficult (M,)``."""

    boxes: np.ndarray
    difficult: np.ndarray


def inclusive_hbb_iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Devkit task-2 IoU of one ``x1 y1 x2 y2`` box against ``(M, 4)`` boxes (pixel-inclusive, ``+1``)."""
    iw = np.maximum(np.minimum(others[:, 2], box[2]) - np.maximum(others[:, 0], box[0]) + 1.0, 0.0)
    ih = np.maximum(np.minimum(others[:, 3], box[3]) - np.maximum(others[:, 1], box[1]) + 1.0, 0.0)
    inter = iw * ih
    union = (
        (box[2] - box[0] + 1.0) * (box[3] - box[1] + 1.0)
        + (others[:, 2] - others[:, 0] + 1.0) * (others[:, 3] - others[:, 1] + 1.0)
        - inter
    )
    return inter / union


def polygon_ious(poly: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Task-1 overlaps: polygon IoU where the inclusive horizontal-extent IoU is > 0, else 0 (devkit prefilter)."""
    coarse = inclusive_hbb_iou(hbb_extents(poly[None])[0], hbb_extents(others))
    result = np.zeros(len(others))
    for index in np.flatnonzero(coarse > 0):
        result[index] = polygon_iou(others[index], poly)
    return result


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = True) -> float:
    """Devkit ``voc_ap``: 11-point (VOC07) or all-point interpolated AP."""
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            above = recall >= t
            ap += (np.max(precision[above]) if above.any() else 0.0) / 11.0
        return float(ap)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    changes = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]))


def class_average_precision(
    detections: Sequence[tuple[Hashable, float, np.ndarray]],
    ground_truth: Mapping[Hashable, ClassGroundTruth],
    *,
    box_kind: str = "poly",
    iou_threshold: float = IOU_THRESHOLD,
    use_07_metric: bool = True,
) -> float | None:
    """AP of one class. ``detections``: ``(image, score, box)``; ``ground_truth``: image -> boxes of this class.

    Returns ``None`` when the class has no non-difficult ground truth (the devkit divides by zero there).
    A detection naming an image absent from ``ground_truth`` is an error.
    """
    if box_kind not in ("poly", "hbb"):
        raise ValueError(f"box_kind must be 'poly' or 'hbb', got {box_kind!r}")
    overlaps = polygon_ious if box_kind == "poly" else inclusive_hbb_iou
    npos = sum(int((~gt.difficult.astype(bool)).sum()) for gt in ground_truth.values())
    if npos == 0:
        return None
    matched = {image: np.zeros(len(gt.difficult), dtype=bool) for image, gt in ground_truth.items()}
    scores = np.array([float(d[1]) for d in detections], dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    tp = np.zeros(len(detections))
    fp = np.zeros(len(detections))
    for rank, index in enumerate(order):
        image, _, box = detections[index]
        if image not in ground_truth:
            raise KeyError(f"detection names image {image!r}, which has no ground-truth entry")
        gt = ground_truth[image]
        best, best_index = -np.inf, -1
        if len(gt.boxes):
            ious = overlaps(np.asarray(box, dtype=np.float64), gt.boxes.astype(np.float64))
            best_index = int(np.argmax(ious))
            best = ious[best_index]
        if best > iou_threshold:
            if gt.difficult[best_index]:
                continue
            if not matched[image][best_index]:
                tp[rank] = 1.0
                matched[image][best_index] = True
            else:
                fp[rank] = 1.0
        else:
            fp[rank] = 1.0
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / float(npos)
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return voc_ap(recall, precision, use_07_metric)
