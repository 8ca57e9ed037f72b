"""Mask-to-box (M2B) rules checked on hand-worked masks and against cv2 rasterisation of the official pixel test."""

import cv2
import numpy as np
import pytest

from rsam.tasks.m2b import Boxes, _hbb_inside_matrix, _polygon_inside, detect, mask_to_boxes, nms, remove_inner_boxes


def _two_components():
    prob = np.zeros((10, 12), np.float32)
    prob[1:3, 1:4] = 0.75  # component A: 2x3 block ...
    prob[3, 4] = 0.625  # ... plus a diagonal neighbour (joins A only with 8-connectivity)
    prob[6:9, 6:11] = 0.875  # component B: 3x5 block
    return prob


def test_hbb_boxes_scores_and_8_connectivity():
    prob = _two_components()
    boxes = mask_to_boxes(prob > 0.5, prob)
    # A spans x 1..4, y 1..3 -> [1, 1, 5, 4] (x2, y2 exclusive); score (6 * 0.75 + 0.625) / 7
    np.testing.assert_array_equal(boxes.coords, [[1, 1, 5, 4], [6, 6, 11, 9]])
    np.testing.assert_allclose(boxes.scores, [(6 * 0.75 + 0.625) / 7, 0.875])


def test_score_uses_probabilities_inside_the_component_only():
    prob = np.full((4, 4), 0.3, np.float32)
    prob[1:3, 1:3] = 0.9
    mask = np.zeros((4, 4), np.uint8)
    mask[1:3, 1:3] = 1
    mask[1, 1] = 1
    prob[1, 1] = 0.1  # the mask is what it is: a low pixel inside still counts
    boxes = mask_to_boxes(mask, prob)
    np.testing.assert_allclose(boxes.scores, [(0.1 + 3 * 0.9) / 4], rtol=1e-6)


def test_confidence_threshold_is_inclusive_at_001():
    mask = np.zeros((6, 6), np.uint8)
    mask[0:2, 0:2] = 1
    mask[4:6, 4:6] = 1
    prob = np.zeros((6, 6), np.float32)
    prob[0:2, 0:2] = 0.0099  # mean < 0.01 -> dropped
    prob[4:6, 4:6] = 0.0101  # mean >= 0.01 -> kept
    boxes = mask_to_boxes(mask, prob)
    np.testing.assert_array_equal(boxes.coords, [[4, 4, 6, 6]])


def test_oriented_box_is_min_area_rect_of_pixel_centres():
    prob = np.zeros((12, 12), np.float32)
    prob[6:9, 6:11] = 0.9
    boxes = mask_to_boxes(prob > 0.5, prob, box_type="obb")
    corners = {tuple(p) for p in boxes.coords.reshape(-1, 2).astype(int)}
    assert corners == {(6, 6), (10, 6), (10, 8), (6, 8)}  # rectangle through the outer pixel centres


def test_oriented_box_of_a_diagonal_bar():
    mask = np.zeros((20, 20), np.uint8)
    for i in range(2, 15):
        mask[i, i : i + 3] = 1  # a bar along the diagonal
    boxes = mask_to_boxes(mask, mask.astype(np.float32), box_type="obb")
    contour = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0][0]
    expected = cv2.boxPoints(cv2.minAreaRect(contour)).astype(int).reshape(-1)
    np.testing.assert_array_equal(boxes.coords[0], expected)


def _official_pixel_inside(box1, box2):
    """The official box1_in_box2 rasterisation (cv2 canvases), reimplemented for hbb as the reference."""

    def poly(b):
        x1, y1, x2, y2 = b
        return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]])

    p1, p2 = poly(box1), poly(box2)
    w, h = max(p1[:, 0].max(), p2[:, 0].max()), max(p1[:, 1].max(), p2[:, 1].max())
    c1, c2 = np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)
    cv2.fillPoly(c1, [p1], 1)
    cv2.fillPoly(c2, [p2], 1)
    return np.logical_and(c1, c2).sum() == c1.sum()


def test_inner_box_rule_equals_cv2_rasterisation_on_random_boxes():
    rng = np.random.default_rng(0)
    for _ in range(400):
        origin = rng.integers(0, 15, (2, 2))
        boxes = np.concatenate([origin, origin + rng.integers(1, 7, (2, 2))], axis=1)
        matrix = _hbb_inside_matrix(boxes)
        assert matrix[0, 1] == _official_pixel_inside(list(boxes[0]), list(boxes[1]))
        poly = boxes[:, [0, 1, 2, 1, 2, 3, 0, 3]]
        assert _polygon_inside(poly[0], poly[1]) == matrix[0, 1]


