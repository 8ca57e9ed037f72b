"""Mask to boxes (M2B), with the optional boundary-map (EPOC) refinement, inner-box removal and NMS.

Reproduces ``utils.M2B`` / ``M2B_woEPOC`` / ``M2B_wEPOC`` / ``box1_in_box2`` and ``RemoteSAM.detection``
(spec `remotesam.md` §3.3-3.4, `official-protocol-quirks.md` B3-B5):

* components: ``cv2.connectedComponentsWithStats(mask, connectivity=8)``, in label order;
* horizontal box ``[x, y, x + w, y + h]`` (x2, y2 exclusive) from the component stats;
* oriented box: ``minAreaRect`` of the component's first external contour, ``boxPoints`` cast to int;
* score: mean probability over the component's pixels; a component with score ``< 0.01`` is dropped;
* boundary map (EPOC) given: ``refined = mask * (1 - (boundary > thr))`` (strict ``>``); components of ``refined``
  are grouped by the original component that holds them; a refined piece is kept iff its area is
  ``> area_ratio x`` the largest refined piece of the same original component; scores come from the refined piece;
  an original component wholly covered by boundary yields nothing;
* inner boxes: a box is removed if it lies inside any *other* box (two equal boxes remove each other), tested by
  rasterising both polygons on a canvas that ends at the pair's largest x / y — so a box that overshoots the other by
  exactly one pixel at the right or bottom still counts as inside;
* NMS per class with IoU 0.5 (``torchvision.ops.nms``: suppresses IoU ``> 0.5``), result sorted by score.

Deviation (documented): the component score is summed in float64 (the official sums ``prob * mask`` in float32 over
the whole image); the two differ by float rounding only (< 1e-6 relative).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torchvision

from rsam.tasks.maps import as_prob_stack, probs_to_masks

CONF_THRESHOLD = 0.01
AREA_RATIO = 0.2
NMS_IOU = 0.5
EPOC_THRESHOLD_DETECTION = 0.25  # DET.py, CAP.py
EPOC_THRESHOLD_COUNTING = 0.15  # CNT.py


@dataclass(frozen=True)
class Boxes:
    """Boxes of one class in one image. ``coords``: ``(N, 4)`` ``x1 y1 x2 y2`` (hbb) or ``(N, 8)`` corners (obb)."""

    coords: np.ndarray
    scores: np.ndarray
    box_type: str = "hbb"

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def take(self, index) -> Boxes:
        return Boxes(self.coords[index], self.scores[index], self.box_type)

    @staticmethod
    def empty(box_type: str = "hbb") -> Boxes:
        return Boxes(np.zeros((0, 4 if box_type == "hbb" else 8), np.float64), np.zeros(0, np.float64), box_type)

    def as_hbb(self) -> np.ndarray:
        """Axis-aligned ``x1 y1 x2 y2`` extents (identity for hbb)."""
        if self.box_type == "hbb":
            return self.coords.astype(np.float64)
        xs, ys = self.coords[:, 0::2], self.coords[:, 1::2]
        return np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], axis=1).astype(np.float64)


def _check_mask_prob(mask: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mask = np.ascontiguousarray(np.asarray(mask) > 0, dtype=np.uint8)
    prob = np.asarray(prob, dtype=np.float32)
    if mask.ndim != 2 or prob.shape != mask.shape:
        raise ValueError(f"mask {mask.shape} and probability map {prob.shape} must be 2-D of the same shape")
    return mask, prob


def _component_means(labels: np.ndarray, count: int, prob: np.ndarray, areas: np.ndarray) -> np.ndarray:
    sums = np.bincount(labels.ravel(), weights=prob.ravel().astype(np.float64), minlength=count)
    return sums / np.maximum(areas, 1)


def _oriented_box(labels: np.ndarray, index: int, stat: np.ndarray) -> np.ndarray:
    x, y, w, h = (int(v) for v in stat[:4])
    crop = (labels[y : y + h, x : x + w] == index).astype(np.uint8)
    contours, _ = cv2.findContours(crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x, y))
    corners = cv2.boxPoints(cv2.minAreaRect(contours[0])).astype(int)
    return corners.reshape(-1).astype(np.float64)


def _refined_components(mask: np.ndarray, refined: np.ndarray, area_ratio: float) -> list[int]:
    """Indices of refined components kept by the EPOC area rule, ordered as ``M2B_wEPOC`` appends them."""
    count_orig, labels_orig = cv2.connectedComponents(mask, connectivity=8)
    count_new, labels_new, stats_new, _ = cv2.connectedComponentsWithStats(refined, connectivity=8)
    fg = labels_new > 0
    # every refined component lies inside exactly one original component (refined is a subset of mask)
    owner = np.zeros(count_new, dtype=np.int64)
    owner[labels_new[fg]] = labels_orig[fg]
    areas = stats_new[:, cv2.CC_STAT_AREA]
    kept: list[int] = []
    for original in range(1, count_orig):
        pieces = np.flatnonzero(owner == original)
        pieces = pieces[pieces > 0]
        if pieces.size == 0:
            continue  # wholly covered by boundary: the component vanishes
        largest = areas[pieces].max()
        kept.extend(int(j) for j in pieces if areas[j] > largest * area_ratio)
    return kept


def mask_to_boxes(
    mask: np.ndarray,
    prob: np.ndarray,
    *,
    box_type: str = "hbb",
    boundary: np.ndarray | None = None,
    boundary_threshold: float = EPOC_THRESHOLD_DETECTION,
    area_ratio: float = AREA_RATIO,
    conf_threshold: float = CONF_THRESHOLD,
    remove_inner: bool = True,
) -> Boxes:
    """``utils.M2B``: boxes of one binary mask, scored by the mean probability of each component.

    ``boundary``: optional boundary-probability map (EPOC / DirectSAM output, same shape, values in [0, 1]); when
    given, the mask is cut along ``boundary > boundary_threshold`` before boxing (``M2B_wEPOC``). Off by default.
    """
    if box_type not in ("hbb", "obb"):
        raise ValueError(f"box_type must be 'hbb' or 'obb', got {box_type!r}")
    mask, prob = _check_mask_prob(mask, prob)
    if boundary is not None:
        boundary = np.asarray(boundary, dtype=np.float32)
        if boundary.shape != mask.shape:
            raise ValueError(f"boundary map {boundary.shape} must have the mask's shape {mask.shape}")
        source = mask * (1 - (boundary > boundary_threshold).astype(np.uint8))
        count, labels, stats, _ = cv2.connectedComponentsWithStats(source, connectivity=8)
        order = _refined_components(mask, source, area_ratio)
    else:
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        order = list(range(1, count))
    areas = stats[:, cv2.CC_STAT_AREA]
    means = _component_means(labels, count, prob, areas)
    coords, scores = [], []
    for index in order:
        if means[index] < conf_threshold:
            continue
        if box_type == "hbb":
            x, y, w, h = (float(v) for v in stats[index, :4])
            coords.append([x, y, x + w, y + h])
        else:
            coords.append(_oriented_box(labels, index, stats[index]))
        scores.append(means[index])
    if not scores:
        return Boxes.empty(box_type)
    boxes = Boxes(np.asarray(coords, dtype=np.float64), np.asarray(scores, dtype=np.float64), box_type)
    return remove_inner_boxes(boxes) if remove_inner else boxes


def _hbb_inside_matrix(coords: np.ndarray) -> np.ndarray:
    """``inside[i, j]``: box i lies inside box j by the official pixel test, for all pairs of horizontal boxes.

    ``fillPoly`` of an integer axis-aligned box covers columns ``x1..x2`` and rows ``y1..y2`` (both inclusive), clipped
    to the pair's canvas ``[0, max(x2_i, x2_j) - 1] x [0, max(y2_i, y2_j) - 1]``; i is inside j iff its covered pixels
    are a subset of j's (vacuously true when none of i is on the canvas).
    """
    c = coords.astype(np.int64)
    x1, y1, x2, y2 = (np.maximum(c[:, k], 0) if k < 2 else c[:, k] for k in range(4))
    last_x = np.maximum(x2[:, None], x2[None, :]) - 1
    last_y = np.maximum(y2[:, None], y2[None, :]) - 1
    ix2, jx2 = np.minimum(x2[:, None], last_x), np.minimum(x2[None, :], last_x)
    iy2, jy2 = np.minimum(y2[:, None], last_y), np.minimum(y2[None, :], last_y)
    empty = (x1[:, None] > ix2) | (y1[:, None] > iy2)
    subset = (x1[None, :] <= x1[:, None]) & (y1[None, :] <= y1[:, None]) & (ix2 <= jx2) & (iy2 <= jy2)
    return empty | subset


def _polygon_may_be_inside(coords: np.ndarray) -> np.ndarray:
    """Cheap necessary condition for the polygon pixel test, for all pairs: polygon i cannot lie inside polygon j if
    one of its vertices is on the pair's canvas but outside j's bounding box (``fillPoly`` draws every vertex)."""
    pts = np.asarray(coords, dtype=np.int64).reshape(len(coords), -1, 2)
    xs, ys = pts[..., 0], pts[..., 1]
    max_x, max_y = xs.max(1), ys.max(1)
    width = np.maximum(max_x[:, None], max_x[None, :])[..., None]
    height = np.maximum(max_y[:, None], max_y[None, :])[..., None]
    vx, vy = xs[:, None, :], ys[:, None, :]
    on_canvas = (vx >= 0) & (vy >= 0) & (vx <= width - 1) & (vy <= height - 1)
    outside = (
        (vx < xs.min(1)[None, :, None])
        | (vx > max_x[None, :, None])
        | (vy < ys.min(1)[None, :, None])
        | (vy > max_y[None, :, None])
    )
    return ~(on_canvas & outside).any(axis=2)


def _polygon_inside(inner: np.ndarray, outer: np.ndarray) -> bool:
    pts_a = np.asarray(inner, dtype=np.int64).reshape(-1, 2)
    pts_b = np.asarray(outer, dtype=np.int64).reshape(-1, 2)
    both = np.concatenate([pts_a, pts_b])
    width, height = int(both[:, 0].max()), int(both[:, 1].max())
    ox, oy = max(int(both[:, 0].min()), 0), max(int(both[:, 1].min()), 0)
    if width <= ox or height <= oy:
        return True  # empty canvas: both sums are 0
    canvas_a = np.zeros((height - oy, width - ox), np.uint8)
    canvas_b = np.zeros_like(canvas_a)
    shift = np.array([ox, oy])
    cv2.fillPoly(canvas_a, [(pts_a - shift).astype(np.int32)], 1)
    cv2.fillPoly(canvas_b, [(pts_b - shift).astype(np.int32)], 1)
    return int(np.logical_and(canvas_a, canvas_b).sum()) == int(canvas_a.sum())


def remove_inner_boxes(boxes: Boxes) -> Boxes:
    """Drop every box that lies inside another box (official ``remove_inner``; equal boxes remove each other)."""
    n = len(boxes)
    if n < 2:
        return boxes
    if boxes.box_type == "hbb":
        inside = _hbb_inside_matrix(boxes.coords)
    else:
        inside = np.zeros((n, n), dtype=bool)
        for i, j in zip(*np.nonzero(_polygon_may_be_inside(boxes.coords))):
            inside[i, j] = _polygon_inside(boxes.coords[i], boxes.coords[j])
    np.fill_diagonal(inside, False)
    return boxes.take(np.flatnonzero(~inside.any(axis=1)))


def nms(boxes: Boxes, iou_threshold: float = NMS_IOU) -> Boxes:
    """``torchvision.ops.nms`` on the horizontal extents (model.py::detection); sorted by decreasing score."""
    if len(boxes) == 0:
        return boxes
    keep = torchvision.ops.nms(
        torch.as_tensor(boxes.as_hbb(), dtype=torch.float32),
        torch.as_tensor(boxes.scores, dtype=torch.float32),
        iou_threshold,
    ).numpy()
    return boxes.take(keep)


def detect(
    probs,
    class_names,
    *,
    box_type: str = "hbb",
    boundary: np.ndarray | None = None,
    boundary_threshold: float = EPOC_THRESHOLD_DETECTION,
    nms_iou: float = NMS_IOU,
) -> dict[str, Boxes]:
    """``RemoteSAM.detection``: per-class probability maps ``(C, H, W)`` -> ``{class: Boxes}`` after M2B + NMS.

    Classes without boxes map to an empty :class:`Boxes`. ``boundary`` is one boundary map for the image (EPOC), off
    by default. Note: NMS of oriented boxes uses their horizontal extents, as ``torchvision.ops.nms`` is given
    ``box[:4]`` in the official code only for hbb (no official oriented-box detection script exists).
    """
    probs = as_prob_stack(probs)
    names = list(class_names)
    if len(names) != probs.shape[0]:
        raise ValueError(f"{len(names)} class names for {probs.shape[0]} probability maps")
    masks = probs_to_masks(probs)
    result: dict[str, Boxes] = {}
    for index, name in enumerate(names):
        boxes = mask_to_boxes(
            masks[index], probs[index], box_type=box_type, boundary=boundary, boundary_threshold=boundary_threshold
        )
        result[name] = nms(boxes, nms_iou)
    return result
