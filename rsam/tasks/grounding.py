"""Visual grounding: the union box of a referring mask's components.

Official rule (``RemoteSAM.visual_grounding``): ``referring_seg`` -> ``utils.M2B(mask, prob, box_type='hbb')`` without
boundary refinement (score >= 0.01, inner boxes removed, no NMS) -> ``[min x1, min y1, max x2, max y2]`` over the
kept boxes; ``None`` when no component survives.
"""

from __future__ import annotations

import numpy as np

from rsam.tasks.m2b import mask_to_boxes
from rsam.tasks.maps import as_prob_stack, probs_to_masks


def grounding_box(prob) -> np.ndarray | None:
    """One referring probability map ``(H, W)`` -> union box ``[x1, y1, x2, y2]`` (x2, y2 exclusive) or ``None``."""
    stack = as_prob_stack(prob, name="grounding probability map")
    if stack.shape[0] != 1:
        raise ValueError(f"grounding takes one probability map, got {stack.shape[0]}")
    boxes = mask_to_boxes(probs_to_masks(stack[0]), stack[0], box_type="hbb")
    if len(boxes) == 0:
        return None
    c = boxes.coords
    return np.array([c[:, 0].min(), c[:, 1].min(), c[:, 2].max(), c[:, 3].max()], dtype=np.float64)
