"""Scoring saved predictions (``rsam score``, rsam.evaluation.prediction_files) against independent references:
PIL's NEAREST resize for ``--eval-size``, pycocotools COCOeval for COCO files, hand-computed DOTA AP on submission
files written by rsam.evaluation.dota_submission; and one clear error naming file and item for every bad input."""

import json
import math

import numpy as np
import pytest
from helpers.coco_cases import cocoeval_stats, random_coco_case
from PIL import Image

from rsam.cli.main import main
from rsam.evaluation.dota_submission import DotaSubmission, read_submission
from rsam.evaluation.evaluators import ReferringEvaluator
from rsam.evaluation.prediction_files import score_files
from rsam.evaluation.samples import Sample
from rsam.preprocess import resize_mask
from rsam.tasks.m2b import Boxes
from rsam.tasks.maps import resize_nearest

RESIZE_CASES = [((37, 53), (45, 45)), ((61, 29), (896, 896)), ((200, 601), (97, 131)), ((5, 3), (7, 11))]


def _pil_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(array).resize((size[1], size[0]), Image.NEAREST))


@pytest.mark.parametrize("shape, size", RESIZE_CASES)
def test_mask_resize_is_pil_nearest(shape, size):
    rng = np.random.default_rng(shape[0])
    labels = rng.integers(0, 16, shape).astype(np.uint8)
    assert np.array_equal(resize_mask(labels, size), _pil_nearest(labels, size))
    mask = labels > 7
    assert np.array_equal(resize_mask(mask, size), _pil_nearest(mask.astype(np.uint8), size) > 0)
    assert np.array_equal(resize_mask(labels.astype(np.int64), size), _pil_nearest(labels, size))


def test_the_old_torch_rule_differs_from_pil():
    """Why the scoring path had to change: PyTorch's legacy nearest picks other source pixels than PIL."""
    labels = np.random.default_rng(0).integers(0, 2, (601, 200)).astype(np.uint8)
    assert not np.array_equal(resize_nearest(labels, (896, 896)), _pil_nearest(labels, (896, 896)))


def _iou_counts(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    return int(np.logical_and(pred, gt).sum()), int(np.logical_or(pred, gt).sum())


def test_score_eval_size_resizes_with_pil_like_rsam_test(tmp_path):
    rng = np.random.default_rng(3)
    shapes, eval_size = [(37, 53), (200, 601), (61, 29)], 45
    gt_entries, pred_entries, inter, union = [], [], 0, 0
    evaluator = ReferringEvaluator(eval_size=eval_size)
    for k, shape in enumerate(shapes):
        gt = (rng.random(shape) > 0.6).astype(np.uint8)
        pred = (rng.random(shape[::-1]) > 0.5).astype(np.uint8)  # another size: resized too
        Image.fromarray(gt * 255).save(tmp_path / f"gt{k}.png")
        Image.fromarray(pred).save(tmp_path / f"pred{k}.png")
        gt_entries.append({"id": k, "mask": f"gt{k}.png"})
        pred_entries.append({"id": k, "mask": f"pred{k}.png"})
        i, u = _iou_counts(_pil_nearest(pred, (eval_size,) * 2) > 0, _pil_nearest(gt, (eval_size,) * 2) > 0)
        inter, union = inter + i, union + u
        # the rsam test path: the same prediction as a probability map, the same target
        prob = pred.astype(np.float32)
        evaluator.process(Sample(str(k), tmp_path / "x.png", gt > 0, text="x"), None, lambda _i, _p, m=prob: m[None])
    (tmp_path / "gt.json").write_text(json.dumps(gt_entries))
    (tmp_path / "pred.json").write_text(json.dumps(pred_entries))
    result = score_files("res", tmp_path / "pred.json", tmp_path / "gt.json", eval_size=eval_size)
    assert result["oIoU"] == pytest.approx(inter / union, abs=1e-12)
    assert result["oIoU"] == pytest.approx(evaluator.compute()["oIoU"], abs=1e-12)


def test_semseg_eval_size_and_mpa(tmp_path):
    rng = np.random.default_rng(5)
    gt, pred = rng.integers(0, 3, (31, 47)).astype(np.uint8), rng.integers(0, 3, (47, 31)).astype(np.uint8)
    Image.fromarray(gt).save(tmp_path / "g.png")
    Image.fromarray(pred).save(tmp_path / "p.png")
    classes = ["background", "a", "b", "never"]
    (tmp_path / "gt.json").write_text(json.dumps({"classes": classes, "images": [{"id": 1, "label": "g.png"}]}))
    (tmp_path / "pred.json").write_text(json.dumps({"classes": classes, "images": [{"id": 1, "label": "p.png"}]}))
    result = score_files("semseg", tmp_path / "pred.json", tmp_path / "gt.json", eval_size=33)
    g, p = _pil_nearest(gt, (33, 33)).astype(int), _pil_nearest(pred, (33, 33)).astype(int)
    pa = [((g == c) & (p == c)).sum() / max((g == c).sum(), 1) for c in range(4)]
    assert result["mPA"] == pytest.approx(np.mean(pa), abs=1e-12) and pa[3] == 0.0


def _coco_files(tmp_path, gt, dets):
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(dets))
    return tmp_path / "pred.json", tmp_path / "gt.json"


