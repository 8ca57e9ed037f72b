"""Tiled prediction over a scene with blended seams, in bounded memory.

Grid: tile origins along each axis follow the DOTA devkit rule (``rsam.tasks.tiling.patch_origins``): step
``tile - overlap``, the last tile moved back to end at the scene edge. A scene smaller than a tile gets one tile
padded with nodata.

Blending (per pixel, over every tile that covers it): ``sum(w_t * p_t) / sum(w_t)`` with separable weights
``w(u) * w(v)`` of the in-tile coordinates. ``linear``: ``r(u) = min(1, (u + 0.5) / overlap, (tile - u - 0.5) /
overlap)``; ``cosine``: ``sin(pi / 2 * r(u)) ** 2``; both are > 0 everywhere, and a tile edge on the scene border
does not ramp (weight 1 up to the border), so pixels only one tile covers keep that tile's value. ``center``: no
averaging; each pixel takes the value of the covering tile in which it lies farthest from the tile edges, per axis
(score = product of the distances to the nearest edge along x and along y, so the row and the column of tiles are
chosen independently; ties: the tile run first), i.e. every pixel comes from a tile core.

Memory: the scene is processed in column blocks of ``block_tiles`` tile columns; inside a block, tile rows run top to
bottom into a rolling buffer of one tile height by the block's width; rows no later tile can touch are emitted as
final, in pieces at most ``SINK_COLUMNS`` wide. The tile column that straddles two blocks is run for both (overhead
``~1 / block_tiles``), so nothing held in memory grows with the scene's width or height beyond one block.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from rsam.tasks.tiling import patch_origins

log = logging.getLogger(__name__)

BLEND_MODES = ("cosine", "linear", "center")
SINK_COLUMNS = 1024  # final windows are handed to the sinks at most this wide


@dataclass(frozen=True)
class Tile:
    row: int
    col: int
    x: int
    y: int
    size: int

    @property
    def window(self) -> Window:
        return Window(self.x, self.y, self.size, self.size)

    @property
    def key(self) -> str:
        return f"r{self.row:05d}_c{self.col:05d}"


@dataclass
class TileResult:
    """``probs``: float32 ``(P, size, size)``, or None when the tile has no valid pixel (not run);
    ``valid``: bool ``(size, size)``."""

    valid: np.ndarray
    probs: np.ndarray | None


TileRunner = Callable[[Sequence[Tile]], list[TileResult]]


class TileGrid:
    def __init__(self, width: int, height: int, tile: int, overlap: int):
        if tile < 1:
            raise ValueError(f"--tile must be >= 1, got {tile}")
        if not 0 <= overlap < tile:
            raise ValueError(f"--overlap must be in [0, tile), got overlap={overlap}, tile={tile}")
        self.width, self.height, self.tile, self.overlap = int(width), int(height), int(tile), int(overlap)
        self.xs = patch_origins(self.width, self.tile, self.overlap)
        self.ys = patch_origins(self.height, self.tile, self.overlap)

    def __len__(self) -> int:
        return len(self.xs) * len(self.ys)

    def tiles(self) -> list[Tile]:
        """Every tile, row-major."""
        return [Tile(r, c, x, y, self.tile) for r, y in enumerate(self.ys) for c, x in enumerate(self.xs)]

    def column_blocks(self, block_tiles: int) -> list[tuple[int, int, list[int]]]:
        """``(x0, x1, tile columns)`` of each column block: output columns ``[x0, x1)`` and every tile column that
        covers any of them."""
        block_tiles = max(1, int(block_tiles))
        starts = [self.xs[i] for i in range(0, len(self.xs), block_tiles)]
        bounds = [0, *starts[1:], self.width]
        blocks = []
        for x0, x1 in zip(bounds[:-1], bounds[1:]):
            cols = [c for c, x in enumerate(self.xs) if x < x1 and x + self.tile > x0]
            blocks.append((x0, x1, cols))
        return blocks


def axis_weights(tile: int, overlap: int, mode: str, ramp_start: bool = True, ramp_end: bool = True) -> np.ndarray:
    """1-D blending weights (float64, > 0) of a tile of ``tile`` pixels; for ``center``, the distance score.

    ``ramp_start`` / ``ramp_end``: False where that tile edge lies on the scene border (no neighbour to blend with):
    the weight stays 1 (``center``: the distance counts as infinite) up to the border."""
    u = np.arange(tile, dtype=np.float64)
    big = np.float64(10 * tile)
    start = u + 0.5 if ramp_start else np.full(tile, big)
    end = tile - u - 0.5 if ramp_end else np.full(tile, big)
    if mode == "center":
        return np.minimum(start, end)
    if mode not in BLEND_MODES:
        raise ValueError(f"blend must be one of {BLEND_MODES}, got {mode!r}")
    if overlap == 0:
        return np.ones(tile)
    ramp = np.minimum(1.0, np.minimum(start / overlap, end / overlap))
    return ramp if mode == "linear" else np.sin(0.5 * math.pi * ramp) ** 2


def tile_weights(tile: int, overlap: int, mode: str, edges: tuple[bool, bool, bool, bool] = (True,) * 4) -> np.ndarray:
    """2-D weights ``w(v) * w(u)``; ``edges`` = (top, bottom, left, right) ramps, False on the scene border."""
    wy = axis_weights(tile, overlap, mode, edges[0], edges[1])
    wx = axis_weights(tile, overlap, mode, edges[2], edges[3])
    return (wy[:, None] * wx[None, :]).astype(np.float32)


class _Buffer:
    """Rolling accumulator for one column block: rows ``[top, top + rows)``, columns ``[bx0, bx0 + width)``."""

    def __init__(self, maps: int, rows: int, bx0: int, width: int, mode: str):
        self.mode, self.top, self.bx0 = mode, 0, bx0
        self.acc = np.zeros((maps, rows, width), np.float32)
        self.weight = np.zeros((rows, width), np.float32)  # weight sum, or best centre score
        if mode == "center":
            self.weight.fill(-1.0)
        self.valid = np.zeros((rows, width), bool)

    def add(self, tile: Tile, result: TileResult, weights: np.ndarray, height: int, width: int) -> None:
        r0, c0 = tile.y - self.top, tile.x - self.bx0
        h = min(tile.size, height - tile.y)
        w = min(tile.size, width - tile.x)
        valid = result.valid[:h, :w]
        self.valid[r0 : r0 + h, c0 : c0 + w] |= valid
        if result.probs is None:
            return
        probs = result.probs[:, :h, :w].astype(np.float32, copy=False)
        tw = np.where(valid, weights[:h, :w], 0.0).astype(np.float32)
        region = (slice(None), slice(r0, r0 + h), slice(c0, c0 + w))
        if self.mode == "center":
            better = tw > self.weight[region[1:]]
            self.acc[region] = np.where(better[None], probs, self.acc[region])
            self.weight[region[1:]] = np.where(better, tw, self.weight[region[1:]])
        else:
            self.acc[region] += probs * tw[None]
            self.weight[region[1:]] += tw

    def take(self, rows: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
        """Final values of the first ``rows`` rows, columns ``[c0, c1)`` (scene coordinates); then drop them."""
        a, b = c0 - self.bx0, c1 - self.bx0
        valid = self.valid[:rows, a:b].copy()
        if self.mode == "center":
            probs = self.acc[:, :rows, a:b].copy()
        else:
            weight = self.weight[:rows, a:b]
            probs = self.acc[:, :rows, a:b] / np.maximum(weight, np.float32(1e-12))[None]
        valid &= self.weight[:rows, a:b] > (0 if self.mode != "center" else -1)
        probs = np.where(valid[None], probs, 0.0).astype(np.float32)
        for array, fill in ((self.acc, 0.0), (self.weight, -1.0 if self.mode == "center" else 0.0), (self.valid, 0)):
            array[..., : array.shape[-2] - rows, :] = array[..., rows:, :]
            array[..., array.shape[-2] - rows :, :] = fill
        self.top += rows
        return probs, valid


@dataclass
class BlendStats:
    tiles: int = 0  # tiles in the grid
    runs: int = 0  # tile runs (a tile straddling two column blocks runs twice)
    empty: int = 0  # tile runs skipped: no valid pixel


def blend_scene(
    width: int,
    height: int,
    grid: TileGrid,
    run_tiles: TileRunner,
    maps: int,
    sink: Callable[[Window, np.ndarray, np.ndarray], None],
    *,
    blend: str = "cosine",
    block_tiles: int = 8,
    progress=None,
) -> BlendStats:
    """Run every tile through ``run_tiles`` and call ``sink(window, probs (maps, h, w), valid (h, w))`` with the
    final blended values, window after window (column block by column block, top to bottom). Windows tile the scene
    exactly once."""
    cache: dict[tuple[bool, bool, bool, bool], np.ndarray] = {}

    def weights_of(t: Tile) -> np.ndarray:
        edges = (t.y > 0, t.y + t.size < height, t.x > 0, t.x + t.size < width)
        if edges not in cache:
            cache[edges] = tile_weights(grid.tile, grid.overlap, blend, edges)
        return cache[edges]

    stats = BlendStats(tiles=len(grid))
    for x0, x1, cols in grid.column_blocks(block_tiles):
        bx0 = grid.xs[cols[0]]
        bwidth = min(grid.xs[cols[-1]] + grid.tile, width) - bx0
        buffer = _Buffer(maps, grid.tile, bx0, bwidth, blend)  # a tile row always starts at the buffer's top
        for r, y in enumerate(grid.ys):
            tiles = [Tile(r, c, grid.xs[c], y, grid.tile) for c in cols]
            results = run_tiles(tiles)
            for tile, result in zip(tiles, results):
                buffer.add(tile, result, weights_of(tile), height, width)
                stats.runs += 1
                stats.empty += result.probs is None
            if progress is not None:
                progress.update(len(tiles))
            final = grid.ys[r + 1] if r + 1 < len(grid.ys) else height
            rows = final - buffer.top
            if rows > 0:
                probs, valid = buffer.take(rows, x0, x1)
                top = buffer.top - rows
                for c in range(0, x1 - x0, SINK_COLUMNS):  # bounded pieces: the sinks' temporaries stay small
                    c1 = min(c + SINK_COLUMNS, x1 - x0)
                    sink(Window(x0 + c, top, c1 - c, rows), probs[:, :, c:c1], valid[:, c:c1])
    return stats
