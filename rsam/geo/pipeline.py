"""One scene in, a georeferenced probability / class GeoTIFF and optional vectors out (``rsam segment``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from rsam.geo.instances import InstanceCollector
from rsam.geo.raster import Scene
from rsam.geo.tiling import TileGrid, TileResult, blend_scene
from rsam.geo.vectors import dissolve, write_instances
from rsam.geo.writer import GeoTiffWriter
from rsam.tasks.maps import as_prob_stack, resize_nearest

log = logging.getLogger(__name__)

TileFn = Callable[[np.ndarray], np.ndarray]  # uint8 (h, w, 3) tile -> (P, h', w') probabilities


@dataclass
class SegmentOptions:
    tile: int
    overlap: int
    blend: str = "cosine"
    kind: str = "uint8"
    cog: bool = False
    block_tiles: int = 8


def predictor_tile_fn(predictor, prompts: Sequence[str]) -> TileFn:
    """A tile function on :class:`rsam.predict.Predictor`'s public API (official resize + post-processing)."""
    prompts = list(prompts)

    def run(rgb: np.ndarray) -> np.ndarray:
        return np.stack([p.prob for p in predictor.predict(rgb, prompts)])

    return run


class Counted:
    """An iterable that counts the items it hands out."""

    def __init__(self, items):
        self.items, self.count = items, 0

    def __iter__(self):
        for item in self.items:
            self.count += 1
            yield item


class ModelTileRunner:
    """Reads each tile's window from the scene and runs ``fn`` on it; tiles without valid pixels are not run."""

    def __init__(self, scene: Scene, fn: TileFn, maps: int):
        self.scene, self.fn, self.maps = scene, fn, maps
        self.calls = 0

    def __call__(self, tiles) -> list[TileResult]:
        results = []
        for tile in tiles:
            pixels = self.scene.read(tile.window)
            if not pixels.valid.any():
                results.append(TileResult(pixels.valid, None))
                continue
            probs = as_prob_stack(self.fn(np.ascontiguousarray(pixels.rgb.transpose(1, 2, 0))), name="tile maps")
            if probs.shape[0] != self.maps:
                raise ValueError(f"the tile function returned {probs.shape[0]} maps for {self.maps} prompts")
            self.calls += 1
            results.append(TileResult(pixels.valid, resize_nearest(probs, (tile.size, tile.size))))
        return results


def segment_scene(
    scene: Scene,
    run_tiles,
    prompts: Sequence[str],
    out: str | Path,
    options: SegmentOptions,
    *,
    vectors: str | Path | None = None,
    instances: bool = False,
) -> dict:
    """Tile, blend and write ``out``; with ``vectors``, also the objects (``instances``) or one dissolved feature per
    prompt. Returns a summary dict."""
    prompts = list(prompts)
    start = time.perf_counter()
    grid = TileGrid(scene.width, scene.height, options.tile, options.overlap)
    writer = GeoTiffWriter(
        out,
        width=scene.width,
        height=scene.height,
        transform=scene.transform,
        crs=scene.crs,
        prompts=prompts,
        kind=options.kind,
        cog=options.cog,
    )
    collector = None
    if vectors:  # its temporary files (finished objects) next to the vectors
        Path(vectors).parent.mkdir(parents=True, exist_ok=True)
        collector = InstanceCollector(prompts, scene.width, scene.height, scene.transform, Path(vectors).parent)

    def sink(window, probs, valid):
        writer.write(window, probs, valid)
        if collector is not None:
            collector(window, probs, valid)

    try:
        with tqdm(total=len(grid), desc=f"tiles {scene.path.name}", unit="tile", disable=None) as bar:
            stats = blend_scene(
                scene.width,
                scene.height,
                grid,
                run_tiles,
                len(prompts),
                sink,
                blend=options.blend,
                block_tiles=options.block_tiles,
                progress=bar,
            )
    except BaseException:
        writer.abort()
        if collector is not None:
            collector.close()
        raise
    writer.close()
    summary = {
        "scene": str(scene.path),
        "out": str(out),
        "size": [scene.width, scene.height],
        "crs": scene.crs.to_string() if scene.crs else None,
        "gsd": list(scene.resolution),
        "scaling": scene.rule.describe(),
        "bands": list(scene.bands),
        "tiles": stats.tiles,
        "tile_runs": stats.runs,
        "empty_tiles": stats.empty,
    }
    if collector is not None:
        with collector:  # instances stream from the collector's files to the vectors; dissolving needs them all
            objects = collector.iter_instances(m2b=instances)
            features = Counted(objects if instances else dissolve(list(objects), prompts))
            write_instances(vectors, features, scene.crs)
        log.info("%s: %d objects, at most %d held open", scene.path.name, features.count, collector.most_open)
        summary.update(vectors=str(vectors), features=features.count)
    summary["seconds"] = round(time.perf_counter() - start, 2)
    return summary