@pytest.mark.parametrize("seed", [10, 11])
def test_score_det_coco_equals_cocoeval_to_1e9(tmp_path, seed):
    gt, dets = random_coco_case(seed)
    pred_path, gt_path = _coco_files(tmp_path, gt, dets)
    result = score_files("det", pred_path, gt_path)
    stats = cocoeval_stats(gt, dets)
    assert abs(result["AP"] - stats[0]) <= 1e-9 and abs(result["AP50"] - stats[1]) <= 1e-9
    for category in gt["categories"]:
        one = cocoeval_stats(gt, dets, [category["id"]])
        ours = result["AP50_per_class"][category["name"]]
        assert (ours is None) if one[1] < 0 else abs(ours - one[1]) <= 1e-9


def _score_error(capsys, *args) -> str:
    code = main(["score", *args])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    return err


COCO_GT = {
    "images": [{"id": 1, "width": 100, "height": 100}],
    "categories": [{"id": 1, "name": "ship"}],
    "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0}],
}


@pytest.mark.parametrize(
    "bbox, message",
    [
        ([math.nan, 10, 20, 20], "not finite"),
        ([10, 10, math.inf, 20], "not finite"),
        ([10, 10, 20], "4 numbers"),
        ([10, "10", 20, 20], "not a number"),
        ([10, 10, True, 20], "not a number"),
        ("10 10 20 20", "4 numbers"),
    ],
)
def test_det_bad_prediction_box_names_file_and_item(tmp_path, capsys, bbox, message):
    dets = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9}]
    dets.append({"image_id": 1, "category_id": 1, "bbox": bbox, "score": 0.8})
    pred, gt = _coco_files(tmp_path, COCO_GT, dets)
    err = _score_error(capsys, "--task", "det", "--pred", str(pred), "--gt", str(gt))
    assert f"{pred} item 1" in err and message in err


