"""Tiling, blending and instances of rsam.geo against independent references (a whole-scene computation of the same
stand-in 'model', cv2 components of the whole mask, analytic seam bounds). The stand-ins are deterministic functions
of the pixels, so these tests check the tiler, not the model."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import rasterio
from helpers.geo_data import write_raster

from rsam.geo.instances import InstanceCollector
from rsam.geo.pipeline import ModelTileRunner, SegmentOptions, segment_scene
from rsam.geo.raster import Scene
from rsam.geo.tiling import TileGrid, TileResult, blend_scene
from rsam.geo.writer import PROB_SCALE, UINT8_NODATA

RADIUS = 3  # the local stand-in model looks this many pixels around each pixel


def local_model(rgb: np.ndarray) -> np.ndarray:
    """A 'model' with context: a (2r+1)^2 box mean of the red band (zero padding), squashed into [0, 1]."""
    red = rgb[..., 0].astype(np.float64) / 255.0
    k = 2 * RADIUS + 1
    mean = cv2.boxFilter(red, -1, (k, k), normalize=True, borderType=cv2.BORDER_CONSTANT)
    return (mean[None] ** 2).astype(np.float32)


def _scene_pixels(seed=0, shape=(300, 410)):
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (3, shape[0] // 10 + 1, shape[1] // 10 + 1), dtype=np.uint8)
    return np.ascontiguousarray(coarse.repeat(10, 1).repeat(10, 2)[:, : shape[0], : shape[1]])


def _collect(width, height):
    out = np.full((1, height, width), np.nan, np.float32)
    seen = np.zeros((height, width), np.int32)

    def sink(window, probs, valid):
        r, c, h, w = int(window.row_off), int(window.col_off), int(window.height), int(window.width)
        out[:, r : r + h, c : c + w] = np.where(valid[None], probs, np.nan)
        seen[r : r + h, c : c + w] += 1

    return out, seen, sink


@pytest.mark.parametrize("block_tiles", [1, 3, 8])
def test_center_blend_equals_untiled_everywhere_and_windows_tile_the_scene(tmp_path, block_tiles):
    data = _scene_pixels()
    path = write_raster(tmp_path / "s.tif", data)
    reference = local_model(data.transpose(1, 2, 0))[0]
    with Scene(path) as scene:
        grid = TileGrid(scene.width, scene.height, 64, 2 * RADIUS + 2)
        out, seen, sink = _collect(scene.width, scene.height)
        stats = blend_scene(
            scene.width,
            scene.height,
            grid,
            ModelTileRunner(scene, local_model, 1),
            1,
            sink,
            blend="center",
            block_tiles=block_tiles,
        )
    assert (seen == 1).all()  # every pixel written exactly once
    assert stats.tiles == len(grid.xs) * len(grid.ys) and stats.runs >= stats.tiles
    # each pixel comes from the tile where it is >= overlap/2 > RADIUS from every edge: the core, which equals the
    # untiled result exactly (float32 rounding)
    np.testing.assert_allclose(out[0], reference, atol=1e-6)


def test_cosine_blend_equals_untiled_inside_single_tile_cores(tmp_path):
    data = _scene_pixels(1)
    path = write_raster(tmp_path / "s.tif", data)
    reference = local_model(data.transpose(1, 2, 0))[0]
    tile, overlap = 64, 20
    with Scene(path) as scene:
        grid = TileGrid(scene.width, scene.height, tile, overlap)
        out, _, sink = _collect(scene.width, scene.height)
        blend_scene(scene.width, scene.height, grid, ModelTileRunner(scene, local_model, 1), 1, sink, blend="cosine")
    # cores: pixels that exactly one tile covers, at >= RADIUS from that tile's edges
    cover = np.zeros(out.shape[1:], np.int32)
    deep = np.zeros(out.shape[1:], bool)
    for t in grid.tiles():
        cover[t.y : t.y + tile, t.x : t.x + tile] += 1
        deep[t.y + RADIUS : t.y + tile - RADIUS, t.x + RADIUS : t.x + tile - RADIUS] = True
    core = (cover == 1) & deep
    assert core.sum() > 0.2 * core.size
    np.testing.assert_allclose(out[0][core], reference[core], atol=1e-6)
    # outside the cores the blend stays close to the untiled result (boundary effects are damped by the ramps)
    assert np.abs(out[0] - reference).max() < 0.05


class PerTileConstant:
    """A stand-in whose output depends on where the tile is (like a real model's context effects): constant per tile."""

    def __init__(self, levels: dict):
        self.levels = levels

    def __call__(self, tiles):
        results = []
        for t in tiles:
            value = self.levels.setdefault((t.x, t.y), 0.3 + 0.4 * ((t.x * 7 + t.y * 13) % 5) / 4)
            results.append(TileResult(np.ones((t.size, t.size), bool), np.full((1, t.size, t.size), value, np.float32)))
        return results


@pytest.mark.parametrize("blend", ["cosine", "linear"])
def test_blended_seams_have_no_discontinuity_beyond_the_analytic_bound(blend):
    width, height, tile, overlap = 400, 290, 96, 32
    grid = TileGrid(width, height, tile, overlap)
    levels: dict = {}
    out, _, sink = _collect(width, height)
    blend_scene(width, height, grid, PerTileConstant(levels), 1, sink, blend=blend, block_tiles=2)
    jump = max(levels.values()) - min(levels.values())
    assert jump > 0.3
    # between two tiles the weights of a linear ramp sum to 1 over the overlap (cosine: sin^2 + cos^2), so the value
    # moves by at most jump / overlap per pixel (cosine: pi / 2 * jump / overlap); where the last tile is moved back
    # to the scene edge, three tiles overlap and the bound doubles
    bound = 2 * jump / overlap * (math.pi / 2 if blend == "cosine" else 1.0) + 1e-5
    steps = max(np.abs(np.diff(out[0], axis=0)).max(), np.abs(np.diff(out[0], axis=1)).max())
    assert steps <= bound, (steps, bound)
    # the same tiles without blending have a real jump at the seams: the check above could fail
    hard, _, hard_sink = _collect(width, height)
    blend_scene(width, height, grid, PerTileConstant(levels), 1, hard_sink, blend="center")
    assert np.abs(np.diff(hard[0], axis=1)).max() > 2 * bound


def test_nodata_is_skipped_and_written_as_nodata(tmp_path):
    data = _scene_pixels(2, (256, 320))
    data[:, :, 160:] = 0  # right half nodata: its tiles must not run
    data[:, 10:14, 20:30] = 0  # a small nodata hole inside valid tiles
    path = write_raster(tmp_path / "s.tif", data, nodata=0)
    with Scene(path) as scene:
        calls = []

        def fn(rgb):
            calls.append(rgb.shape)
            return np.full((1, *rgb.shape[:2]), 0.75, np.float32)

        runner = ModelTileRunner(scene, fn, 1)
        summary = segment_scene(scene, runner, ["x"], tmp_path / "o.tif", SegmentOptions(tile=64, overlap=0))
    assert summary["tiles"] == 20 and summary["empty_tiles"] == 8 and len(calls) == 12
    with rasterio.open(tmp_path / "o.tif") as out:
        values = out.read(1)
        assert out.nodata == UINT8_NODATA
    assert (values[:, 160:] == UINT8_NODATA).all()
    assert (values[10:14, 20:30] == UINT8_NODATA).all()
    valid = (data != 0).any(axis=0)  # nodata = the nodata value in every band; one band at 0 is data
    assert (values[valid] == round(0.75 * PROB_SCALE)).all()


def _blobs(height=300, width=420):
    mask = np.zeros((height, width), np.uint8)
    mask[40:200, 50:90] = 1  # tall bar crossing a row seam
    mask[150:170, 50:380] = 1  # joined to a long bar crossing several column seams: one L-shaped object
    mask[230:260, 100:130] = 1
    mask[260:290, 130:160] = 1  # touches the block above only diagonally: the same object under 8-connectivity
    mask[20:30, 300:310] = 1  # a small separate object
    return mask


def _crops_of(prob: np.ndarray):
    """A tile runner that returns ``prob``'s crop for each tile (zero past the scene edge), every pixel valid."""

    def runner(tiles):
        out = []
        for t in tiles:
            crop = np.zeros((1, t.size, t.size), np.float32)
            region = prob[t.y : t.y + t.size, t.x : t.x + t.size]
            crop[0, : region.shape[0], : region.shape[1]] = region
            out.append(TileResult(np.ones((t.size, t.size), bool), crop))
        return out

    return runner


@pytest.mark.parametrize("block_tiles", [1, 2])
def test_objects_across_seams_are_one_instance_each(block_tiles):
    mask = _blobs()
    height, width = mask.shape
    prob = np.where(mask > 0, 0.9, 0.1).astype(np.float32)

    runner = _crops_of(prob)

    collector = InstanceCollector(["thing"], width, height)
    blend_scene(width, height, TileGrid(width, height, 64, 16), runner, 1, collector, block_tiles=block_tiles)
    found = collector.instances(m2b=False)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)  # the whole-scene reference
    assert len(found) == count - 1 == 3
    assert sorted(i.area_px for i in found) == sorted(int(a) for a in stats[1:, cv2.CC_STAT_AREA])
    for inst in found:
        assert inst.geometry.is_valid
        assert inst.geometry.area == pytest.approx(inst.area_px)  # pixel-edge polygons in pixel coordinates
        assert inst.score == pytest.approx(0.9, abs=1e-5)
    boxes = sorted(i.bbox_px for i in found)
    reference = sorted((int(x), int(y), int(x + w), int(y + h)) for x, y, w, h, _ in stats[1:])
    assert boxes == reference


