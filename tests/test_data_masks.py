"""Segmentation decoding against pycocotools directly and hand-computed masks."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from rsam.data.masks import box_mask, decode_segmentation, encode_rle, rle_string_counts
from rsam.data.records import (
    SampleError,
    decode_mask_png,
    encode_mask_png,
    inspect_image_bytes,
    make_key,
    validate_text,
)


def _rle(mask: np.ndarray) -> dict:
    return encode_rle(mask)


def test_rle_string_counts_match_pycocotools():
    rng = np.random.default_rng(0)
    mask = rng.random((37, 23)) > 0.6
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    runs = rle_string_counts(rle["counts"].decode())
    # independent reference: run lengths of the column-major flattening
    flat = mask.flatten(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [2]])))  # sentinel closes the last run
    expected = np.diff(np.concatenate([[0], changes])).tolist()
    assert runs[: len(expected)] == expected[: len(runs)]
    assert sum(runs) == mask.size


def test_exactly_one_rule_drops_doubly_covered_pixels():
    a = np.zeros((6, 8), bool)
    a[1:4, 1:5] = True
    b = np.zeros((6, 8), bool)
    b[2:5, 3:7] = True
    mask, kind = decode_segmentation([_rle(a), _rle(b)], 6, 8, "s", rule="exactly-one")
    assert kind == "rle"
    np.testing.assert_array_equal(mask, a ^ b)  # covered once = symmetric difference
    union, _ = decode_segmentation([_rle(a), _rle(b)], 6, 8, "s", rule="union")
    np.testing.assert_array_equal(union, a | b)
    same, _ = decode_segmentation([_rle(a), _rle(a)], 6, 8, "s")
    assert not same.any()  # two identical parts give an empty target, as the official reader


def test_polygon_matches_pycocotools_and_single_rle_dict():
    polygon = [1.0, 1.0, 9.0, 1.0, 9.0, 6.0, 1.0, 6.0]
    mask, kind = decode_segmentation([polygon], 8, 12, "s")
    reference = mask_utils.decode(mask_utils.frPyObjects([polygon], 8, 12)).sum(axis=2) == 1
    assert kind == "polygon"
    np.testing.assert_array_equal(mask, reference)
    single, kind = decode_segmentation(_rle(reference), 8, 12, "s")
    assert kind == "rle"
    np.testing.assert_array_equal(single, reference)


@pytest.mark.parametrize(
    "segmentation, message",
    [
        ({"size": [5, 6], "counts": "0"}, "invalid RLE"),  # 0 pixels, image has 30
        ({"size": [6, 4], "counts": "00"}, "differs from the image size"),
        ({"size": [5, 6], "counts": "ab~"}, "invalid"),
        ({"size": [5, 6], "counts": [10, 20]}, "uncompressed"),
        ([], "non-empty"),
        ([[1.0, 2.0, 3.0]], "polygon"),
    ],
)
def test_bad_segmentations_are_rejected_naming_the_sample(segmentation, message):
    with pytest.raises(SampleError, match=message) as info:
        decode_segmentation(segmentation, 5, 6, "ref[3]", allow_uncompressed=False)
    assert "ref[3]" in str(info.value)


def test_uncompressed_rle_accepted_when_allowed():
    mask, _ = decode_segmentation({"size": [5, 6], "counts": [10, 20]}, 5, 6, "s", allow_uncompressed=True)
    expected = np.zeros(30, bool)
    expected[10:] = True
    np.testing.assert_array_equal(mask, expected.reshape(6, 5).T)  # column-major runs


def test_box_mask_rounds_and_clips():
    mask = box_mask([1.4, 0.6, 3.2, 2.0], 4, 6, "s")
    expected = np.zeros((4, 6), bool)
    expected[1:3, 1:5] = True
    np.testing.assert_array_equal(mask, expected)
    with pytest.raises(SampleError):
        box_mask([10, 10, 2, 2], 4, 6, "s")


def test_mask_png_roundtrip_and_text_and_keys():
    mask = np.eye(5, 7, dtype=bool)
    assert np.array_equal(decode_mask_png(encode_mask_png(mask)), mask)
    assert Image.open(io.BytesIO(encode_mask_png(mask))).mode == "1"
    assert validate_text("  a  red\tcar ", "s") == "a red car"
    for bad in ("", "   ", None, "x" * 401):
        with pytest.raises(SampleError):
            validate_text(bad, "s")
    assert make_key("rrsisd", "ref", 3, 0) == "rrsisd-ref-3-0"
    assert "." not in make_key("a.b", "c/d")
    png = io.BytesIO()
    Image.new("RGB", (7, 3)).save(png, format="PNG")
    info = inspect_image_bytes(png.getvalue(), "s")
    assert (info.suffix, info.width, info.height) == ("png", 7, 3)
    with pytest.raises(SampleError, match="cannot decode"):
        inspect_image_bytes(png.getvalue()[:40], "s")
