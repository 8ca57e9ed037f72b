"""Real GeoTIFFs from registry packages, fetched once into the data cache (like the demo data), and small generated
rasters. A test skips with the reason only when the registry cannot be reached."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from rsam.data.demo import PINS, WHEELS, repo_data_dir

STARS_DEB = "r-cran-stars_0.6-0-4_all.deb"
STARS_VERSION = "r-cran-stars=0.6-0-4"
STARS_SHA256 = "a273913b84ce428c8a6f5eb3538776c8bcefb5756d473f0c4c2fd2a914e98a53"


def _cache() -> Path:
    path = repo_data_dir() / "geo"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def neon_tile() -> Path:
    """deepforest 2.1.0's NEON OSBS_029.tif (400x400 RGB, 10 cm, EPSG:32617, nodata 255), from the demo's pinned
    wheel (downloaded with pip into the wheel cache if missing)."""
    target = _cache() / "OSBS_029.tif"
    if target.is_file():
        return target
    name, digest = WHEELS["deepforest"]
    wheel = repo_data_dir() / "wheels" / name
    if not wheel.is_file():
        wheel.parent.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", PINS["deepforest"]]
            + ["-d", str(wheel.parent)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode != 0 or not wheel.is_file():
            pytest.skip(f"cannot download {PINS['deepforest']} from PyPI: {result.stderr.strip()[-300:]}")
    if _sha256(wheel) != digest:
        raise AssertionError(f"{wheel}: sha256 differs from the pinned {digest}")
    with zipfile.ZipFile(wheel) as archive:
        data = archive.read("deepforest/data/OSBS_029.tif")
    partial = target.with_suffix(".partial")
    partial.write_bytes(data)
    partial.replace(target)
    return target


def _deb_member(deb: Path, member: str) -> bytes:
    """One file from a .deb (an ar archive holding data.tar.*), without dpkg."""
    blob = deb.read_bytes()
    assert blob[:8] == b"!<arch>\n", f"{deb} is not a .deb"
    offset = 8
    while offset < len(blob):
        header = blob[offset : offset + 60]
        name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58].decode().strip())
        body = blob[offset + 60 : offset + 60 + size]
        if name.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(body)) as tar:
                return tar.extractfile(tar.getmember(member)).read()
        offset += 60 + size + (size % 2)
    raise AssertionError(f"{deb}: no data.tar member")


def landsat_tile() -> Path:
    """Debian r-cran-stars 0.6-0-4's L7_ETMs.tif: Landsat 7 ETM+, 6 bands uint8, 349x352, 28.5 m, EPSG:31985."""
    target = _cache() / "L7_ETMs.tif"
    if target.is_file():
        return target
    deb = _cache() / STARS_DEB
    if not deb.is_file():
        command = ["apt-get", "download", STARS_VERSION]
        result = subprocess.run(command, cwd=deb.parent, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=600)
            result = subprocess.run(command, cwd=deb.parent, capture_output=True, text=True, timeout=600)
        if result.returncode != 0 or not deb.is_file():
            pytest.skip(f"cannot download {STARS_VERSION} from Debian: {result.stderr.strip()[-300:]}")
    if _sha256(deb) != STARS_SHA256:
        raise AssertionError(f"{deb}: sha256 differs from the pinned {STARS_SHA256}")
    data = _deb_member(deb, "./usr/lib/R/site-library/stars/tif/L7_ETMs.tif")
    partial = target.with_suffix(".partial")
    partial.write_bytes(data)
    partial.replace(target)
    return target


def write_raster(path: Path, data: np.ndarray, *, crs="EPSG:32633", res=0.5, nodata=None, origin=(500000, 4000000)):
    """A band-first array as a GeoTIFF (tiled) with a north-up transform."""
    count, height, width = data.shape
    profile = dict(
        driver="GTiff",
        width=width,
        height=height,
        count=count,
        dtype=data.dtype,
        crs=crs,
        transform=from_origin(origin[0], origin[1], res, res),
        nodata=nodata,
        tiled=True,
        blockxsize=64,
        blockysize=64,
    )
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(data)
    return path