def test_scene_wide_inner_box_rule_equals_the_official_matrix():
    from rsam.geo.instances import inner_box_flags
    from rsam.tasks.m2b import Boxes, remove_inner_boxes

    rng = np.random.default_rng(11)
    xy = rng.integers(0, 200, (300, 2))
    wh = rng.integers(1, 60, (300, 2))
    coords = np.concatenate([xy, xy + wh], axis=1).astype(np.float64)
    coords[5] = coords[7]  # two equal boxes remove each other
    coords[9] = [coords[3][0] + 1, coords[3][1], coords[3][2] + 1, coords[3][3]]  # overshoots by one pixel
    flags = inner_box_flags(coords)
    kept = remove_inner_boxes(Boxes(coords, np.arange(len(coords), dtype=np.float64))).scores.astype(int)
    assert sorted(np.flatnonzero(~flags)) == sorted(kept) and flags.sum() > 20


def _dots(height: int, width: int) -> np.ndarray:
    """6x6 objects every 12 px, placed so that every window seam (rows 48k, block seams at 96k columns for 64 px
    tiles with 16 px overlap) cuts a row or column of them, plus one L-shaped object along the top and left edges
    that crosses every seam."""
    mask = np.zeros((height, width), np.uint8)
    for y in range(9, height - 8, 12):
        for x in range(9, width - 8, 12):
            mask[y : y + 6, x : x + 6] = 1
    mask[2, 2:] = 1
    mask[2:, 2] = 1
    return mask


