"""Semantic segmentation from one referring prompt per class.

Official rule (``tasks/code/eval/SEG.py::compute_mIoU``): each class prompt gives a binary mask (argmax); the mask is
turned into a map holding ``class index + 1`` where foreground and 0 elsewhere, and the maps are merged with
``np.maximum.reduce`` — so on overlap the **higher class index wins**; pixels no class claims are background (0).
There is no confidence gate (the paper's ``P(c|I) >= tau_seg`` is not in the code).
"""

from __future__ import annotations

import numpy as np

from rsam.tasks.maps import as_prob_stack, probs_to_masks


def merge_class_masks(masks: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` binary masks (class order = label order) -> ``(H, W)`` label map, 0 = background.

    Label ``k + 1`` for class ``k``; overlapping classes resolve to the highest index (``np.maximum.reduce``).
    """
    masks = np.asarray(masks)
    if masks.ndim != 3 or masks.shape[0] == 0:
        raise ValueError(f"masks must have shape (C, H, W) with C >= 1, got {masks.shape}")
    if masks.shape[0] > np.iinfo(np.int32).max - 1:
        raise ValueError("too many classes")
    labels = np.zeros(masks.shape[1:], dtype=np.int32)
    for index in range(masks.shape[0]):
        labels[masks[index] > 0] = index + 1  # later (higher) classes overwrite = maximum over class maps
    return labels


def semantic_label_map(probs) -> np.ndarray:
    """Class probability maps ``(C, H, W)`` -> label map with the official merge (see module docstring)."""
    return merge_class_masks(probs_to_masks(as_prob_stack(probs)))
