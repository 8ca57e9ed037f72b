"""Mask overlays for humans (PNG files, contact sheets, wandb image panels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240))


def overlay_mask(
    rgb: np.ndarray,
    mask: np.ndarray,
    color: tuple[int, int, int] = PALETTE[0],
    alpha: float = 0.45,
    outline: bool = True,
) -> np.ndarray:
    """Blend ``color`` into the masked pixels of a uint8 RGB image; optionally draw the mask's boundary opaque."""
    if rgb.shape[:2] != mask.shape[:2]:
        raise ValueError(f"mask shape {mask.shape[:2]} differs from image shape {rgb.shape[:2]}")
    out = rgb.astype(np.float32).copy()
    fg = mask.astype(bool)
    out[fg] = (1 - alpha) * out[fg] + alpha * np.asarray(color, np.float32)
    if outline:
        padded = np.pad(fg, 1, mode="edge")
        interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
        out[fg & ~interior] = color
    return out.round().clip(0, 255).astype(np.uint8)


def captioned(image: np.ndarray, text: str) -> np.ndarray:
    """Add a white caption strip with ``text`` under a uint8 RGB image."""
    strip = Image.new("RGB", (image.shape[1], 18), (255, 255, 255))
    ImageDraw.Draw(strip).text((4, 3), text[: max(8, image.shape[1] // 6)], fill=(0, 0, 0))
    return np.concatenate([image, np.asarray(strip)], axis=0)


def save_png(image: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path
