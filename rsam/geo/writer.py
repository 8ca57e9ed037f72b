"""GeoTIFF output written window by window, with the input's transform, CRS and a nodata value.

Values (``kind``):

* ``uint8`` (default): one band per prompt, probability ``round(p * 254)`` in 0..254, nodata 255;
* ``float32``: one band per prompt, probability in [0, 1], nodata NaN;
* ``classes``: one uint8 band, 0 = background, ``k + 1`` = prompt k by the official merge (each prompt's argmax mask,
  a higher prompt index wins on overlap: ``rsam.tasks.semseg``), nodata 255.

Windows go into an uncompressed tiled scratch file next to the output (in-place block updates, bounded GDAL cache);
:meth:`GeoTiffWriter.close` then copies it block by block into the final tiled, DEFLATE-compressed GeoTIFF (or a
Cloud-Optimized GeoTIFF with overviews, ``cog=True``) under a temporary name and renames it: an output file that
exists is complete.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from rsam.tasks.maps import probs_to_masks
from rsam.tasks.semseg import merge_class_masks

log = logging.getLogger(__name__)

KINDS = ("uint8", "float32", "classes")
UINT8_NODATA = 255
PROB_SCALE = 254
GDAL_CACHE_MB = 64
BLOCK = 256


def encode(probs: np.ndarray, valid: np.ndarray, kind: str) -> np.ndarray:
    """Blended probabilities ``(P, h, w)`` -> the band values written for ``kind``."""
    if kind == "uint8":
        out = np.rint(np.clip(probs, 0.0, 1.0) * PROB_SCALE).astype(np.uint8)
        out[:, ~valid] = UINT8_NODATA
        return out
    if kind == "float32":
        out = probs.astype(np.float32, copy=True)
        out[:, ~valid] = np.nan
        return out
    if kind == "classes":
        labels = merge_class_masks(probs_to_masks(probs)).astype(np.uint8)
        labels[~valid] = UINT8_NODATA
        return labels[None]
    raise ValueError(f"output kind must be one of {KINDS}, got {kind!r}")


def decode(values: np.ndarray, kind: str) -> np.ndarray:
    """Inverse of :func:`encode` for probabilities (NaN where nodata)."""
    if kind == "uint8":
        return np.where(values == UINT8_NODATA, np.nan, values.astype(np.float32) / PROB_SCALE)
    if kind == "float32":
        return values.astype(np.float32)
    raise ValueError(f"cannot decode {kind!r} to probabilities")


def gdal_env():
    """A rasterio environment with a small GDAL block cache (memory stays flat on huge outputs)."""
    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 1024 * 1024, GDAL_NUM_THREADS="1")


class GeoTiffWriter:
    def __init__(
        self,
        path: str | Path,
        *,
        width: int,
        height: int,
        transform,
        crs,
        prompts: list[str],
        kind: str = "uint8",
        cog: bool = False,
    ):
        if kind not in KINDS:
            raise ValueError(f"output kind must be one of {KINDS}, got {kind!r}")
        if kind == "classes" and len(prompts) > 254:
            raise ValueError("--classes supports at most 254 prompts (uint8 labels, 255 = nodata)")
        self.path, self.kind, self.cog, self.prompts = Path(path), kind, cog, list(prompts)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.scratch = self.path.with_name(self.path.name + ".scratch.tif")
        count = 1 if kind == "classes" else len(prompts)
        self.profile = dict(
            driver="GTiff",
            width=width,
            height=height,
            count=count,
            dtype="float32" if kind == "float32" else "uint8",
            crs=crs,
            transform=transform,
            nodata=np.nan if kind == "float32" else UINT8_NODATA,
            tiled=True,
            blockxsize=BLOCK,
            blockysize=BLOCK,
            BIGTIFF="IF_SAFER",
        )
        self._env = gdal_env()
        self._env.__enter__()
        self._dataset = rasterio.open(self.scratch, "w", **self.profile)

    def write(self, window: Window, probs: np.ndarray, valid: np.ndarray) -> None:
        self._dataset.write(encode(probs, valid, self.kind), window=window)

    def _describe(self, dataset) -> None:
        if self.kind == "classes":
            dataset.set_band_description(1, "class map: 0 background, k+1 = prompt k")
            dataset.update_tags(1, **{f"class_{k + 1}": text for k, text in enumerate(self.prompts)})
        else:
            for band, text in enumerate(self.prompts, start=1):
                dataset.set_band_description(band, text)
        dataset.update_tags(rsam_kind=self.kind, rsam_prob_scale=str(PROB_SCALE if self.kind == "uint8" else 1))

    def close(self) -> Path:
        """Finish the output (compressed copy, optional COG) and remove the scratch file."""
        self._describe(self._dataset)
        self._dataset.close()
        partial = self.path.with_name(self.path.name + ".partial")
        options = dict(COMPRESS="DEFLATE", BIGTIFF="IF_SAFER", NUM_THREADS="1")
        if self.cog:
            options.update(driver="COG", BLOCKSIZE=str(2 * BLOCK), OVERVIEWS="AUTO", RESAMPLING="NEAREST")
        else:
            options.update(driver="GTiff", TILED="YES", BLOCKXSIZE=str(BLOCK), BLOCKYSIZE=str(BLOCK))
            if self.kind != "float32":
                options["PREDICTOR"] = "2"
        rasterio.shutil.copy(self.scratch, partial, **options)
        os.replace(partial, self.path)
        self.scratch.unlink(missing_ok=True)
        self._env.__exit__(None, None, None)
        return self.path

    def abort(self) -> None:
        if not self._dataset.closed:
            self._dataset.close()
        self.scratch.unlink(missing_ok=True)
        self._env.__exit__(None, None, None)