def test_inner_removal_quirks():
    boxes = Boxes(
        np.array([[0, 0, 10, 10], [2, 2, 5, 5], [0, 0, 11, 10], [20, 20, 30, 30], [20, 20, 30, 30]], float),
        np.array([0.9, 0.8, 0.7, 0.6, 0.5]),
    )
    kept = remove_inner_boxes(boxes)
    # [2,2,5,5] is inside; [0,0,10,10] and [0,0,11,10] are inside each other (1 px overshoot is clipped by the
    # pair's canvas); the two equal boxes remove each other -> nothing left
    assert len(kept) == 0
    lone = remove_inner_boxes(boxes.take(np.array([0, 1, 3])))
    np.testing.assert_array_equal(lone.coords, [[0, 0, 10, 10], [20, 20, 30, 30]])


def test_boundary_map_refinement():
    mask = np.zeros((10, 20), np.uint8)
    mask[2:8, 1:19] = 1  # one component ...
    prob = mask * np.float32(0.9)
    boundary = np.zeros(mask.shape, np.float32)
    boundary[:, 10] = 0.26  # > 0.25: cuts it into x 1..9 (54 px), x 11..16 (36 px)
    boundary[:, 17] = 0.26  # and x 18 (6 px): 6 <= 0.2 * 54 -> dropped
    boxes = mask_to_boxes(mask, prob, boundary=boundary)
    np.testing.assert_array_equal(boxes.coords, [[1, 2, 10, 8], [11, 2, 17, 8]])
    boundary[:, 10] = 0.25  # exactly the threshold: strict '>' keeps the pixels, no cut there
    boxes = mask_to_boxes(mask, prob, boundary=boundary)
    np.testing.assert_array_equal(boxes.coords, [[1, 2, 17, 8]])


def test_component_fully_covered_by_boundary_vanishes():
    mask = np.zeros((8, 8), np.uint8)
    mask[1:3, 1:3] = 1
    mask[5:7, 5:7] = 1
    boundary = np.zeros(mask.shape, np.float32)
    boundary[0:4, 0:4] = 1.0
    boxes = mask_to_boxes(mask, mask.astype(np.float32), boundary=boundary)
    np.testing.assert_array_equal(boxes.coords, [[5, 5, 7, 7]])


def test_nms_keeps_iou_exactly_half_and_sorts_by_score():
    # IoU([0,0,10,10], [0,0,10,20]) = 100 / 200 = 0.5 -> not suppressed (torchvision suppresses > 0.5)
    boxes = Boxes(np.array([[0, 0, 10, 10], [0, 0, 10, 20], [0, 0, 10, 11]], float), np.array([0.5, 0.9, 0.7]))
    kept = nms(boxes)
    np.testing.assert_array_equal(kept.coords, [[0, 0, 10, 20], [0, 0, 10, 10]])  # IoU 0.55 one suppressed
    np.testing.assert_allclose(kept.scores, [0.9, 0.5])


def test_detect_per_class_and_bad_input():
    prob = _two_components()
    probs = np.stack([prob, np.zeros_like(prob)])
    result = detect(probs, ["ship", "harbor"])
    assert len(result["ship"]) == 2 and len(result["harbor"]) == 0
    np.testing.assert_allclose(result["ship"].scores, [0.875, (6 * 0.75 + 0.625) / 7])  # sorted by score
    with pytest.raises(ValueError, match="2 probability maps"):
        detect(probs, ["ship"])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        detect(probs * 2, ["ship", "harbor"])


def test_polygon_prefilter_never_hides_an_inner_box():
    """The vectorised prefilter may only skip pairs the official rasterised test also finds 'not inside'."""
    from rsam.tasks.m2b import _polygon_may_be_inside

    rng = np.random.default_rng(0)
    for _ in range(150):
        rects = np.array(
            [
                cv2.boxPoints(
                    (
                        (rng.uniform(-2, 20), rng.uniform(-2, 20)),
                        (rng.uniform(0, 12), rng.uniform(0, 12)),
                        rng.uniform(0, 90),
                    )
                )
                .astype(int)
                .reshape(-1)
                for _ in range(5)
            ],
            float,
        )
        may = _polygon_may_be_inside(rects)
        for i in range(5):
            for j in range(5):
                if i != j and _polygon_inside(rects[i], rects[j]):
                    assert may[i, j]
