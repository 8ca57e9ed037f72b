"""Scenes: a raster opened with rasterio, its band choice, nodata mask and scaling rule, read window by window.

* ``bands``: 1-based band indexes (``--bands 4,3,2``); default 1,2,3 for rasters with >= 3 bands, and band 1
  repeated three times for a single-band raster. The model sees exactly three bands; any other count is refused.
* nodata: a pixel is nodata when GDAL's masks of **all** chosen bands mark it (nodata value in every band, alpha band
  or internal mask; a saturated value in one band is data) or when a chosen band holds a non-finite float. Nodata
  pixels are 0 in the model input and are written as the output's nodata value; a window with no valid pixel is not
  run through the model at all.
* a raster without a CRS (e.g. a plain PNG/JPEG or an ungeoreferenced TIFF) is accepted with a warning: its
  transform is the identity and vectors come out in pixel coordinates (x = column, y = row).
* ``gsd``: optional target ground resolution (CRS units per pixel): the scene is read through a ``WarpedVRT`` in its
  own CRS at that resolution (bilinear), and every output is on that grid.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from rsam.geo.scaling import MIN_SAMPLE_SIDE, SAMPLE_SIDE, ScaleRule, choose_rule

log = logging.getLogger(__name__)


def parse_bands(text: str | None) -> tuple[int, ...] | None:
    """``"4,3,2"`` -> ``(4, 3, 2)`` (1-based)."""
    if text is None:
        return None
    try:
        bands = tuple(int(v) for v in str(text).split(","))
    except ValueError as err:
        raise ValueError(f"--bands must be three 1-based band numbers such as 4,3,2; got {text!r}") from err
    return bands


@dataclass
class ScenePixels:
    """One window of a scene: ``rgb`` uint8 ``(3, h, w)`` (0 where nodata) and ``valid`` bool ``(h, w)``."""

    rgb: np.ndarray
    valid: np.ndarray


class Scene:
    """A raster opened for windowed reading. Use as a context manager (closes the dataset)."""

    def __init__(
        self,
        path: str | Path,
        *,
        bands: tuple[int, ...] | None = None,
        scale: float | None = None,
        stretch: tuple[float, float] | None = None,
        gsd: float | None = None,
    ):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"raster not found: {self.path}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self._source = rasterio.open(self.path)
        except RasterioIOError as err:
            raise ValueError(f"{self.path}: not a raster GDAL can read ({err})") from err
        self._vrt = None
        try:
            self._setup(bands, scale, stretch, gsd)
        except Exception:
            self.close()
            raise

    def _setup(self, bands, scale, stretch, gsd) -> None:
        src = self._source
        if src.width == 0 or src.height == 0 or src.count == 0:
            raise ValueError(f"{self.path}: empty raster ({src.width}x{src.height}, {src.count} bands)")
        if bands is None:
            bands = (1, 2, 3) if src.count >= 3 else (1, 1, 1)
        if len(bands) != 3:
            raise ValueError(f"{self.path}: --bands must name exactly 3 bands (the model reads RGB), got {bands}")
        bad = [b for b in bands if not 1 <= b <= src.count]
        if bad:
            raise ValueError(f"{self.path}: band {bad[0]} does not exist (the raster has bands 1..{src.count})")
        self.bands = tuple(int(b) for b in bands)
        dtypes = {src.dtypes[b - 1] for b in self.bands}
        if len(dtypes) != 1:
            raise ValueError(f"{self.path}: the chosen bands {self.bands} have different data types {sorted(dtypes)}")
        self.dtype = np.dtype(dtypes.pop())
        self.crs = src.crs
        if self.crs is None:
            log.warning("%s has no CRS: outputs and vectors are in pixel coordinates (x = column, y = row)", self.path)
        self.dataset = src
        if gsd is not None:
            if self.crs is None:
                raise ValueError(f"{self.path}: --gsd needs a raster with a CRS (its ground resolution is unknown)")
            if not gsd > 0:
                raise ValueError(f"--gsd must be positive, got {gsd}")
            from rasterio.vrt import WarpedVRT

            left, bottom, right, top = src.bounds
            width = max(1, int(round((right - left) / gsd)))
            height = max(1, int(round((top - bottom) / gsd)))
            transform = rasterio.transform.from_origin(left, top, gsd, gsd)
            self._vrt = WarpedVRT(
                src, crs=src.crs, transform=transform, width=width, height=height, resampling=Resampling.bilinear
            )
            self.dataset = self._vrt
        self.transform = self.dataset.transform
        self.width, self.height = self.dataset.width, self.dataset.height
        self.rule: ScaleRule = choose_rule(
            self.dtype, scale=scale, stretch=stretch, sample=self.sample, name=str(self.path)
        )

    # ---- reading ---------------------------------------------------------------------------------------------------
    @property
    def resolution(self) -> tuple[float, float]:
        return abs(self.transform.a), abs(self.transform.e)

    def _read(self, window: Window, out_shape=None) -> tuple[np.ndarray, np.ndarray]:
        """Raw values ``(3, h, w)`` and valid mask of a window; outside the raster is nodata (0, invalid)."""
        if out_shape is not None:  # a decimated read of the whole window (the stretch sample)
            kwargs = dict(window=window, out_shape=(3, *out_shape), resampling=Resampling.nearest)
            data, masks = self._read_raw(window, kwargs)
            return data, self._valid(data, masks)
        col, row, width, height = (int(v) for v in (window.col_off, window.row_off, window.width, window.height))
        c0, r0 = max(col, 0), max(row, 0)
        c1, r1 = min(col + width, self.width), min(row + height, self.height)
        data = np.zeros((3, height, width), self.dtype)
        valid = np.zeros((height, width), bool)
        if c1 > c0 and r1 > r0:
            inner = Window(c0, r0, c1 - c0, r1 - r0)
            part, masks = self._read_raw(inner, dict(window=inner))
            data[:, r0 - row : r1 - row, c0 - col : c1 - col] = part
            valid[r0 - row : r1 - row, c0 - col : c1 - col] = self._valid(part, masks)
        return data, valid

    def _read_raw(self, window: Window, kwargs: dict) -> tuple[np.ndarray, np.ndarray]:
        try:
            return self.dataset.read(self.bands, **kwargs), self.dataset.read_masks(self.bands, **kwargs)
        except rasterio.errors.RasterioError as err:
            raise ValueError(f"{self.path}: cannot read window {window}: {err}") from err

    @staticmethod
    def _valid(data: np.ndarray, masks: np.ndarray) -> np.ndarray:
        valid = np.any(masks > 0, axis=0)  # nodata only where every chosen band is masked
        if data.dtype.kind == "f":
            valid &= np.all(np.isfinite(data), axis=0)
        return valid

    def read(self, window: Window) -> ScenePixels:
        data, valid = self._read(window)
        rgb = self.rule.apply(data) if self.rule.kind != "identity" else data
        rgb = np.where(valid[None], rgb, 0).astype(np.uint8)
        return ScenePixels(rgb, valid)

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """A scene-wide sample for the percentile stretch: the smallest overview whose short side is still >=
        ``MIN_SAMPLE_SIDE``, or a decimated read with a long side of at most ``SAMPLE_SIDE`` pixels."""
        overviews = self.dataset.overviews(self.bands[0]) if self._vrt is None else []
        factor = None
        for level in sorted(overviews, reverse=True):
            if min(self.width, self.height) // level >= MIN_SAMPLE_SIDE:
                factor = level
                break
        if factor is None:
            factor = max(1, int(np.ceil(max(self.width, self.height) / SAMPLE_SIDE)))
        shape = (max(1, self.height // factor), max(1, self.width // factor))
        return self._read(Window(0, 0, self.width, self.height), out_shape=shape)

    # ---- lifecycle -------------------------------------------------------------------------------------------------
    def close(self) -> None:
        if self._vrt is not None:
            self._vrt.close()
        self._source.close()

    def __enter__(self) -> Scene:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
