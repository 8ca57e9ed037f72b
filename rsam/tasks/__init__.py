"""Task conversions: referring-segmentation probability maps -> every other task, by the official rules.

Pure functions on numpy arrays (no model, no Lightning). Each module's docstring cites the official rule it
reproduces (spec `remotesam.md` §3, `official-protocol-quirks.md` B).
"""

from rsam.tasks.captioning import caption_rng, rule_based_caption
from rsam.tasks.classification import multi_label_predict, multi_label_scores, scene_predict, scene_scores
from rsam.tasks.counting import count_objects, filter_by_prior_area
from rsam.tasks.grounding import grounding_box
from rsam.tasks.m2b import Boxes, detect, mask_to_boxes, nms, remove_inner_boxes
from rsam.tasks.maps import as_prob_stack, pooled_scores, probs_to_masks, resize_nearest
from rsam.tasks.prompts import PROMPT_TEMPLATE, canonical_class_name, class_prompts
from rsam.tasks.semseg import merge_class_masks, semantic_label_map
from rsam.tasks.tiling import detect_tiled, iter_patches, merge_patch_boxes, patch_origins

__all__ = [
    "Boxes",
    "PROMPT_TEMPLATE",
    "as_prob_stack",
    "canonical_class_name",
    "caption_rng",
    "class_prompts",
    "count_objects",
    "detect",
    "detect_tiled",
    "filter_by_prior_area",
    "grounding_box",
    "iter_patches",
    "mask_to_boxes",
    "merge_class_masks",
    "merge_patch_boxes",
    "multi_label_predict",
    "multi_label_scores",
    "nms",
    "patch_origins",
    "pooled_scores",
    "probs_to_masks",
    "remove_inner_boxes",
    "resize_nearest",
    "rule_based_caption",
    "scene_predict",
    "scene_scores",
    "semantic_label_map",
]
