"""Detection metrics, synchronised across ranks.

* :class:`CocoDetectionMetric` — horizontal boxes, COCO protocol of ``tasks/code/eval/DET.py`` (pycocotools
  ``COCOeval``, bbox, max 100 detections per image, 101-point interpolation) through torchmetrics'
  ``MeanAveragePrecision``. The official script evaluates one class at a time (``catIds=[c]``); COCOeval's per-class
  results are independent, so the per-class AP50 here equals that run's ``stats[1]``; every number equals COCOeval's
  in float64 (its own ``np.linspace`` thresholds, its ``_summarize`` rule). Classes without ground truth get
  ``None`` (COCOeval's -1) and are left out of the mean; a class with ground truth but no detection scores 0 (the
  official script prints nothing for it). ``AP50`` = mean of the per-class AP50 (the script computes no mean).
* :class:`VocDetectionMetric` — DOTA devkit protocol (:mod:`rsam.metrics.voc`): oriented boxes (task 1, polygon IoU)
  or horizontal boxes (task 2, pixel-inclusive IoU), VOC07 11-point AP by default, difficult boxes ignored. The mean
  is over classes with ground truth.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.detection import MeanAveragePrecision
from torchmetrics.utilities import dim_zero_cat

from rsam.metrics._common import as_tensor, dist_rank, require_samples
from rsam.metrics.voc import IOU_THRESHOLD, ClassGroundTruth, class_average_precision


def _check_labels(labels: torch.Tensor, num_classes: int, what: str) -> None:
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{what} labels must be class indices in [0, {num_classes})")


COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10).tolist()  # COCOeval Params.setDetParams: float64 np.linspace
COCO_RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101).tolist()
COCO_MAX_DETECTIONS = [1, 10, 100]


def coco_summary_ap(precision: np.ndarray, iou_index: int | None = None) -> float:
    """COCOeval ``_summarize`` for AP over area ``all`` at the largest ``maxDets``: the mean of the valid (> -1)
    entries of ``precision[T, R, K, A, M]`` (one IoU threshold when ``iou_index`` is given); -1 when none is valid."""
    values = precision[:, :, :, 0, -1] if iou_index is None else precision[iou_index, :, :, 0, -1]
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else -1.0


class CocoDetectionMetric(MeanAveragePrecision):
    """torchmetrics ``MeanAveragePrecision`` (pycocotools backend) whose numbers equal COCOeval's in float64.

    ``update(preds, target)``: lists (one entry per image) of ``{"boxes", "scores", "labels"}`` and
    ``{"boxes", "labels", "iscrowd" (optional)}``, labels being indices into ``class_names``; boxes ``xyxy`` (or
    ``box_format="xywh"``, the COCO json layout, which hands COCOeval the very numbers of the files). Give float64
    tensors for exact parity (float32 inputs are scored as given).

    The thresholds are COCOeval's own float64 ``np.linspace`` values (torchmetrics' default ``torch.linspace`` is
    float32: 0.55 becomes 0.550000011920929, which moves IoU/recall cut-offs); AP, AP50, AP75 and the per-class values
    are read from COCOeval's float64 ``precision`` array with its ``_summarize`` rule (torchmetrics rounds its
    summary to float32). Per class, COCOeval's results are independent of the other classes, so the per-class AP50
    equals the official one-class-at-a-time run (``catIds=[c]``) ``stats[1]``.
    """

    def __init__(self, class_names: Sequence[str], box_format: str = "xyxy", **kwargs):
        super().__init__(
            box_format=box_format,
            iou_type="bbox",
            iou_thresholds=list(COCO_IOU_THRESHOLDS),
            rec_thresholds=list(COCO_RECALL_THRESHOLDS),
            max_detection_thresholds=list(COCO_MAX_DETECTIONS),
            class_metrics=False,  # per-class values come from the precision array (one COCOeval run)
            extended_summary=True,
            backend="pycocotools",
            **kwargs,
        )
        self.class_names = tuple(class_names)
        self.warn_on_many_detections = False  # the 100-per-image cut-off is the protocol, not a surprise

    def update(self, preds, target) -> None:
        for entry in list(preds) + list(target):
            _check_labels(as_tensor(entry["labels"]), len(self.class_names), "detection")
        super().update(preds, target)

    def compute(self) -> dict:
        require_samples(len(self.groundtruth_labels), "detection")
        raw = super().compute()
        if "precision" not in raw:
            raise ValueError("detection: no box was given in any image, AP is undefined")
        precision = raw["precision"].numpy().astype(np.float64)  # (iou thresholds, recall points, classes, areas, dets)
        classes = [int(c) for c in raw["classes"].reshape(-1).tolist()]
        ap50: dict[str, float | None] = {name: None for name in self.class_names}
        ap: dict[str, float | None] = {name: None for name in self.class_names}
        for k, class_id in enumerate(classes):
            one = precision[:, :, k : k + 1]
            if (one[0, :, 0, 0, -1] > -1).any():  # -1: the class has no ground truth (COCOeval's -1)
                ap50[self.class_names[class_id]] = coco_summary_ap(one, 0)
                ap[self.class_names[class_id]] = coco_summary_ap(one)
        scored = [v for v in ap50.values() if v is not None]
        if not scored:
            raise ValueError("detection: the ground truth holds no box of any class, AP is undefined")
        return {
            "AP50": float(np.mean(scored)),
            "AP": coco_summary_ap(precision),
            "AP75": coco_summary_ap(precision, 5),
            "AP50_per_class": ap50,
            "AP_per_class": ap,
            "classes_with_ground_truth": len(scored),
            "images": len(self.groundtruth_labels),
        }


class VocDetectionMetric(Metric):
    """DOTA-devkit AP. ``update(preds, target)``: per image ``{"boxes", "scores", "labels"}`` and
    ``{"boxes", "labels", "difficult" (optional)}``; boxes ``(N, 8)`` polygons (``box_kind="poly"``) or ``(N, 4)``
    ``x1 y1 x2 y2`` (``box_kind="hbb"``)."""

    full_state_update = False
    higher_is_better = True

    def __init__(
        self,
        class_names: Sequence[str],
        box_kind: str = "poly",
        iou_threshold: float = IOU_THRESHOLD,
        use_07_metric: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if box_kind not in ("poly", "hbb"):
            raise ValueError(f"box_kind must be 'poly' or 'hbb', got {box_kind!r}")
        self.class_names = tuple(class_names)
        self.box_kind = box_kind
        self.width = 8 if box_kind == "poly" else 4
        self.iou_threshold = iou_threshold
        self.use_07_metric = use_07_metric
        for name in (
            "det_boxes",
            "det_scores",
            "det_labels",
            "det_images",
            "gt_boxes",
            "gt_labels",
            "gt_difficult",
            "gt_images",
            "image_ids",
        ):
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self._images_seen = 0

    def _image_id(self) -> int:
        image_id = dist_rank() * (1 << 40) + self._images_seen
        self._images_seen += 1
        return image_id

    def _boxes(self, entry, what: str) -> torch.Tensor:
        boxes = as_tensor(entry["boxes"], dtype=torch.float64)
        if boxes.numel() == 0:
            return torch.zeros(0, self.width, dtype=torch.float64)
        if boxes.ndim != 2 or boxes.shape[1] != self.width:
            raise ValueError(
                f"{what} boxes must have shape (N, {self.width}) for box_kind={self.box_kind!r}, "
                f"got {tuple(boxes.shape)}"
            )
        return boxes

    def update(self, preds, target) -> None:
        preds, target = list(preds), list(target)
        if len(preds) != len(target):
            raise ValueError(f"{len(preds)} prediction entries for {len(target)} images")
        n_classes = len(self.class_names)
        for pred, gt in zip(preds, target):
            image = torch.tensor([self._image_id()], dtype=torch.long)
            det_boxes = self._boxes(pred, "predicted")
            det_labels = as_tensor(pred["labels"], dtype=torch.long).reshape(-1)
            det_scores = as_tensor(pred["scores"], dtype=torch.float64).reshape(-1)
            gt_boxes = self._boxes(gt, "ground-truth")
            gt_labels = as_tensor(gt["labels"], dtype=torch.long).reshape(-1)
            difficult = as_tensor(gt.get("difficult", torch.zeros(len(gt_labels))), dtype=torch.bool).reshape(-1)
            if not (len(det_boxes) == len(det_labels) == len(det_scores)):
                raise ValueError("predicted boxes, scores and labels differ in length")
            if not (len(gt_boxes) == len(gt_labels) == len(difficult)):
                raise ValueError("ground-truth boxes, labels and difficult flags differ in length")
            _check_labels(det_labels, n_classes, "predicted")
            _check_labels(gt_labels, n_classes, "ground-truth")
            self.image_ids.append(image)
            self.det_boxes.append(det_boxes)
            self.det_scores.append(det_scores)
            self.det_labels.append(det_labels)
            self.det_images.append(image.repeat(len(det_labels)))
            self.gt_boxes.append(gt_boxes)
            self.gt_labels.append(gt_labels)
            self.gt_difficult.append(difficult)
            self.gt_images.append(image.repeat(len(gt_labels)))

    def reset(self) -> None:
        super().reset()
        self._images_seen = 0

    def compute(self) -> dict:
        images = dim_zero_cat(self.image_ids) if len(self.image_ids) else torch.zeros(0)
        require_samples(images.numel(), "detection")
        gt_boxes, gt_labels = dim_zero_cat(self.gt_boxes).numpy(), dim_zero_cat(self.gt_labels).numpy()
        gt_difficult, gt_images = dim_zero_cat(self.gt_difficult).numpy(), dim_zero_cat(self.gt_images).numpy()
        det_boxes, det_labels = dim_zero_cat(self.det_boxes).numpy(), dim_zero_cat(self.det_labels).numpy()
        det_scores, det_images = dim_zero_cat(self.det_scores).numpy(), dim_zero_cat(self.det_images).numpy()
        per_class: dict[str, float | None] = {}
        for k, name in enumerate(self.class_names):
            truth: dict[int, ClassGroundTruth] = {}
            grouped = defaultdict(list)
            for index in np.flatnonzero(gt_labels == k):
                grouped[int(gt_images[index])].append(index)
            for image in images.tolist():
                rows = grouped.get(int(image), [])
                truth[int(image)] = ClassGroundTruth(gt_boxes[rows].reshape(-1, self.width), gt_difficult[rows])
            dets = [(int(det_images[i]), float(det_scores[i]), det_boxes[i]) for i in np.flatnonzero(det_labels == k)]
            per_class[name] = class_average_precision(
                dets, truth, box_kind=self.box_kind, iou_threshold=self.iou_threshold, use_07_metric=self.use_07_metric
            )
        scored = [v for v in per_class.values() if v is not None]
        if not scored:
            raise ValueError("detection: the ground truth holds no (non-difficult) box of any class, AP is undefined")
        key = f"AP{round(self.iou_threshold * 100)}"
        return {
            key: float(np.mean(scored)),
            f"{key}_per_class": per_class,
            "classes_with_ground_truth": len(scored),
            "images": int(images.numel()),
        }
