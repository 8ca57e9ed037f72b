"""Semantic merge, resizing, grounding, classification, counting and prompt conventions on hand-worked inputs."""

import numpy as np
import pytest
import torch

from rsam.tasks import (
    canonical_class_name,
    class_prompts,
    count_objects,
    grounding_box,
    merge_class_masks,
    multi_label_predict,
    multi_label_scores,
    probs_to_masks,
    resize_nearest,
    scene_predict,
    scene_scores,
    semantic_label_map,
)
from rsam.tasks.counting import filter_by_prior_area
from rsam.tasks.m2b import Boxes
from rsam.tasks.prompts import DIOR_COUNT_PRIORS, check_class_list


def test_semantic_merge_higher_class_index_wins():
    masks = np.zeros((3, 2, 3), np.uint8)
    masks[0] = [[1, 1, 0], [0, 0, 0]]
    masks[1] = [[0, 1, 1], [0, 0, 0]]
    masks[2] = [[1, 0, 0], [0, 0, 0]]
    expected = np.array([[3, 2, 2], [0, 0, 0]])
    np.testing.assert_array_equal(merge_class_masks(masks), expected)
    np.testing.assert_array_equal(
        merge_class_masks(masks), np.maximum.reduce([m * (k + 1) for k, m in enumerate(masks)])
    )


def test_label_map_from_probabilities_tie_is_background():
    probs = np.array([[[0.5, 0.51]], [[0.2, 0.6]]], np.float32)
    np.testing.assert_array_equal(probs_to_masks(probs), [[[0, 1]], [[0, 1]]])
    np.testing.assert_array_equal(semantic_label_map(probs), [[0, 2]])


@pytest.mark.parametrize("in_size,out_size", [((896, 896), (800, 800)), ((896, 896), (256, 300)), ((7, 5), (13, 3))])
def test_resize_nearest_equals_torch_interpolate(in_size, out_size):
    maps = np.random.default_rng(0).random((2,) + in_size).astype(np.float32)
    expected = torch.nn.functional.interpolate(torch.from_numpy(maps)[None], out_size)[0].numpy()
    np.testing.assert_array_equal(resize_nearest(maps, out_size), expected)


def test_grounding_union_box_and_none():
    prob = np.zeros((20, 20), np.float32)
    prob[2:4, 3:6] = 0.9
    prob[10:15, 12:14] = 0.8
    np.testing.assert_array_equal(grounding_box(prob), [3, 2, 14, 15])
    assert grounding_box(np.zeros((5, 5), np.float32)) is None


def test_multi_label_scores_weight_the_max_and_threshold_is_strict():
    probs = np.zeros((3, 2, 2), np.float32)
    probs[0] = [[1.0, 0.0], [0.0, 0.0]]  # max 1, mean 0.25 -> 0.625
    probs[1] = [[0.8, 0.2], [0.2, 0.2]]  # max 0.8, mean 0.35 -> 0.575 (f=0.5) / 0.71 (f=0.8)
    probs[2] = [[0.75, 0.25], [0.0, 0.0]]  # max .75, mean .25 -> 0.5 exactly -> absent (strict >)
    np.testing.assert_allclose(multi_label_scores(probs), [0.625, 0.575, 0.5], rtol=1e-6)
    np.testing.assert_array_equal(multi_label_predict(probs), [True, True, False])
    np.testing.assert_allclose(multi_label_scores(probs, max_weight=0.8), [0.85, 0.71, 0.65], rtol=1e-6)
    with pytest.raises(ValueError):
        multi_label_scores(probs, max_weight=1.5)


def test_scene_classification_pure_max_and_first_on_ties():
    probs = np.zeros((3, 2, 2), np.float32)
    probs[0, 0, 0] = 0.7
    probs[1] = 0.69  # larger mean, smaller max
    probs[2, 1, 1] = 0.7
    np.testing.assert_allclose(scene_scores(probs), [0.7, 0.69, 0.7], rtol=1e-6)
    assert scene_predict(probs) == 0


def test_counting_prior_area_filter_drops_area_at_or_below_80_percent():
    boxes = Boxes(np.array([[0, 0, 4, 7], [0, 0, 5, 6], [10, 10, 13, 13]], float), np.array([0.9, 0.8, 0.7]))
    # prior 36 -> limit 28.8: areas 28 (dropped), 30 (kept), 9 (dropped)
    kept = filter_by_prior_area(boxes, 36)
    np.testing.assert_array_equal(kept.coords, [[0, 0, 5, 6]])
    assert len(filter_by_prior_area(boxes, None)) == 3
    prob = np.zeros((20, 20), np.float32)
    prob[0:6, 0:5] = 0.9  # 30 px box
    prob[10:13, 10:13] = 0.9  # 9 px box
    assert count_objects(prob, "airplane", DIOR_COUNT_PRIORS) == 1
    assert count_objects(prob, "airplane", None) == 2
    with pytest.raises(KeyError, match="helipad"):
        count_objects(prob, "helipad", DIOR_COUNT_PRIORS)


def test_prompts_and_official_class_names():
    assert class_prompts(["storagetank", "ship"]) == ["storagetank in the image", "ship in the image"]
    assert canonical_class_name("Storage_Tank") == "storagetank"
    assert canonical_class_name("baseball-diamond") == "baseballfield"
    assert canonical_class_name("railway station") == "trainstation"
    assert canonical_class_name("crane") == "container-crane"
    assert canonical_class_name("Expressway-Service-area") == "expressway-service-area"
    with pytest.raises(ValueError, match="twice"):
        check_class_list(["a", "b", "a"])
    with pytest.raises(ValueError, match="empty"):
        check_class_list([])
