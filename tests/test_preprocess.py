"""Preprocessing equals the official PIL bilinear resize + ImageNet normalisation; bad inputs get clear errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from rsam.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    normalize,
    preprocess_image,
    resize_image,
    resize_mask,
    to_rgb_uint8,
)


@pytest.mark.parametrize("case", ["up_300x400", "down_1000x1100"])
def test_resize_and_normalise_match_golden(reference_dir, case):
    golden = np.load(reference_dir / "preprocess_golden.npz")
    resized = resize_image(golden[f"{case}_src_u8"], 896)
    # measured: identical to the official Pillow resize (max |diff| 0) and normalised row 0 (max |diff| 0.0)
    assert np.array_equal(resized, golden[f"{case}_resized_u8"])
    row0 = normalize(resized)[:, 0, :].numpy()
    np.testing.assert_array_equal(row0, golden[f"{case}_normalized_row0"])


def test_normalise_hand_computed():
    pixel = np.array([[[255, 0, 128]]], dtype=np.uint8)
    out = normalize(pixel)
    expected = [
        (1.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0],
        (0.0 - IMAGENET_MEAN[1]) / IMAGENET_STD[1],
        (128 / 255 - IMAGENET_MEAN[2]) / IMAGENET_STD[2],
    ]
    assert out.shape == (3, 1, 1) and out.dtype == torch.float32 and out.is_contiguous()
    np.testing.assert_allclose(out.flatten().numpy(), expected, rtol=1e-6)


def test_accepts_array_pil_and_path(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    path = tmp_path / "img.png"
    Image.fromarray(arr).save(path)
    a = preprocess_image(arr, (64, 32))
    b = preprocess_image(Image.fromarray(arr), (64, 32))
    c = preprocess_image(path, (64, 32))
    assert a.shape == (3, 64, 32)
    assert torch.equal(a, b) and torch.equal(a, c)
    # grey PIL images are converted to RGB
    grey = to_rgb_uint8(Image.fromarray(arr[..., 0]))
    assert grey.shape == (37, 53, 3) and np.array_equal(grey[..., 1], arr[..., 0])


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((8, 8), np.uint8), r"\(H, W, 3\)"),
        (np.zeros((8, 8, 4), np.uint8), r"\(H, W, 3\)"),
        (np.zeros((0, 8, 3), np.uint8), "empty"),
        (np.zeros((8, 8, 3), np.float32), "scale"),
        ([1, 2, 3], "expected"),
    ],
)
def test_bad_images_get_clear_errors(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        to_rgb_uint8(bad)


def test_float_with_stated_scale():
    arr = np.full((2, 2, 3), 0.5, np.float32)
    assert to_rgb_uint8(arr, scale=255).max() == 128


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        to_rgb_uint8(tmp_path / "nope.png")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.jpg"):
        to_rgb_uint8(bad)


def test_mask_nearest():
    mask = np.array([[0, 1], [1, 0]], dtype=np.uint8)
    out = resize_mask(mask, (4, 4))
    expected = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]], dtype=np.uint8)
    assert np.array_equal(out, expected)
    assert resize_mask(mask.astype(bool), (4, 4)).dtype == bool
