"""DOTA-style tiling of large images and merging of per-patch boxes.

Official protocol (author answer in RemoteSAM issue #2, spec §3.4): large DOTA images are cut into 896 x 896
patches with 200 px overlap by the DOTA devkit's ``ImgSplit`` and the patch results are merged with its
``ResultMerge``. Reproduced here:

* patch origins (``ImgSplit.SplitSingle``): step ``patch - overlap``; a patch that would reach or pass the image edge
  is moved back to ``max(size - patch, 0)`` and is the last one in that direction;
* patches are zero-padded to ``patch x patch`` (``padding=True``);
* merge (``ResultMerge``): boxes are shifted by the patch origin and, per image and class, suppressed with the
  devkit's NMS at 0.3 (keep IoU ``<= 0.3``): ``py_cpu_nms`` with pixel-inclusive ``+1`` areas for horizontal boxes
  (``mergebyrec``), ``py_cpu_nms_poly`` with polygon IoU for oriented boxes (``mergebypoly``).

Deviation (documented): probability on the zero padding is discarded (maps are cropped to the real image area before
M2B), so no box reaches outside the image; the devkit would keep boxes found on padding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

from rsam.tasks.m2b import EPOC_THRESHOLD_DETECTION, Boxes, detect
from rsam.tasks.maps import as_prob_stack, resize_nearest
from rsam.tasks.polygon import polygon_iou

PATCH_SIZE = 896
PATCH_OVERLAP = 200
MERGE_NMS_IOU = 0.3  # ResultMerge.py (ResultMerge_multi_process.py uses 0.1)

PredictFn = Callable[[np.ndarray, Sequence[str]], np.ndarray]


def patch_origins(length: int, patch: int = PATCH_SIZE, overlap: int = PATCH_OVERLAP) -> list[int]:
    """Patch start offsets along one axis of ``length`` pixels (devkit ``ImgSplit`` loop)."""
    if length <= 0:
        raise ValueError(f"image side must be positive, got {length}")
    if not 0 <= overlap < patch:
        raise ValueError(f"overlap must be in [0, patch), got overlap={overlap}, patch={patch}")
    origins, start = [], 0
    while True:
        if start + patch >= length:
            origins.append(max(length - patch, 0))
            return origins
        origins.append(start)
        start += patch - overlap


def iter_patches(
    image: np.ndarray, patch: int = PATCH_SIZE, overlap: int = PATCH_OVERLAP
) -> Iterator[tuple[int, int, np.ndarray, tuple[int, int]]]:
    """Yield ``(x, y, padded_patch, (valid_h, valid_w))`` over an ``H x W x C`` image, patches zero-padded."""
    height, width = image.shape[:2]
    for x in patch_origins(width, patch, overlap):
        for y in patch_origins(height, patch, overlap):
            crop = image[y : y + patch, x : x + patch]
            padded = np.zeros((patch, patch) + image.shape[2:], dtype=image.dtype)
            padded[: crop.shape[0], : crop.shape[1]] = crop
            yield x, y, padded, crop.shape[:2]


def devkit_nms(hbb: np.ndarray, scores: np.ndarray, iou_threshold: float = MERGE_NMS_IOU) -> np.ndarray:
    """DOTA devkit ``py_cpu_nms``: areas ``(x2 - x1 + 1) * (y2 - y1 + 1)``, keeps boxes with IoU ``<= thr``."""
    x1, y1, x2, y2 = (hbb[:, k] for k in range(4))
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)

    def iou(i: int, rest: np.ndarray) -> np.ndarray:
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        return inter / (areas[i] + areas[rest] - inter)

    return _greedy_nms(scores, iou, iou_threshold)


def _greedy_nms(scores: np.ndarray, iou, iou_threshold: float) -> np.ndarray:
    """Keep the best-scoring item, drop the rest whose ``iou(best, rest) > thr``, repeat (stable score order)."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        order = rest[iou(i, rest) <= iou_threshold] if rest.size else rest
    return np.asarray(keep, dtype=np.int64)


