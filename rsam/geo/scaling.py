"""One rule per scene that maps raster values to the model's 0..255 RGB input.

Rule (the same for files, arrays and GeoTIFFs):

* uint8 data is used as is (identity), unless a stretch is asked for;
* any other data type (uint16, int16, float32, ...) is **refused** unless the caller states a rule: ``scale=F``
  (``value * F``, rounded, clipped to 0..255: ``F = 255`` for reflectance 0..1, ``F = 255/65535`` for full-range
  16-bit) or ``stretch=(LOW, HIGH)`` percentiles (linear stretch of each band from its LOW-th to its HIGH-th
  percentile onto 0..255, e.g. ``(2, 98)``);
* the percentiles are computed **once per scene**, per band, over valid pixels only (nodata and non-finite values
  excluded), on the raster's smallest overview that still has at least ``min_sample_side`` pixels on its short side,
  or, for a raster without overviews, on a decimated read (GDAL nearest-neighbour) of at most ``sample_side`` pixels
  on its long side; never per tile, so the same value gets the same colour everywhere in the scene.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE_SIDE = 1024
MIN_SAMPLE_SIDE = 256


@dataclass(frozen=True)
class ScaleRule:
    """``kind``: ``identity`` (uint8 as is), ``factor`` (``value * factor``) or ``stretch`` (per-band ``low``..``high``
    onto 0..255). ``low`` / ``high``: one value per band (stretch only); ``percentiles``: how they were chosen."""

    kind: str
    factor: float = 1.0
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()
    percentiles: tuple[float, float] | None = None

    def apply(self, data: np.ndarray) -> np.ndarray:
        """``(bands, h, w)`` or ``(h, w, bands)`` is not guessed: ``data`` is band-first ``(bands, h, w)``. Returns
        uint8 of the same shape; non-finite values become 0 (they are nodata and masked by the caller)."""
        if self.kind == "identity":
            if data.dtype != np.uint8:
                raise ValueError(f"identity scaling needs uint8 data, got {data.dtype}")
            return data
        values = data.astype(np.float32)
        if self.kind == "factor":
            values = values * np.float32(self.factor)
        elif self.kind == "stretch":
            low = np.asarray(self.low, np.float32).reshape(-1, 1, 1)
            span = np.maximum(np.asarray(self.high, np.float32).reshape(-1, 1, 1) - low, np.float32(1e-12))
            values = (values - low) / span * np.float32(255.0)
        else:
            raise ValueError(f"unknown scaling kind {self.kind!r}")
        values = np.nan_to_num(values, nan=0.0, posinf=255.0, neginf=0.0)
        return np.clip(np.rint(values), 0, 255).astype(np.uint8)

    def describe(self) -> dict:
        if self.kind == "stretch":
            return {
                "kind": "stretch",
                "percentiles": list(self.percentiles or ()),
                "low": [round(v, 6) for v in self.low],
                "high": [round(v, 6) for v in self.high],
            }
        return {"kind": self.kind, **({"factor": self.factor} if self.kind == "factor" else {})}


def parse_stretch(text: str | None) -> tuple[float, float] | None:
    """``"2,98"`` -> ``(2.0, 98.0)``; both in [0, 100] and LOW < HIGH."""
    if text is None:
        return None
    try:
        low, high = (float(v) for v in str(text).split(","))
    except ValueError as err:
        raise ValueError(f"--stretch must be LOW,HIGH percentiles such as 2,98; got {text!r}") from err
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(f"--stretch percentiles must satisfy 0 <= LOW < HIGH <= 100; got {text!r}")
    return low, high


def stretch_limits(sample: np.ndarray, valid: np.ndarray, percentiles: tuple[float, float]) -> tuple[list, list]:
    """Per-band (low, high) percentiles of ``sample`` ``(bands, h, w)`` over ``valid & finite`` pixels."""
    lows, highs = [], []
    for band in range(sample.shape[0]):
        values = sample[band][valid & np.isfinite(sample[band])]
        if values.size == 0:
            raise ValueError("no valid pixel to compute the stretch on (the whole sample is nodata)")
        low, high = np.percentile(values.astype(np.float64), percentiles)
        lows.append(float(low))
        highs.append(float(high))
    return lows, highs


def choose_rule(
    dtype,
    *,
    scale: float | None = None,
    stretch: tuple[float, float] | None = None,
    sample=None,
    name: str = "image",
) -> ScaleRule:
    """The scaling rule for data of ``dtype``. ``sample``: a callable returning ``(values (bands, h, w), valid (h, w))``
    for the stretch (called only when a stretch is asked for)."""
    if scale is not None and stretch is not None:
        raise ValueError("give either a scale factor or a percentile stretch, not both")
    if scale is not None:
        if not np.isfinite(scale) or scale <= 0:
            raise ValueError(f"the scale factor must be a positive number, got {scale}")
        return ScaleRule("factor", factor=float(scale))
    if stretch is not None:
        if sample is None:
            raise ValueError("a percentile stretch needs a sample of the scene")
        values, valid = sample()
        low, high = stretch_limits(values, valid, stretch)
        return ScaleRule("stretch", low=tuple(low), high=tuple(high), percentiles=tuple(stretch))
    if np.dtype(dtype) == np.uint8:
        return ScaleRule("identity")
    raise ValueError(
        f"{name} has data type {np.dtype(dtype)}, not uint8: state how to map it to 0..255, with --scale FACTOR "
        "(e.g. 255 for reflectance 0..1, 0.00389 for full-range 16-bit) or --stretch LOW,HIGH (per-band percentile "
        "stretch computed once on the whole image, e.g. 2,98)"
    )


def array_sample(data: np.ndarray, valid: np.ndarray | None = None, side: int = SAMPLE_SIDE):
    """A sample callable for an in-memory band-first array: every k-th pixel so the long side is <= ``side``."""
    step = max(1, int(np.ceil(max(data.shape[1:]) / side)))

    def sample():
        values = data[:, ::step, ::step]
        mask = np.ones(values.shape[1:], bool) if valid is None else valid[::step, ::step]
        return values, mask

    return sample
