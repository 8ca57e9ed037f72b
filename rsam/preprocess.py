"""Image and mask preprocessing as the official RemoteSAM pipeline does it.

Official (``tasks/code/model.py::get_transform``): PIL ``Image.resize((W, H), BILINEAR)`` to the model size (aspect
ratio not kept; Pillow's resampler, antialiased when shrinking), ``ToTensor`` (uint8 / 255 in float32), then ImageNet
``Normalize`` ((x - mean) / std, in that order, float32). Target masks are resized with nearest neighbour.

Accepted images: a uint8 ``H x W x 3`` RGB array, a PIL image (converted to RGB), or a path to an image file.
Anything else gets a ``ValueError``/``TypeError`` that says what was wrong.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ImageLike = np.ndarray | Image.Image | str | PathLike
# Pillow modes of more than 8 bits per sample: ``convert('RGB')`` would clip them to 255, so they follow the array rule
_WIDE_MODES = {"I", "F", "I;16", "I;16L", "I;16B", "I;16N"}


def _size_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def to_rgb_uint8(image: ImageLike, *, scale: float | None = None, name: str | None = None) -> np.ndarray:
    """Return an ``H x W x 3`` uint8 RGB array.

    ``scale``: required for non-uint8 arrays and for image files of more than 8 bits per sample (16-bit or float
    greyscale PNG/TIFF), which are never clipped silently; the values are multiplied by it, rounded and clipped to
    0..255 (e.g. ``scale=255`` for floats in 0..1, ``scale=255/65535`` for 16-bit imagery).
    """
    label = name or "image"
    if isinstance(image, (str, PathLike)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {path}")
        try:
            with Image.open(path) as img:
                img.load()
                if img.mode in _WIDE_MODES:  # 16-bit / 32-bit / float: the array rule (a scale is required)
                    grey = np.asarray(img)
                    return to_rgb_uint8(np.repeat(grey[..., None], 3, axis=2), scale=scale, name=str(path))
                return to_rgb_uint8(img, scale=scale, name=str(path))
        except (OSError, SyntaxError) as err:
            raise ValueError(f"cannot decode image {path}: {err}") from err
    if isinstance(image, Image.Image):
        if image.width == 0 or image.height == 0:
            raise ValueError(f"{label} is empty ({image.width}x{image.height})")
        if image.mode != "RGB":
            image = image.convert("RGB")
        return np.asarray(image, dtype=np.uint8)
    if isinstance(image, torch.Tensor):
        raise TypeError(f"{label}: pass a numpy array, PIL image or path, not a torch.Tensor")
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{label}: expected a uint8 HxWx3 array, PIL image or path, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{label}: expected shape (H, W, 3) RGB, got {tuple(image.shape)}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{label} is empty: shape {tuple(image.shape)}")
    if image.dtype != np.uint8:
        if scale is None:
            raise ValueError(
                f"{label} has dtype {image.dtype}, not uint8: state the scaling (scale=...) that maps it to 0..255"
            )
        if not np.all(np.isfinite(image)):
            raise ValueError(f"{label} contains NaN or infinite values")
        image = np.clip(np.rint(image.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)


def resize_image(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """PIL bilinear resize of a uint8 RGB array to ``size`` = (H, W) (the official ``Resize``)."""
    height, width = _size_hw(size)
    if image.shape[0] == height and image.shape[1] == width:
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def normalize(image: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> contiguous float32 3xHxW, ``((u8 / 255) - mean) / std`` in float32, in that order."""
    image = np.ascontiguousarray(image)
    if not image.flags.writeable:
        image = image.copy()
    tensor = torch.from_numpy(image).permute(2, 0, 1).to(torch.float32).div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]
    return tensor.sub_(mean).div_(std).contiguous()


def preprocess_image(image: ImageLike, size: int | tuple[int, int], *, scale: float | None = None) -> torch.Tensor:
    """Any accepted image -> normalised float32 tensor (3, H, W) at the model size."""
    return normalize(resize_image(to_rgb_uint8(image, scale=scale), size))


def resize_mask(mask: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a 2-D mask (bool or integer) to ``size`` = (H, W); keeps the dtype."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {tuple(mask.shape)}")
    height, width = _size_hw(size)
    if mask.shape == (height, width):
        return mask
    dtype = mask.dtype
    src = mask.astype(np.uint8) if dtype == np.bool_ else mask
    if src.dtype not in (np.uint8, np.int32, np.float32):
        src = src.astype(np.int32)
    out = np.asarray(Image.fromarray(src).resize((width, height), Image.NEAREST))
    return out.astype(dtype)