def devkit_poly_nms(polys: np.ndarray, scores: np.ndarray, iou_threshold: float = MERGE_NMS_IOU) -> np.ndarray:
    """DOTA devkit ``py_cpu_nms_poly``: polygon IoU, keeps polygons with IoU ``<= thr``."""

    def iou(i: int, rest: np.ndarray) -> np.ndarray:
        return np.array([polygon_iou(polys[i], polys[j]) for j in rest])

    return _greedy_nms(scores, iou, iou_threshold)


def suppress_merged(boxes: Boxes, iou_threshold: float = MERGE_NMS_IOU) -> Boxes:
    """The devkit's merge NMS for the box type: inclusive-area hbb NMS or polygon NMS."""
    if len(boxes) == 0:
        return boxes
    if boxes.box_type == "hbb":
        return boxes.take(devkit_nms(boxes.coords, boxes.scores, iou_threshold))
    return boxes.take(devkit_poly_nms(boxes.coords, boxes.scores, iou_threshold))


def merge_patch_boxes(per_patch: Sequence[tuple[int, int, Boxes]], iou_threshold: float = MERGE_NMS_IOU) -> Boxes:
    """Shift each patch's boxes by its origin ``(x, y)`` and merge them with :func:`suppress_merged`."""
    shifted = []
    box_type = per_patch[0][2].box_type if per_patch else "hbb"
    for x, y, boxes in per_patch:
        if boxes.box_type != box_type:
            raise ValueError("all patches must hold the same box type")
        offset = np.tile([x, y], boxes.coords.shape[1] // 2)
        shifted.append(Boxes(boxes.coords + offset, boxes.scores, box_type))
    if not shifted or sum(len(b) for b in shifted) == 0:
        return Boxes.empty(box_type)
    merged = Boxes(np.concatenate([b.coords for b in shifted]), np.concatenate([b.scores for b in shifted]), box_type)
    return suppress_merged(merged, iou_threshold)


def detect_tiled(
    image: np.ndarray,
    class_names: Sequence[str],
    prompts: Sequence[str],
    predict: PredictFn,
    *,
    patch: int = PATCH_SIZE,
    overlap: int = PATCH_OVERLAP,
    box_type: str = "hbb",
    boundary: np.ndarray | None = None,
    boundary_threshold: float = EPOC_THRESHOLD_DETECTION,
    merge_iou: float = MERGE_NMS_IOU,
) -> dict[str, Boxes]:
    """Detection on a large image: per patch ``predict(patch_image, prompts) -> (N, h, w)`` probabilities (any size,
    resized nearest to the patch), M2B + NMS per class on the patch, then the devkit merge per class.

    ``boundary``: optional whole-image boundary map (EPOC), cut per patch like the image.
    """
    names = list(class_names)
    if len(prompts) != len(names):
        raise ValueError(f"{len(prompts)} prompts for {len(names)} classes")
    per_class: dict[str, list[tuple[int, int, Boxes]]] = {name: [] for name in names}
    for x, y, padded, (valid_h, valid_w) in iter_patches(image, patch, overlap):
        probs = as_prob_stack(predict(padded, list(prompts)), name="patch probabilities")
        if probs.shape[0] != len(names):
            raise ValueError(f"predict returned {probs.shape[0]} maps for {len(names)} prompts")
        probs = resize_nearest(probs, (patch, patch))[:, :valid_h, :valid_w]
        patch_boundary = None if boundary is None else boundary[y : y + valid_h, x : x + valid_w]
        found = detect(probs, names, box_type=box_type, boundary=patch_boundary, boundary_threshold=boundary_threshold)
        for name in names:
            per_class[name].append((x, y, found[name]))
    return {name: merge_patch_boxes(items, merge_iou) for name, items in per_class.items()}
