"""One image-text-mask triplet as it is stored in a shard, and the checks every converter applies to it.

A shard sample is three tar members sharing one key (WebDataset convention, see ``docs/shards.md``):

- ``<key>.<ext>``: the image in its original encoding (``jpg``, ``png``, ``tif``, ``webp``; the extension comes from
  the bytes, not from the source file name),
- ``<key>.mask.png``: the binary target mask, a 1-bit PNG of the image's size (non-zero = referred object),
- ``<key>.json``: the record (text, kind, category, source, ids, split, licence, ...).
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

KIND_ONE_TO_ONE = "one-to-one"
KIND_ONE_TO_MANY = "one-to-many"
KIND_ONE_TO_ZERO = "one-to-zero"
KINDS = (KIND_ONE_TO_ONE, KIND_ONE_TO_MANY, KIND_ONE_TO_ZERO)

MASK_SUFFIX = "mask.png"
RECORD_SUFFIX = "json"
IMAGE_SUFFIXES = ("jpg", "png", "tif", "webp", "bmp")
_FORMAT_TO_SUFFIX = {"JPEG": "jpg", "PNG": "png", "TIFF": "tif", "WEBP": "webp", "BMP": "bmp"}

# Texts longer than this (in characters) are rejected as garbage; the tokenizer keeps only 20 ids anyway.
MAX_TEXT_CHARS = 400

_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


class SampleError(ValueError):
    """A bad input sample; the message names the sample so that it can be found and fixed (or skipped)."""


def make_key(*parts: object) -> str:
    """A WebDataset-safe sample key (no dots, no slashes): the parts joined with ``-``."""
    text = "-".join(str(part) for part in parts)
    key = _KEY_UNSAFE.sub("_", text).strip("_")
    if not key:
        raise ValueError(f"cannot build a sample key from {parts!r}")
    return key


def validate_text(text: object, sample: str) -> str:
    """The expression, stripped; rejects non-strings, empty and over-long texts."""
    if not isinstance(text, str):
        raise SampleError(f"{sample}: expression is not a string ({type(text).__name__})")
    stripped = " ".join(text.split())
    if not stripped:
        raise SampleError(f"{sample}: empty expression")
    if len(stripped) > MAX_TEXT_CHARS:
        raise SampleError(f"{sample}: expression is {len(stripped)} characters long (limit {MAX_TEXT_CHARS})")
    return stripped


@dataclass(frozen=True)
class ImageInfo:
    """An image decoded once for checking: its original bytes, their format suffix and its size."""

    data: bytes
    suffix: str
    width: int
    height: int


def inspect_image_bytes(data: bytes, sample: str) -> ImageInfo:
    """Fully decode ``data`` (truncated or corrupt files fail here, naming ``sample``) and return its facts."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            fmt, width, height = img.format, img.width, img.height
    except Exception as err:  # PIL raises many types for corrupt data
        raise SampleError(f"{sample}: cannot decode image: {err}") from err
    suffix = _FORMAT_TO_SUFFIX.get(fmt or "")
    if suffix is None:
        raise SampleError(f"{sample}: unsupported image format {fmt!r}")
    if width == 0 or height == 0:
        raise SampleError(f"{sample}: empty image ({width}x{height})")
    return ImageInfo(data=data, suffix=suffix, width=width, height=height)


def encode_mask_png(mask: np.ndarray) -> bytes:
    """A 2-D boolean mask as a 1-bit PNG (deterministic bytes)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(bool)).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def decode_mask_png(data: bytes) -> np.ndarray:
    """Mask PNG bytes -> bool array (H, W); any non-zero pixel is object."""
    with Image.open(io.BytesIO(data)) as img:
        array = np.asarray(img)
    if array.ndim == 3:
        array = array[..., 0]
    return array != 0


def encode_image(rgb: np.ndarray, suffix: str, quality: int = 95) -> bytes:
    """Re-encode an RGB (or grey) uint8 array as ``png`` or ``jpg`` (used only where re-encoding is asked for)."""
    buffer = io.BytesIO()
    if suffix == "png":
        Image.fromarray(rgb).save(buffer, format="PNG")
    elif suffix == "jpg":
        Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    else:
        raise ValueError(f"cannot re-encode to {suffix!r} (png or jpg)")
    return buffer.getvalue()


REENCODE_CHOICES = ("none", "jpg", "png")


def reencode_image(info: ImageInfo, rgb: np.ndarray, suffix: str) -> ImageInfo:
    """``info`` re-encoded from its decoded RGB pixels as ``suffix`` (``none`` keeps the original bytes)."""
    if suffix == "none" or suffix == info.suffix:
        return info
    return ImageInfo(data=encode_image(rgb, suffix), suffix=suffix, width=info.width, height=info.height)


@dataclass
class Triplet:
    """One sample ready to be written: key, image bytes, mask and the JSON record."""

    key: str
    image: ImageInfo
    mask: np.ndarray
    record: dict = field(default_factory=dict)

    def members(self) -> list[tuple[str, bytes]]:
        """The tar members ``(name, bytes)`` of this sample, in a fixed order."""
        if self.mask.shape != (self.image.height, self.image.width):
            raise SampleError(
                f"{self.key}: mask is {self.mask.shape[1]}x{self.mask.shape[0]} but the image is "
                f"{self.image.width}x{self.image.height}"
            )
        record = dict(self.record, key=self.key, width=self.image.width, height=self.image.height)
        return [
            (f"{self.key}.{self.image.suffix}", self.image.data),
            (f"{self.key}.{MASK_SUFFIX}", encode_mask_png(self.mask)),
            (f"{self.key}.{RECORD_SUFFIX}", json.dumps(record, sort_keys=True, ensure_ascii=False).encode("utf-8")),
        ]
