"""Probability maps -> masks, and the official nearest-neighbour resizing of model outputs.

Official rule (``tasks/code/model.py``): ``mask = argmax(logits)`` and ``prob = softmax(logits)[:, 1]``; both are
brought to the original image size with ``torch.nn.functional.interpolate`` in its default ``nearest`` mode. For two
channels ``argmax == 1`` is ``prob > 0.5`` (an exact tie goes to background), which is what :func:`probs_to_masks`
computes. Resizing ``prob`` and thresholding afterwards equals thresholding and resizing the mask, because nearest
resizing only copies values.
"""

from __future__ import annotations

import numpy as np
import torch

FOREGROUND_THRESHOLD = 0.5


def as_prob_stack(probs, *, name: str = "probabilities") -> np.ndarray:
    """Return probabilities as a float32 ``(N, H, W)`` array (a 2-D map becomes ``N = 1``); values must be in [0, 1]."""
    if isinstance(probs, torch.Tensor):
        probs = probs.detach().to("cpu", torch.float32).numpy()
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim == 2:
        probs = probs[None]
    if probs.ndim != 3:
        raise ValueError(f"{name} must have shape (N, H, W) or (H, W), got {probs.shape}")
    if probs.size and (not np.all(np.isfinite(probs)) or probs.min() < 0.0 or probs.max() > 1.0):
        raise ValueError(f"{name} must be finite values in [0, 1]")
    return probs


def probs_to_masks(probs: np.ndarray) -> np.ndarray:
    """Binary masks (uint8) of the official argmax rule: foreground iff ``prob > 0.5``."""
    return (np.asarray(probs) > FOREGROUND_THRESHOLD).astype(np.uint8)


def resize_nearest(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``(N, H, W)`` or ``(H, W)`` maps to ``size = (H, W)`` like ``F.interpolate(mode='nearest')``.

    Source index of output pixel ``i`` is ``floor(i * in / out)`` (PyTorch's legacy nearest), the rule the official
    wrapper applies to masks and probabilities. Returns the input unchanged if it already has that size.
    """
    maps = np.asarray(maps)
    height, width = int(size[0]), int(size[1])
    if maps.shape[-2:] == (height, width):
        return maps
    in_h, in_w = maps.shape[-2:]
    rows = _nearest_source_index(in_h, height)
    cols = _nearest_source_index(in_w, width)
    return maps[..., rows[:, None], cols[None, :]]


def _nearest_source_index(in_size: int, out_size: int) -> np.ndarray:
    # PyTorch computes the scale and the product in float32 and floors it (UpSample.h, nearest_idx)
    scale = np.float32(in_size / out_size)
    index = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(index, in_size - 1)


def pooled_scores(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-map global max (GMP) and global mean (GAP) in float32, as ``AdaptiveMax/AvgPool2d(1)`` (model.py)."""
    tensor = torch.from_numpy(as_prob_stack(probs))
    return tensor.amax(dim=(1, 2)).numpy(), tensor.mean(dim=(1, 2)).numpy()
