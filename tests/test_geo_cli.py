"""``rsam segment`` on real GeoTIFFs from registry packages (deepforest's NEON tile, Debian r-cran-stars' Landsat 7
scene) and generated rasters: georeference round-trips, band choice, the scaling rule, vectors in the raster CRS,
one-line errors, unique file names. The end-to-end runs use a real (tiny, random-weight) RemoteSAM."""

from __future__ import annotations

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import rasterio
import shapely
from helpers.benchmark_loop import save_tiny_model
from helpers.geo_data import landsat_tile, neon_tile, write_raster
from helpers.lit_runs import rsam_cli
from PIL import Image

from rsam.cli.cmd_segment import output_stem
from rsam.cli.main import main
from rsam.geo.pipeline import ModelTileRunner, SegmentOptions, segment_scene
from rsam.geo.raster import Scene
from rsam.geo.writer import PROB_SCALE
from rsam.preprocess import to_rgb_uint8


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def red(rgb):
    return (rgb[..., 0].astype(np.float32) / 255.0)[None]


def test_cli_neon_geotiff_to_gpkg_real_model(tmp_path, tiny):
    scene = neon_tile()
    out, gpkg = tmp_path / "trees.tif", tmp_path / "trees.gpkg"
    result, summary = rsam_cli(
        "segment", str(scene), "--model", str(tiny), "--prompt", "tree crowns", "--prompt", "bare ground",
        "-o", str(out), "--vectors", str(gpkg), "--instances", "--gsd", "0.4", "--tile", "64", "--overlap", "16",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert summary["tiles"] == 4 and summary["crs"] == "EPSG:32617"
    with rasterio.open(scene) as src, rasterio.open(out) as dst:
        assert dst.crs == src.crs
        assert dst.count == 2 and dst.dtypes == ("uint8", "uint8") and dst.nodata == 255
        assert dst.descriptions == ("tree crowns", "bare ground")
        assert (dst.transform.c, dst.transform.f) == pytest.approx((src.transform.c, src.transform.f))
        assert dst.res == pytest.approx((0.4, 0.4)) and (dst.width, dst.height) == (100, 100)
        assert dst.bounds == pytest.approx(src.bounds)
        values = dst.read()
        assert values.max() <= PROB_SCALE or (values == 255).any()
        assert dst.profile["tiled"] and dst.profile["compress"] == "deflate"
        bounds = shapely.box(*dst.bounds)
    info = pyogrio.read_info(gpkg)
    assert info["crs"] == "EPSG:32617" and info["features"] == summary["features"] > 0
    meta, _, geometry, fields = pyogrio.raw.read(gpkg)
    geoms = shapely.from_wkb(geometry)
    assert all(g.is_valid for g in geoms)
    assert all(bounds.buffer(1e-6).contains(g) for g in geoms)
    names = dict(zip(meta["fields"], fields))
    assert set(names["prompt"]) <= {"tree crowns", "bare ground"}
    # the pixel count of each instance equals its polygon's area over the pixel area (0.4 m x 0.4 m)
    np.testing.assert_allclose([g.area for g in geoms], names["area_px"] * 0.16, rtol=1e-6)


def test_band_choice_on_landsat(tmp_path):
    path = landsat_tile()
    with rasterio.open(path) as src:
        reference = src.read([4, 3, 2])
        crs, transform = src.crs, src.transform
    with Scene(path, bands=(4, 3, 2)) as scene:
        assert scene.rule.kind == "identity"
        pixels = scene.read(rasterio.windows.Window(0, 0, scene.width, scene.height))
        np.testing.assert_array_equal(pixels.rgb, reference)
        summary = segment_scene(
            scene, ModelTileRunner(scene, red, 1), ["nir"], tmp_path / "o.tif", SegmentOptions(64, 16, "cosine")
        )
    assert summary["bands"] == [4, 3, 2]
    with rasterio.open(tmp_path / "o.tif") as out:
        assert out.crs == crs and out.transform == transform
        # the stand-in's probability is band 4 / 255, identical in every tile: blending keeps it
        np.testing.assert_array_equal(out.read(1), np.rint(reference[0] / 255.0 * PROB_SCALE).astype(np.uint8))
    with pytest.raises(ValueError, match=r"L7_ETMs\.tif: band 7 does not exist \(the raster has bands 1\.\.6\)"):
        Scene(path, bands=(7, 3, 2))


def test_cli_errors_name_the_file(tmp_path, tiny, capsys):
    not_raster = tmp_path / "notes.tif"
    not_raster.write_text("not a raster")
    wide = write_raster(tmp_path / "wide.tif", np.full((3, 40, 40), 4000, np.uint16))
    cases = [
        ([str(landsat_tile()), "--bands", "1,2,9"], "band 9 does not exist"),
        ([str(not_raster)], "not a raster"),
        ([str(wide)], "uint16, not uint8"),
    ]
    for args, message in cases:
        code = main(["segment", *args, "--model", str(tiny), "--prompt", "x", "-o", str(tmp_path / "o.tif")])
        stderr = capsys.readouterr().err
        assert code == 2, stderr
        assert len(stderr.strip().splitlines()) == 1 and message in stderr and args[0] in stderr
    assert not (tmp_path / "o.tif").exists()


def test_scaling_rule_sixteen_bit_and_float(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.integers(0, 12000, (3, 90, 120)).astype(np.uint16)
    data[:, :10, :10] = 65535  # nodata
    path = write_raster(tmp_path / "s16.tif", data, nodata=65535)
    with pytest.raises(ValueError, match="uint16, not uint8.*--scale.*--stretch"):
        Scene(path)
    with Scene(path, stretch=(2.0, 98.0)) as scene:
        valid = ~(data == 65535).all(axis=0)
        for band in range(3):  # per band, over valid pixels, once for the scene (reference: numpy on all pixels)
            low, high = np.percentile(data[band][valid].astype(np.float64), [2, 98])
            assert scene.rule.low[band] == pytest.approx(low) and scene.rule.high[band] == pytest.approx(high)
        window = rasterio.windows.Window(30, 20, 40, 40)
        rgb = scene.read(window).rgb
        expected = np.clip(np.rint((data[:, 20:60, 30:70] - low) / (high - low) * 255), 0, 255)
        np.testing.assert_allclose(rgb[2], expected[2], atol=1)
    floats = write_raster(tmp_path / "f.tif", np.full((3, 30, 30), 0.5, np.float32))
    with Scene(floats, scale=255) as scene:
        assert (scene.read(rasterio.windows.Window(0, 0, 30, 30)).rgb == 128).all()  # not clipped to 0 or 255


def test_plain_files_follow_the_array_rule(tmp_path):
    sixteen = tmp_path / "g16.png"
    Image.fromarray(np.full((20, 30), 40000, np.uint16)).save(sixteen)
    with pytest.raises(ValueError, match="g16.png has dtype uint16"):
        to_rgb_uint8(sixteen)
    assert (to_rgb_uint8(sixteen, scale=255 / 65535) == round(40000 * 255 / 65535)).all()
    floats = tmp_path / "f.tif"
    Image.fromarray(np.full((8, 8), 0.25, np.float32)).save(floats)
    with pytest.raises(ValueError, match="float32"):
        to_rgb_uint8(floats)
    assert (to_rgb_uint8(floats, scale=255) == 64).all()


def test_georeference_round_trip_float_cog_and_no_crs(tmp_path, caplog):
    data = np.random.default_rng(4).integers(1, 255, (3, 150, 170)).astype(np.uint8)
    data[:, 100:, 120:] = 0
    path = write_raster(tmp_path / "g.tif", data, crs="EPSG:3035", res=2.5, nodata=0, origin=(4321000, 3210000))
    with Scene(path) as scene:
        opts = SegmentOptions(64, 16, "linear", kind="float32", cog=True)
        segment_scene(
            scene, ModelTileRunner(scene, red, 1), ["r"], tmp_path / "o.tif", opts, vectors=tmp_path / "v.gpkg"
        )
    with rasterio.open(path) as src, rasterio.open(tmp_path / "o.tif") as out:
        assert out.crs == src.crs and out.transform == src.transform and out.shape == src.shape
        assert out.dtypes == ("float32",) and np.isnan(out.nodata)
        assert out.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        values = out.read(1)
        nodata = (data == 0).all(axis=0)
        assert np.isnan(values[nodata]).all() and not np.isnan(values[~nodata]).any()
        np.testing.assert_allclose(values[~nodata], data[0][~nodata] / 255.0, atol=1e-6)
    assert pyogrio.read_info(tmp_path / "v.gpkg")["crs"] == "EPSG:3035"
    # a plain PNG: no CRS, a warning, vectors in pixel coordinates
    png = tmp_path / "p.png"
    Image.fromarray(
        np.where(np.arange(60)[None, :, None] < 30, 250, 10).repeat(40, 0).astype(np.uint8).repeat(3, 2)
    ).save(png)
    with caplog.at_level("WARNING"), Scene(png) as scene:
        segment_scene(
            scene, ModelTileRunner(scene, red, 1), ["r"], tmp_path / "p.tif", opts, vectors=tmp_path / "p.gpkg"
        )
    assert any("has no CRS" in r.message for r in caplog.records)
    _, _, geometry, _ = pyogrio.raw.read(tmp_path / "p.gpkg")
    (geom,) = shapely.from_wkb(geometry)
    assert geom.bounds == (0.0, 0.0, 30.0, 40.0)  # x = column, y = row


def test_overlay_names_are_unique(tmp_path, tiny, capsys):
    assert output_stem(0, "ship!") != output_stem(1, "ship?")
    assert output_stem(0, "!!!").startswith("00_prompt_") and output_stem(0, "a b") != output_stem(0, "a_b")
    image = tmp_path / "i.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(image)
    # in-process CLI (no launcher involved); names carry a hash of the exact text, never only the readable part
    code = main(
        ["segment", str(image), "--model", str(tiny), "--prompt", "??", "--prompt", "!!", "-o", str(tmp_path / "out")]
    )
    assert code == 0, capsys.readouterr().err
    masks = sorted((tmp_path / "out").glob("*_mask.png"))
    assert len(masks) == 2 and len({m.name for m in masks}) == 2
    assert main(["segment", str(image), "--model", str(tiny), "--prompt", " ", "-o", str(tmp_path / "o2")]) == 2
    assert "empty --prompt" in capsys.readouterr().err
