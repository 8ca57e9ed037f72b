"""COCO segmentations -> binary masks, with the checks the official readers skip.

Decoding goes through ``pycocotools`` as the official reader does. Before anything reaches pycocotools' C decoder
(which does no bounds checking), RLEs are validated here: size equal to the image size, counts non-negative and
summing to ``height * width``. Two ways to combine the parts of one segmentation:

- ``"exactly-one"`` (the official RemoteSAM/RRSIS-D rule, ``all_dataset.py``: ``sum(parts) == 1``): pixels covered
  by two or more parts are dropped. The sum is taken in int32, so 256 overlapping parts do not wrap to 0 as the
  official uint8 cast does.
- ``"union"`` (COCO ``annToMask`` semantics): any covered pixel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_utils

from rsam.data.records import SampleError

COMBINE_RULES = ("exactly-one", "union")


def rle_string_counts(counts: str) -> list[int]:
    """Run lengths of a compressed COCO RLE string (pure-Python port of pycocotools' ``rleFrString``)."""
    runs: list[int] = []
    position = 0
    while position < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(counts):
                raise ValueError("truncated RLE string")
            char = ord(counts[position]) - 48
            if not 0 <= char < 64:
                raise ValueError(f"invalid character {counts[position]!r} in RLE string")
            value |= (char & 0x1F) << (5 * shift)
            more = bool(char & 0x20)
            position += 1
            shift += 1
            if not more and (char & 0x10):
                value |= -1 << (5 * shift)
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def _check_runs(runs: Sequence[int], height: int, width: int, sample: str) -> None:
    if any(run < 0 for run in runs):
        raise SampleError(f"{sample}: invalid RLE (negative run length)")
    total = sum(runs)
    if total != height * width:
        raise SampleError(f"{sample}: invalid RLE (runs cover {total} pixels, image has {height * width})")


def _rle_part(part: dict, height: int, width: int, sample: str, allow_uncompressed: bool) -> dict:
    size = part.get("size")
    counts = part.get("counts")
    if not isinstance(size, (list, tuple)) or len(size) != 2:
        raise SampleError(f"{sample}: RLE without a valid 'size'")
    if (int(size[0]), int(size[1])) != (height, width):
        raise SampleError(
            f"{sample}: mask size {int(size[1])}x{int(size[0])} differs from the image size {width}x{height}"
        )
    if isinstance(counts, (bytes, str)):
        text = counts.decode("ascii", "replace") if isinstance(counts, bytes) else counts
        try:
            runs = rle_string_counts(text)
        except ValueError as err:
            raise SampleError(f"{sample}: invalid RLE: {err}") from err
        _check_runs(runs, height, width, sample)
        return {"size": [height, width], "counts": text.encode("ascii")}
    if isinstance(counts, list):
        if not allow_uncompressed:
            raise SampleError(f"{sample}: uncompressed RLE (counts as a list) is not accepted in this format")
        if not all(isinstance(run, int) and not isinstance(run, bool) for run in counts):
            raise SampleError(f"{sample}: invalid RLE (non-integer counts)")
        _check_runs(counts, height, width, sample)
        return mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    raise SampleError(f"{sample}: RLE 'counts' must be a string or a list, got {type(counts).__name__}")


def _polygon_part(polygon: list, height: int, width: int, sample: str) -> dict:
    if len(polygon) < 6 or len(polygon) % 2:
        raise SampleError(f"{sample}: polygon needs an even number (>= 6) of coordinates, got {len(polygon)}")
    try:
        coords = [float(value) for value in polygon]
    except (TypeError, ValueError) as err:
        raise SampleError(f"{sample}: polygon has non-numeric coordinates") from err
    if not all(math.isfinite(value) for value in coords):
        raise SampleError(f"{sample}: polygon has non-finite coordinates")
    return mask_utils.frPyObjects([coords], height, width)[0]


def segmentation_parts(
    segmentation: object, height: int, width: int, sample: str, *, allow_uncompressed: bool = True
) -> tuple[list[dict], str]:
    """Validated pycocotools RLEs, one per part, and the segmentation type (``polygon`` or ``rle``)."""
    if isinstance(segmentation, dict):
        return [_rle_part(segmentation, height, width, sample, allow_uncompressed)], "rle"
    if not isinstance(segmentation, list) or not segmentation:
        raise SampleError(f"{sample}: segmentation must be a non-empty list of polygons or RLEs, or one RLE")
    parts, kinds = [], set()
    for part in segmentation:
        if isinstance(part, dict):
            parts.append(_rle_part(part, height, width, sample, allow_uncompressed))
            kinds.add("rle")
        elif isinstance(part, list):
            parts.append(_polygon_part(part, height, width, sample))
            kinds.add("polygon")
        else:
            raise SampleError(f"{sample}: segmentation part of type {type(part).__name__} (polygon list or RLE dict)")
    return parts, "+".join(sorted(kinds))


def combine_parts(parts: list[dict], height: int, width: int, rule: str) -> np.ndarray:
    """Decode the parts and combine them with ``rule`` (see the module docstring) into a bool (H, W) mask."""
    if rule not in COMBINE_RULES:
        raise ValueError(f"unknown combine rule {rule!r}; one of {COMBINE_RULES}")
    coverage = np.zeros((height, width), dtype=np.int32)
    for part in parts:
        coverage += mask_utils.decode(part).astype(np.int32)
    return coverage == 1 if rule == "exactly-one" else coverage > 0


def decode_segmentation(
    segmentation: object,
    height: int,
    width: int,
    sample: str,
    *,
    rule: str = "exactly-one",
    allow_uncompressed: bool = True,
) -> tuple[np.ndarray, str]:
    """A COCO ``segmentation`` (polygons, RLE list or one RLE) -> (bool mask (H, W), segmentation type)."""
    parts, kind = segmentation_parts(segmentation, height, width, sample, allow_uncompressed=allow_uncompressed)
    return combine_parts(parts, height, width, rule), kind


def box_mask(bbox: Sequence[float], height: int, width: int, sample: str) -> np.ndarray:
    """A COCO ``[x, y, w, h]`` box as a filled mask; edges rounded to the nearest pixel and clipped to the image."""
    if len(bbox) != 4:
        raise SampleError(f"{sample}: bbox must be [x, y, w, h], got {bbox!r}")
    x, y, w, h = (float(value) for value in bbox)
    if not all(math.isfinite(value) for value in (x, y, w, h)) or w <= 0 or h <= 0:
        raise SampleError(f"{sample}: degenerate bbox {list(bbox)!r}")
    x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
    x1, y1 = min(width, int(round(x + w))), min(height, int(round(y + h)))
    mask = np.zeros((height, width), dtype=bool)
    if x1 <= x0 or y1 <= y0:
        raise SampleError(f"{sample}: bbox {list(bbox)!r} lies outside the {width}x{height} image")
    mask[y0:y1, x0:x1] = True
    return mask


def encode_rle(mask: np.ndarray) -> dict:
    """A bool mask as a compressed COCO RLE with a ``str`` counts field (JSON-serialisable)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}
