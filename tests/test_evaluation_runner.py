"""run_benchmark end to end with stand-in predict functions whose right answers are known."""

import json

import numpy as np
import pytest
from PIL import Image

from rsam.evaluation import get_benchmark, results_markdown, run_benchmark, run_registered
from rsam.evaluation.evaluators import ReferringEvaluator
from rsam.evaluation.samples import Sample
from rsam.tasks.prompts import DIOR_CLASSES


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def test_referring_run_scores_at_896_and_ignores_map_resolution(tmp_path):
    target = np.zeros((40, 50), bool)
    target[5:20, 10:30] = True
    image = _save(tmp_path / "a.png", np.zeros((40, 50, 3), np.uint8))
    samples = [Sample("s1", image, target, text="the field"), Sample("s2", image, target, text="the field")]
    prompts = []

    def predict(img, texts):
        prompts.append(list(texts))
        return (target * np.float32(0.9))[None]

    result = run_benchmark(samples, predict, ReferringEvaluator())
    assert result["oIoU"] == pytest.approx(1.0) and result["samples"] == 2 and prompts == [["the field"]] * 2
    # a prediction shifted by 5 rows: I = 10 x 20, U = 20 x 20 at native size (5-row steps map cleanly)
    shifted = np.roll(target, 5, axis=0)
    native = run_benchmark(samples[:1], lambda img, t: shifted[None].astype(np.float32), ReferringEvaluator(None))
    assert native["mIoU"] == pytest.approx(200 / 400)
    shard0 = run_benchmark(samples, predict, ReferringEvaluator(), shard=(0, 2))
    assert shard0["samples"] == 1


def test_semantic_run_prompts_with_period_and_merges(tmp_path):
    label = np.zeros((4, 7, 3), np.uint8)  # 896 / 4 and 896 / 7 are whole: every pixel becomes one block
    label[:2, :3] = (0, 0, 63)  # ship (1)
    label[2:, 3:] = (0, 127, 255)  # airplane (14)
    _save(tmp_path / "masks" / "P1.png", label)
    _save(tmp_path / "images" / "P1.png", np.zeros((4, 7, 3), np.uint8))
    spec = get_benchmark("isaid-seg")
    seen = []

    def predict(img, texts):
        seen.extend(texts)
        maps = np.zeros((len(texts), 4, 7), np.float32)
        maps[0, :2, :3] = 1.0
        maps[13, 2:, 3:] = 1.0
        maps[14, 3:, 6:] = 1.0  # harbor (15) overlaps airplane on one pixel: higher index wins there
        return maps

    result = run_registered(spec, tmp_path, predict)
    assert seen[0] == "ship in the image." and len(seen) == 15
    assert result["IoU_per_class"]["ship"] == 1.0
    assert result["IoU_per_class"]["airplane"] == pytest.approx(7 / 8)
    assert result["IoU_per_class"]["harbor"] == 0.0


def test_detection_and_multilabel_runs_on_dior_xml(tmp_path):
    xml = (
        "<annotation><filename>1.jpg</filename><object><name>ship</name><bndbox><xmin>2</xmin><ymin>3</ymin>"
        "<xmax>8</xmax><ymax>9</ymax></bndbox></object></annotation>"
    )
    (tmp_path / "Annotations" / "Horizontal Bounding Boxes").mkdir(parents=True)
    (tmp_path / "Annotations" / "Horizontal Bounding Boxes" / "1.xml").write_text(xml)
    _save(tmp_path / "JPEGImages-test" / "1.jpg", np.zeros((20, 20, 3), np.uint8))
    ship = DIOR_CLASSES.index("ship")

    def predict(img, texts):
        maps = np.zeros((len(texts), 20, 20), np.float32)
        maps[ship, 3:9, 2:8] = 0.9
        return maps

    det = run_registered(get_benchmark("dior-det"), tmp_path, predict)
    assert det["AP50"] == pytest.approx(1.0) and det["AP50_per_class"]["ship"] == pytest.approx(1.0)
    mlc = run_registered(get_benchmark("dior-mlc"), tmp_path, predict)
    # ship score 0.5 * max 0.9 + 0.5 * mean (36 * 0.9 / 400 = 0.081) = 0.4905, not > 0.5 -> absent: 1 wrong of 20
    assert mlc["accuracy"] == pytest.approx(19 / 20)
    assert "| dior-det |" in results_markdown("dior-det", det, ["AP50"])


def test_counting_and_caption_runs(tmp_path):
    _save(tmp_path / "Images" / "a.png", np.zeros((100, 100, 3), np.uint8))
    (tmp_path / "Annotation").mkdir()
    (tmp_path / "Annotation" / "test_IMG_CT.json").write_text(
        json.dumps([{"images": ["a.png"], "conversations": [{"content": "the number of vehicle."}, {"content": "2"}]}])
    )

    def predict(img, texts):
        maps = np.zeros((len(texts), 100, 100), np.float32)
        maps[:, 10:13, 10:13] = 0.9  # 9 px: above 0.8 * 6
        maps[:, 50:52, 50:52] = 0.9  # 4 px: below 0.8 * 6 -> filtered
        maps[:, 80:90, 20:30] = 0.9
        return maps

    count = run_registered(get_benchmark("dior-cnt"), tmp_path, predict)
    assert count["accuracy"] == 1.0
    (tmp_path / "dataset.json").write_text(
        json.dumps(
            {
                "images": [
                    {
                        "filename": "a.png",
                        "imgid": 3,
                        "split": "test",
                        "sentences": [{"raw": "There are many roads in the image."}],
                    }
                ]
            }
        )
    )
    first = run_registered(get_benchmark("ucm-cap"), tmp_path, predict, seed=1)
    again = run_registered(get_benchmark("ucm-cap"), tmp_path, predict, seed=1)
    assert first["CIDEr"] == again["CIDEr"] and first["images"] == 1


def test_boundary_map_splits_touching_objects(tmp_path):
    xml = (
        "<annotation><filename>1.jpg</filename>"
        + "".join(
            f"<object><name>ship</name><bndbox><xmin>{x1}</xmin><ymin>3</ymin><xmax>{x2}</xmax><ymax>9</ymax></bndbox>"
            "</object>"
            for x1, x2 in ((2, 12), (13, 23))
        )
        + "</annotation>"
    )
    (tmp_path / "Annotations" / "Horizontal Bounding Boxes").mkdir(parents=True)
    (tmp_path / "Annotations" / "Horizontal Bounding Boxes" / "1.xml").write_text(xml)
    _save(tmp_path / "JPEGImages-test" / "1.jpg", np.zeros((20, 30, 3), np.uint8))
    ship = DIOR_CLASSES.index("ship")

    def predict(img, texts):
        maps = np.zeros((len(texts), 20, 30), np.float32)
        maps[ship, 3:9, 2:23] = 0.9  # one blob over both ships
        return maps

    def boundary(img):
        edges = np.zeros(img.shape[:2], np.float32)
        edges[:, 12] = 0.9
        return edges

    spec = get_benchmark("dior-det")
    # one merged box [2, 3, 23, 9]: IoU 60 / 126 with each ship -> no match
    assert run_registered(spec, tmp_path, predict)["AP50_per_class"]["ship"] == 0.0
    assert run_registered(spec, tmp_path, predict, boundary_fn=boundary)["AP50_per_class"]["ship"] == pytest.approx(1)
