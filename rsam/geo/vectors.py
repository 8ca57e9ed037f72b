"""Vector output (GeoPackage, GeoJSON, any OGR driver pyogrio picks from the file extension) in the raster's CRS."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import shapely

from rsam.geo.instances import Instance

log = logging.getLogger(__name__)

WRITE_BATCH = 1000  # features per pyogrio write
FIELDS = ["id", "prompt", "score", "area_px", "area", "px_x1", "px_y1", "px_x2", "px_y2", "obb_wkt"]


def _multi(geometry):
    if geometry.geom_type == "Polygon":
        return shapely.MultiPolygon([geometry])
    if geometry.geom_type == "MultiPolygon":
        return geometry
    polygons = [g for g in getattr(geometry, "geoms", []) if g.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.MultiPolygon([p for g in polygons for p in getattr(g, "geoms", [g])])


def write_instances(
    path: str | Path, instances: Iterable[Instance], crs, *, layer: str = "instances", batch: int = WRITE_BATCH
) -> Path:
    """One MultiPolygon feature per instance with ``FIELDS``; ``area`` in CRS units squared (pixels if no CRS).

    ``instances`` may be any iterable (e.g. :meth:`rsam.geo.instances.InstanceCollector.iter_instances`): features
    are written ``batch`` at a time (the first batch creates the layer, the next ones append), so the whole set is
    never held in memory. An invalid geometry stops the writing and removes the file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    options = dict(
        fields=FIELDS, crs=crs.to_wkt() if crs is not None else None, geometry_type="MultiPolygon", layer=layer
    )
    written = 0
    try:
        for chunk in _batches(instances, max(1, int(batch))):
            _write_batch(path, chunk, options, append=written > 0)
            written += len(chunk)
        if written == 0:
            _write_batch(path, [], options, append=False)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def _batches(items: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _write_batch(path: Path, instances: list[Instance], options: dict, *, append: bool) -> None:
    geoms = [_multi(i.geometry) for i in instances]
    bad = [i.id for i, g in zip(instances, geoms) if not g.is_valid]
    if bad:
        raise ValueError(f"{path}: invalid geometries for instances {bad[:5]}")
    columns = [
        np.asarray([i.id for i in instances], np.int64),
        np.asarray([i.prompt for i in instances], object),
        np.asarray([i.score for i in instances], np.float64),
        np.asarray([i.area_px for i in instances], np.int64),
        np.asarray([g.area for g in geoms], np.float64),
        *(np.asarray([i.bbox_px[k] for i in instances], np.int64) for k in range(4)),
        np.asarray([i.obb.wkt for i in instances], object),
    ]
    geometry = np.asarray(shapely.to_wkb(geoms), dtype=object) if geoms else np.asarray([], dtype=object)
    pyogrio.raw.write(str(path), geometry=geometry, field_data=columns, append=append, **options)


def dissolve(instances: list[Instance], prompts: list[str]) -> list[Instance]:
    """One feature per prompt: the union of its objects (score = area-weighted mean, area = total)."""
    out = []
    for prompt in prompts:
        mine = [i for i in instances if i.prompt == prompt]
        if not mine:
            continue
        geometry = shapely.union_all([i.geometry for i in mine])
        area = sum(i.area_px for i in mine)
        boxes = np.asarray([i.bbox_px for i in mine])
        out.append(
            Instance(
                id=len(out) + 1,
                prompt=prompt,
                score=float(sum(i.score * i.area_px for i in mine) / max(area, 1)),
                area_px=int(area),
                bbox_px=(
                    int(boxes[:, 0].min()),
                    int(boxes[:, 1].min()),
                    int(boxes[:, 2].max()),
                    int(boxes[:, 3].max()),
                ),
                geometry=geometry,
                obb=geometry.minimum_rotated_rectangle,
            )
        )
    return out
