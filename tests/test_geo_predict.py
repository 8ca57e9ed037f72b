"""Multi-device GeoTIFF predict: 2 processes (the real CLI, DDP on CPU) write every tile exactly once, the assembled
scene equals the single-process result, and a re-run resumes (finished scenes skipped, missing tiles only)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from helpers.benchmark_loop import save_tiny_model, tiny_model
from helpers.geo_data import write_raster
from helpers.lit_runs import rsam_cli

from rsam.cli.main import main
from rsam.geo.pipeline import ModelTileRunner, SegmentOptions, predictor_tile_fn, segment_scene
from rsam.geo.raster import Scene
from rsam.geo.tiling import TileGrid
from rsam.predict import Predictor

ARGS = ["--prompt", "red roofs", "--tile", "64", "--overlap", "16", "--instances"]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    model = save_tiny_model(root / "model")
    data = np.random.default_rng(0).integers(1, 255, (3, 150, 140)).astype(np.uint8)
    data[:, :, 118:] = 0  # nodata strip
    scene = write_raster(root / "scene.tif", data, nodata=0)
    out = root / "out" / "scene.tif"
    result, summary = rsam_cli(
        "segment", str(scene), "--model", str(model), *ARGS, "-o", str(out), "--vectors", str(root / "out" / "s.gpkg"),
        "--devices", "2", "--keep-parts", timeout=400,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return root, model, scene, out, summary


def test_two_processes_write_every_tile_exactly_once(two_process_run):
    root, _, scene, out, summary = two_process_run
    assert summary["world_size"] == 2 and summary["tiles_predicted"] == 9
    parts = out.with_name(out.name + ".parts")
    written = {}
    for rank in (0, 1):
        lines = (parts / f"written.rank{rank}.jsonl").read_text().splitlines()
        written[rank] = [json.loads(line)["tile"] for line in lines]
        assert written[rank], f"rank {rank} wrote nothing"
    every = written[0] + written[1]
    with rasterio.open(scene) as src:
        expected = {t.key for t in TileGrid(src.width, src.height, 64, 16).tiles()}
    assert len(every) == len(set(every)) == len(expected) and set(every) == expected
    assert sorted(p.stem for p in parts.glob("*.npz")) == sorted(expected)


def test_assembled_scene_equals_the_single_process_result(two_process_run, tmp_path):
    _, _, scene, out, _ = two_process_run
    with Scene(scene) as s:
        fn = predictor_tile_fn(Predictor(tiny_model()), ["red roofs"])
        segment_scene(s, ModelTileRunner(s, fn, 1), ["red roofs"], tmp_path / "single.tif", SegmentOptions(64, 16))
    with rasterio.open(out) as a, rasterio.open(tmp_path / "single.tif") as b:
        assert a.transform == b.transform and a.crs == b.crs
        x, y = a.read(1).astype(int), b.read(1).astype(int)
    assert ((x == 255) == (y == 255)).all() and (x[:, 118:] == 255).all()
    assert np.abs(x - y).max() <= 1  # parts hold float16 probabilities: at most one uint8 level apart


def test_rerun_skips_finished_scenes_and_resumes_missing_tiles(two_process_run, capsys):
    root, model, scene, out, _ = two_process_run
    before = rasterio.open(out).read()
    base = ["segment", str(scene), "--model", str(model), *ARGS, "-o", str(out), "--devices", "1", "--keep-parts"]
    assert main(base) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"tiles_predicted": 0, "scenes": []}
    parts = out.with_name(out.name + ".parts")
    removed = sorted(parts.glob("*.npz"))[:3]
    for path in removed:
        path.unlink()
    out.unlink()
    assert main(base) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["tiles_predicted"] == 3 and summary["scenes"][0]["tiles"] == 9
    np.testing.assert_allclose(rasterio.open(out).read(), before, atol=1)
    # parts from other settings are refused, naming the folder
    out.unlink()
    assert main([*base[:-1], "--overlap", "8"]) == 2
    assert "parts were made with other settings (overlap)" in capsys.readouterr().err
