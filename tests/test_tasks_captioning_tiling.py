"""Rule-based captions (hand-written expected text) and DOTA tiling / patch merging."""

import random

import numpy as np
import pytest

from rsam.tasks import caption_rng, detect, detect_tiled, iter_patches, patch_origins, rule_based_caption
from rsam.tasks.captioning import DISTRIBUTION_TEMPLATES, EXISTENCE_TEMPLATES
from rsam.tasks.m2b import Boxes
from rsam.tasks.tiling import devkit_nms, devkit_poly_nms, merge_patch_boxes


class FirstChoice(random.Random):
    """Always picks the first template, to make captions hand-checkable."""

    def choice(self, seq):
        return seq[0]


def test_caption_text_plurals_and_regions():
    boxes = {
        "airplane": [[10, 10, 20, 20], [30, 5, 40, 15], [60, 60, 70, 70]],
        "overpass": [[90, 10, 99, 30]],
        "tree": [[0, 0, 2, 2]] * 5,
    }
    caption = rule_based_caption(boxes, (100, 100), FirstChoice(), regions=4)
    assert caption == (
        "It contains 3 airplanes, overpass, many trees. "
        "The upper left region contains airplanes, trees. "
        "The upper right region contains overpass. "
        "The lower right region contains airplane."
    )


def test_caption_centre_on_region_line_goes_to_lower_right_and_3x3():
    # centre (50, 50) of a 100x100 image: row 50 // 50 = 1, col 1 -> lower right
    assert rule_based_caption({"ship": [[40, 40, 60, 60]]}, (100, 100), FirstChoice()).endswith(
        "The lower right region contains ship."
    )
    caption = rule_based_caption({"ship": [[40, 40, 60, 60]]}, (90, 90), FirstChoice(), regions=9)
    assert caption == "It contains ship. The center region contains ship."
    assert rule_based_caption({}, (10, 10), FirstChoice()) == "It contains . "  # official: nothing detected
    with pytest.raises(ValueError, match="outside"):
        rule_based_caption({"ship": [[200, 200, 210, 210]]}, (100, 100), FirstChoice())


def test_caption_templates_drawn_in_official_order_and_seeded():
    boxes = {"ship": [[1, 1, 5, 5], [60, 60, 70, 70]]}
    rng = random.Random(7)
    first, second, third = (
        rng.choice(EXISTENCE_TEMPLATES),
        rng.choice(DISTRIBUTION_TEMPLATES),
        rng.choice(DISTRIBUTION_TEMPLATES),
    )
    expected = " ".join(
        [
            first.format("2 ships"),
            second.format(("ship", "upper left", "is")),
            third.format(("ship", "lower right", "is")),
        ]
    )
    assert rule_based_caption(boxes, (100, 100), random.Random(7)) == expected
    assert rule_based_caption(boxes, (100, 100), caption_rng(3, "img_1")) == rule_based_caption(
        boxes, (100, 100), caption_rng(3, "img_1")
    )


def test_patch_origins_follow_the_devkit_split():
    assert patch_origins(2000) == [0, 696, 1104]  # 696 + 896 = 1592 < 2000; next would pass the edge
    assert patch_origins(896) == [0]
    assert patch_origins(500) == [0]
    assert patch_origins(1592) == [0, 696]
    with pytest.raises(ValueError):
        patch_origins(100, patch=50, overlap=50)


def test_patches_are_zero_padded():
    image = np.full((500, 1000, 3), 7, np.uint8)
    patches = list(iter_patches(image))
    assert [(x, y) for x, y, _, _ in patches] == [(0, 0), (104, 0)]
    _, _, padded, valid = patches[0]
    assert padded.shape == (896, 896, 3) and valid == (500, 896)
    assert padded[:500].min() == 7 and padded[500:].max() == 0


def test_devkit_nms_uses_inclusive_areas():
    # inclusive areas 121 and 121, intersection 11*6=66 -> IoU 66/176 = 0.375 > 0.3 -> suppressed
    hbb = np.array([[0, 0, 10, 10], [0, 5, 10, 15], [50, 50, 60, 60]], float)
    np.testing.assert_array_equal(devkit_nms(hbb, np.array([0.9, 0.8, 0.7])), [0, 2])
    np.testing.assert_array_equal(devkit_nms(hbb, np.array([0.9, 0.8, 0.7]), 0.4), [0, 1, 2])


def test_devkit_poly_nms_uses_polygon_iou():
    square = [0, 0, 10, 0, 10, 10, 0, 10]
    diamond = [5, 0, 10, 5, 5, 10, 0, 5]  # IoU with the square 50 / 100 = 0.5 > 0.3 -> suppressed
    shifted = [8, 0, 18, 0, 18, 10, 8, 10]  # IoU 20 / 180 -> kept
    kept = devkit_poly_nms(np.array([square, diamond, shifted], float), np.array([0.9, 0.8, 0.7]))
    np.testing.assert_array_equal(kept, [0, 2])
    merged = merge_patch_boxes(
        [
            (0, 0, Boxes(np.array([square], float), np.array([0.9]), "obb")),
            (0, 0, Boxes(np.array([diamond], float), np.array([0.95]), "obb")),
        ]
    )
    np.testing.assert_array_equal(merged.coords, [diamond])


def test_merge_shifts_patch_boxes():
    a = Boxes(np.array([[10, 10, 20, 20]], float), np.array([0.9]))
    b = Boxes(np.array([[0, 0, 10, 10]], float), np.array([0.8]))
    merged = merge_patch_boxes([(0, 0, a), (696, 100, b)])
    np.testing.assert_array_equal(merged.coords, [[10, 10, 20, 20], [696, 100, 706, 110]])


def test_tiled_detection_equals_whole_image_detection_for_separate_objects():
    height, width = 1000, 1800
    truth = np.zeros((height, width), np.float32)
    truth[100:140, 50:120] = 0.9  # only in the first column of patches
    truth[700:760, 1500:1560] = 0.8  # only in the last column
    truth[400:430, 800:830] = 0.7  # in the overlap of two patches: found twice, merged once
    image = np.zeros((height, width, 3), np.uint8)
    calls = []

    def predict(patch, prompts):
        calls.append(patch.shape)
        x, y = origins.pop(0)
        crop = np.zeros((896, 896), np.float32)
        part = truth[y : y + 896, x : x + 896]
        crop[: part.shape[0], : part.shape[1]] = part
        return crop[None].repeat(len(prompts), 0)

    origins = [(x, y) for x, y, _, _ in iter_patches(image)]
    tiled = detect_tiled(image, ["ship"], ["ship in the image"], predict)["ship"]
    whole = detect(truth[None], ["ship"])["ship"]
    assert all(shape == (896, 896, 3) for shape in calls) and len(calls) == 6  # 3 columns x 2 rows
    order = np.argsort(-whole.scores)
    np.testing.assert_array_equal(tiled.coords, whole.coords[order])
    np.testing.assert_allclose(tiled.scores, whole.scores[order])