def test_det_nan_score_and_bad_ground_truth_box(tmp_path, capsys):
    pred, gt = _coco_files(tmp_path, COCO_GT, [{"image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "score": "1"}])
    assert f"{pred} item 0" in _score_error(capsys, "--task", "det", "--pred", str(pred), "--gt", str(gt))
    bad_gt = json.loads(json.dumps(COCO_GT))
    bad_gt["annotations"][0]["bbox"] = [math.nan, 10, 20, 20]
    pred, gt = _coco_files(tmp_path, bad_gt, [{"image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "score": 1.0}])
    err = _score_error(capsys, "--task", "det", "--pred", str(pred), "--gt", str(gt))
    assert f"{gt} annotation 7" in err and "not finite" in err


def test_vg_string_coordinate_names_file_and_id(tmp_path, capsys):
    (tmp_path / "gt.json").write_text(json.dumps([{"id": "a", "box": [1, 1, 9, 9]}]))
    (tmp_path / "pred.json").write_text(json.dumps([{"id": "a", "box": [1, "x", 9, 9]}]))
    err = _score_error(capsys, "--task", "vg", "--pred", str(tmp_path / "pred.json"), "--gt", str(tmp_path / "gt.json"))
    assert "pred.json id a" in err and "not a number" in err


@pytest.mark.parametrize("content", [b"", "truncated"])
def test_unreadable_mask_png_names_file_and_id(tmp_path, capsys, content):
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 2, (64, 64)).astype(np.uint8) * 255).save(good)
    bad = tmp_path / "bad.png"
    data = good.read_bytes()
    bad.write_bytes(content if isinstance(content, bytes) else data[: len(data) // 2])
    (tmp_path / "gt.json").write_text(json.dumps([{"id": "k", "mask": "good.png"}]))
    (tmp_path / "pred.json").write_text(json.dumps([{"id": "k", "mask": "bad.png"}]))
    err = _score_error(
        capsys, "--task", "res", "--pred", str(tmp_path / "pred.json"), "--gt", str(tmp_path / "gt.json")
    )
    assert "pred.json id k" in err and str(bad) in err


def _dota_labels(folder, name, rows):
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["imagesource:GoogleEarth", "gsd:0.5"] + [" ".join(map(str, poly)) + f" {cls} 0" for cls, poly in rows]
    (folder / f"{name}.txt").write_text("\n".join(lines) + "\n")


def test_dota_submission_round_trip_and_hand_computed_ap(tmp_path, capsys):
    """Files written by DotaSubmission read back to the same values (Python float repr) and score, through
    ``rsam score --task det|obb``, to hand-computed VOC07 AP50s."""
    square = [10, 10, 50, 10, 50, 50, 10, 50]
    far = [200, 200, 240, 200, 240, 240, 200, 240]
    labels = tmp_path / "labelTxt"
    _dota_labels(labels, "P0001", [("plane", square), ("plane", far)])
    _dota_labels(labels, "P0002", [("storage-tank", square)])
    submission = DotaSubmission(["airplane", "storagetank", "ship"])
    # plane: TP (0.9), FP (0.8, nowhere), TP (0.7) -> 11-point AP = (6 * 1 + 5 * 2/3) / 11
    submission.add(
        "P0001",
        {
            "airplane": Boxes(
                np.array([square, [400, 400, 420, 400, 420, 420, 400, 420], far], float),
                np.array([0.9, 0.8, 0.7], np.float32),
                "obb",
            ),
        },
    )
    submission.add("P0002", {"storagetank": Boxes(np.array([[10.5, 10.25, 50.0, 50.0]]), np.array([0.3]), "hbb")})
    folder = tmp_path / "submission"
    written = submission.write(folder)
    assert sorted(p.name for p in written) == sorted(
        f"Task{t}_{n}.txt" for t in (1, 2) for n in ("plane", "storage-tank", "ship")
    )
    task2 = (folder / "Task2_storage-tank.txt").read_text()
    assert task2 == "P0002 0.3 10.5 10.25 50.0 50.0\n"  # the DOTA server's layout, str(float(v))
    task1 = (folder / "Task1_plane.txt").read_text().splitlines()
    assert task1[0] == "P0001 0.8999999761581421 10.0 10.0 50.0 10.0 50.0 50.0 10.0 50.0"  # float32 score, exact
    rows = read_submission(folder, "obb", ["plane", "storage-tank", "ship"])
    assert (rows[0][0], rows[0][1], rows[0][2]) == ("P0001", 0, float(np.float32(0.9)))
    expected_plane = (6 * 1 + 5 * 2 / 3) / 11
    for task in ("obb", "det"):
        result = score_files(task, folder, labels)
        assert result["AP50_per_class"]["plane"] == pytest.approx(expected_plane, abs=1e-12), task
        assert result["AP50_per_class"]["storage-tank"] == pytest.approx(1.0, abs=1e-12), task  # IoU 0.98 both
    # DET_DOTA.py's 4-corner Task2 layout is read too; a 4-corner Task2 line that is not a rectangle is refused
    (folder / "Task2_ship.txt").write_text("P0001 0.5 1 2 30 2 30 40 1 40\n")
    ship = [row for row in read_submission(folder, "hbb", ["airplane", "storagetank", "ship"]) if row[1] == 2]
    assert ship == [("P0001", 2, 0.5, [1.0, 2.0, 30.0, 40.0])]
    (folder / "Task2_ship.txt").write_text("P0001 0.5 1 2 30 3 30 40 1 40\n")
    classes = "plane,storage-tank,ship"
    err = _score_error(capsys, "--task", "det", "--pred", str(folder), "--gt", str(labels), "--classes", classes)
    assert "Task2_ship.txt:1" in err and "axis-aligned" in err


@pytest.mark.parametrize(
    "line, message",
    [
        ("P0001 0.5 nan 10 50 10 50 50 10 50", "not a finite number"),
        ("P0001 nan 10 10 50 10 50 50 10 50", "score"),
        ("P0001 0.5 10 10 50 10 50 50", "8 coordinates"),
        ("P0001 0.5 10 ten 50 10 50 50 10 50", "not a number"),
    ],
)
def test_dota_bad_lines_name_file_and_line(tmp_path, capsys, line, message):
    _dota_labels(tmp_path / "labelTxt", "P0001", [("plane", [10, 10, 50, 10, 50, 50, 10, 50])])
    folder = tmp_path / "submission"
    folder.mkdir()
    (folder / "Task1_plane.txt").write_text("P0001 0.9 10 10 50 10 50 50 10 50\n" + line + "\n")
    err = _score_error(capsys, "--task", "obb", "--pred", str(folder), "--gt", str(tmp_path / "labelTxt"))
    assert "Task1_plane.txt:2" in err and message in err


def test_dota_ground_truth_nan_names_file_and_line(tmp_path, capsys):
    labels = tmp_path / "labelTxt"
    rows = [("plane", [10, 10, 50, 10, 50, 50, 10, 50]), ("plane", ["nan", 1, 2, 1, 2, 2, 1, 2])]
    _dota_labels(labels, "P0001", rows)
    folder = tmp_path / "submission"
    folder.mkdir()
    (folder / "Task1_plane.txt").write_text("P0001 0.9 10 10 50 10 50 50 10 50\n")
    err = _score_error(capsys, "--task", "obb", "--pred", str(folder), "--gt", str(labels))
    assert "P0001.txt:4" in err and "finite" in err