def _watch_open_state(mask: np.ndarray, block_tiles: int, transform=None):
    """Feed ``mask`` (probability 0.9 / 0.1) window by window; after each window, the collector's counts and the
    independent ones from a seen-pixel map: components of the seen foreground, and those with a pixel next to an
    unseen pixel (8-connectivity), the only ones a window to come can still join."""
    height, width = mask.shape
    prob = np.where(mask > 0, 0.9, 0.1).astype(np.float32)

    runner = _crops_of(prob)

    collector = InstanceCollector(["dot"], width, height, transform)
    seen = np.zeros((height, width), np.uint8)
    trace = []

    def sink(window, probs, valid):
        collector(window, probs, valid)
        x, y, w, h = (int(v) for v in (window.col_off, window.row_off, window.width, window.height))
        seen[y : y + h, x : x + w] = 1
        count, labels = cv2.connectedComponents(mask & seen, connectivity=8)
        near_unseen = cv2.dilate(1 - seen, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
        touching = len(np.unique(labels[(near_unseen > 0) & (labels > 0)]))
        trace.append((collector.open_objects[0], touching, collector.finished[0], count - 1, collector.seam_windows))

    blend_scene(width, height, TileGrid(width, height, 64, 16), runner, 1, sink, block_tiles=block_tiles)
    return collector, trace


@pytest.mark.parametrize("block_tiles", [8, 2])
def test_open_state_is_bounded_by_the_seams_while_finished_objects_grow(block_tiles):
    short, tall = _dots(240, 336), _dots(960, 336)
    runs = {}
    for name, mask in (("short", short), ("tall", tall)):
        collector, trace = _watch_open_state(mask, block_tiles)
        for held, touching, finished, seen_objects, _ in trace:
            assert held == touching  # only objects on the open seam are held ...
            assert finished == seen_objects - touching  # ... every other object seen so far is finished
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        found = collector.instances(m2b=False)
        assert collector.open_objects == [0] and collector.open_pieces == [0] and collector.finished == [count - 1]
        assert sorted(i.bbox_px for i in found) == sorted((x, y, x + w, y + h) for x, y, w, h, _ in stats[1:].tolist())
        assert sorted(i.area_px for i in found) == sorted(stats[1:, cv2.CC_STAT_AREA].tolist())
        runs[name] = (max(t[0] for t in trace), max(t[4] for t in trace), count - 1)
    (held_short, seams_short, objects_short), (held_tall, seams_tall, objects_tall) = runs["short"], runs["tall"]
    assert objects_tall > 3.5 * objects_short
    if block_tiles == 8:  # one column block (336 px = 7 tile columns): the open seam is one row of windows
        assert held_tall == held_short < objects_short / 4 and seams_tall == seams_short
    else:  # several blocks: the block seam column stays open until the next block reaches it, so it grows with the
        # height (2 px wide: objects on it), but not with the objects finished elsewhere
        assert held_tall < objects_tall / 8 and seams_tall < 4 * seams_short


def test_vectors_written_in_batches_equal_one_write(tmp_path):
    import pyogrio
    import shapely
    from rasterio.crs import CRS

    from rsam.geo.vectors import write_instances

    transform = rasterio.transform.from_origin(500000, 4000000, 0.5, 0.5)
    collector, _ = _watch_open_state(_dots(200, 260), 2, transform)
    crs = CRS.from_epsg(32633)
    with collector:
        one = write_instances(
            tmp_path / "one.gpkg", collector.instances(m2b=False), crs
        )  # M2B: every dot is in the L's box
        many = write_instances(tmp_path / "many.gpkg", collector.iter_instances(m2b=False), crs, batch=7)
    (meta1, _, geom1, fields1), (meta2, _, geom2, fields2) = pyogrio.raw.read(one), pyogrio.raw.read(many)
    assert pyogrio.read_info(many)["crs"] == "EPSG:32633" and len(geom2) == len(geom1) > 7 * 5
    assert meta1["fields"].tolist() == meta2["fields"].tolist()
    for a, b in zip(fields1, fields2):
        np.testing.assert_array_equal(a, b)
    assert np.array_equal(fields2[0], np.arange(1, len(geom2) + 1))  # ids 1..N across the batches
    assert all(shapely.from_wkb(a).equals_exact(shapely.from_wkb(b), 0) for a, b in zip(geom1, geom2))
