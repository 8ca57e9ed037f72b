"""Object counting: the number of detected boxes left after the per-class prior-area filter.

Official rule (``tasks/code/eval/CNT.py``): ``RemoteSAM.detection`` (boundary refinement at threshold 0.15 when EPOC is
on) for the one asked class; boxes with ``(x2 - x1) * (y2 - y1) <= 0.8 * prior_area[class]`` are discarded; the count
is the number left. The priors (px^2, original image) are in :mod:`rsam.tasks.prompts`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from rsam.tasks.m2b import EPOC_THRESHOLD_COUNTING, Boxes, detect

PRIOR_FRACTION = 0.8


def filter_by_prior_area(boxes: Boxes, prior_area: float | None, fraction: float = PRIOR_FRACTION) -> Boxes:
    """Drop boxes whose horizontal area is ``<= fraction * prior_area``; ``None`` prior keeps every box."""
    if prior_area is None or len(boxes) == 0:
        return boxes
    hbb = boxes.as_hbb()
    areas = (hbb[:, 2] - hbb[:, 0]) * (hbb[:, 3] - hbb[:, 1])
    return boxes.take(np.flatnonzero(areas > prior_area * fraction))


def count_objects(
    prob,
    class_name: str,
    priors: Mapping[str, float] | None,
    *,
    boundary: np.ndarray | None = None,
    boundary_threshold: float = EPOC_THRESHOLD_COUNTING,
    fraction: float = PRIOR_FRACTION,
) -> int:
    """Count one class from its probability map. ``priors=None`` disables the filter; a class missing from a given
    prior table is an error (the official loader would raise ``KeyError`` too)."""
    prior = None
    if priors is not None:
        if class_name not in priors:
            raise KeyError(f"no counting prior area for class {class_name!r}")
        prior = float(priors[class_name])
    boxes = detect(prob, [class_name], boundary=boundary, boundary_threshold=boundary_threshold)[class_name]
    return len(filter_by_prior_area(boxes, prior, fraction))
