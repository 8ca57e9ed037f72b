"""Windowed detection / grounding on a GeoTIFF against the in-memory official implementations (``detect_tiled``,
``grounding_box``) on the same pixels, with a deterministic stand-in 'model'."""

from __future__ import annotations

import json

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import shapely
from helpers.geo_data import write_raster

from rsam.geo.detection import detect_scene, write_detections
from rsam.geo.instances import InstanceCollector
from rsam.geo.pipeline import ModelTileRunner
from rsam.geo.raster import Scene
from rsam.geo.tiling import TileGrid, blend_scene
from rsam.tasks.grounding import grounding_box
from rsam.tasks.tiling import detect_tiled


def bright(rgb):
    """Two 'classes': bright red, bright green."""
    return np.stack([rgb[..., 0] / 255.0, rgb[..., 1] / 255.0]).astype(np.float32)


def _scene(tmp_path):
    data = np.full((3, 300, 380), 20, np.uint8)
    rng = np.random.default_rng(7)
    for _ in range(25):
        y, x = rng.integers(0, 280), rng.integers(0, 360)
        h, w = rng.integers(5, 30, 2)
        data[rng.integers(0, 2), y : y + h, x : x + w] = 240
    return data, write_raster(tmp_path / "d.tif", data, crs="EPSG:32631", res=0.3, origin=(600000, 5000000))


def test_windowed_detection_equals_the_in_memory_official_tiling(tmp_path):
    data, path = _scene(tmp_path)
    rgb = np.ascontiguousarray(data.transpose(1, 2, 0))
    for box_type in ("hbb", "obb"):
        reference = detect_tiled(rgb, ["red", "green"], ["r", "g"], lambda im, _: bright(im), patch=128, overlap=32,
                                 box_type=box_type)  # fmt: skip
        with Scene(path) as scene:
            found, stats = detect_scene(scene, bright, ["red", "green"], patch=128, overlap=32, box_type=box_type)
        assert stats["patches"] == 12
        for name in ("red", "green"):
            assert len(found[name]) == len(reference[name]) > 3
            np.testing.assert_array_equal(found[name].coords, reference[name].coords)
            np.testing.assert_allclose(found[name].scores, reference[name].scores, rtol=1e-6)
    with Scene(path) as scene:
        out = write_detections(tmp_path / "d.geojson", "geojson", found, scene)
        transform = scene.transform
    assert pyogrio.read_info(out)["crs"] == "EPSG:32631"
    meta, _, geometry, fields = pyogrio.raw.read(out)
    corners = [[float(v) for v in c.split()] for c in dict(zip(meta["fields"], fields))["pixel_corners"]]
    for geom, pixel in zip(shapely.from_wkb(geometry), corners):
        expected = [transform * (pixel[k], pixel[k + 1]) for k in range(0, 8, 2)]
        np.testing.assert_allclose(np.asarray(geom.exterior.coords[:-1]), expected, atol=1e-6)


def test_grounding_union_box_equals_the_official_rule_on_the_whole_scene(tmp_path):
    data, path = _scene(tmp_path)
    whole = bright(np.ascontiguousarray(data.transpose(1, 2, 0)))
    with Scene(path) as scene:
        collector = InstanceCollector(["red", "green"], scene.width, scene.height, scene.transform)
        runner = ModelTileRunner(scene, bright, 2)
        blend_scene(scene.width, scene.height, TileGrid(scene.width, scene.height, 96, 24), runner, 2, collector)
    objects = collector.instances(m2b=False)
    for index, name in enumerate(["red", "green"]):
        boxes = [o.bbox_px for o in objects if o.prompt == name]
        union = [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]
        np.testing.assert_array_equal(union, grounding_box(whole[index]))


def test_detect_count_ground_cli_with_the_real_tiny_model(tmp_path, capsys):
    from helpers.benchmark_loop import save_tiny_model

    from rsam.cli.main import main

    model = save_tiny_model(tmp_path / "model")
    _, path = _scene(tmp_path)
    common = [str(path), "--model", str(model), "--prompt", "red roof", "--tile", "128", "--overlap", "32"]
    assert main(["detect", *common, "--format", "coco", "-o", str(tmp_path / "d.json")]) == 0
    detected = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    coco = json.loads((tmp_path / "d.json").read_text())
    assert len(coco["annotations"]) == detected["boxes"]["red roof"] and coco["images"][0]["width"] == 380
    assert main(["detect", *common, "--obb", "--format", "dota", "-o", str(tmp_path / "dota")]) == 0
    lines = (tmp_path / "dota" / "Task1_red-roof.txt").read_text().splitlines()
    assert all(len(line.split()) == 10 and line.startswith("d ") for line in lines)
    capsys.readouterr()
    assert main(["count", *common]) == 0
    counted = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert counted["counts"]["red roof"] == detected["boxes"]["red roof"]
    assert main(["ground", str(path), "--model", str(model), "--prompt", "red roof", "--tile", "64"]) == 0
    grounded = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert grounded["crs"] == "EPSG:32631"
    if grounded["box_px"] is not None:
        x1, y1, x2, y2 = grounded["box_px"]
        expected = [600000 + 0.3 * x1, 5000000 - 0.3 * y2, 600000 + 0.3 * x2, 5000000 - 0.3 * y1]
        assert grounded["box_map"] == pytest.approx(expected)
