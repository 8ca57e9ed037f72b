"""``rsam score`` for every task on hand-computed cases, and its one-line errors (exit code 2) on bad input."""

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from rsam.cli.main import main


def _run(capsys, *args):
    code = main(["score", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _json(capsys, *args):
    code, out, err = _run(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def _write(path, data):
    path.write_text(json.dumps(data))
    return str(path)


def _png(path, array):
    Image.fromarray(np.asarray(array, np.uint8)).save(path)
    return path.name


def _rle(mask):
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def test_res_png_and_rle(tmp_path, capsys):
    gt_mask = np.zeros((4, 4), np.uint8)
    gt_mask[:2, :2] = 1
    pred_mask = np.zeros((4, 4), np.uint8)
    pred_mask[:2, :] = 1  # I = 4, U = 8
    gt = _write(
        tmp_path / "gt.json",
        [{"id": "a", "mask": _png(tmp_path / "a_gt.png", gt_mask * 255)}, {"id": 2, "mask": _rle(gt_mask)}],
    )
    pred = _write(
        tmp_path / "pred.json",
        [{"id": "a", "mask": _rle(pred_mask)}, {"id": "2", "mask": _png(tmp_path / "b.png", gt_mask)}],
    )
    result = _json(capsys, "--task", "res", "--pred", pred, "--gt", gt)
    assert result["oIoU"] == pytest.approx((4 + 4) / (8 + 4)) and result["mIoU"] == pytest.approx(0.75)
    assert result["Prec@0.5"] == 1.0 and result["Prec@0.6"] == 0.5
    big = _write(
        tmp_path / "big.json", [{"id": "a", "mask": _rle(np.zeros((8, 8)))}, {"id": "2", "mask": _rle(gt_mask)}]
    )
    code, _, err = _run(capsys, "--task", "res", "--pred", big, "--gt", gt)
    assert code == 2 and "differ in size" in err and err.count("\n") == 1
    result = _json(capsys, "--task", "res", "--pred", big, "--gt", gt, "--eval-size", "8")
    assert result["samples"] == 2


def test_semseg_and_mismatched_class_lists(tmp_path, capsys):
    gt_labels = np.array([[0, 1], [1, 2]])
    gt = _write(
        tmp_path / "gt.json",
        {"classes": ["bg", "a", "b"], "images": [{"id": "x", "label": _png(tmp_path / "g.png", gt_labels)}]},
    )
    pred_png = _png(tmp_path / "p.png", [[0, 1], [2, 2]])
    pred = _write(tmp_path / "pred.json", {"classes": ["bg", "a", "b"], "images": [{"id": "x", "label": pred_png}]})
    result = _json(capsys, "--task", "semseg", "--pred", pred, "--gt", gt)
    assert result["IoU_per_class"] == pytest.approx({"bg": 1.0, "a": 0.5, "b": 0.5})
    assert result["mIoU"] == pytest.approx(2 / 3)
    other = _write(tmp_path / "other.json", {"classes": ["bg", "b", "a"], "images": []})
    code, _, err = _run(capsys, "--task", "semseg", "--pred", other, "--gt", gt)
    assert code == 2 and "class list" in err


def _coco_gt(tmp_path):
    return _write(
        tmp_path / "gt.json",
        {
            "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 5, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
                {"id": 2, "image_id": 2, "category_id": 5, "bbox": [20, 20, 10, 10], "area": 100, "iscrowd": 0},
            ],
            "categories": [{"id": 5, "name": "ship"}, {"id": 6, "name": "harbor"}],
        },
    )


def test_det_coco_hand_computed_and_bad_boxes(tmp_path, capsys):
    gt = _coco_gt(tmp_path)
    dets = [
        {"image_id": 1, "category_id": 5, "bbox": [0, 0, 10, 10], "score": 0.9},
        {"image_id": 1, "category_id": 5, "bbox": [50, 50, 10, 10], "score": 0.8},
        {"image_id": 2, "category_id": 5, "bbox": [20, 20, 10, 10], "score": 0.7},
    ]
    result = _json(capsys, "--task", "det", "--pred", _write(tmp_path / "p.json", dets), "--gt", gt)
    assert result["AP50_per_class"]["ship"] == pytest.approx((51 + 50 * 2 / 3) / 101)  # TP, FP, TP
    assert result["AP50_per_class"]["harbor"] is None and result["AP50"] == result["AP50_per_class"]["ship"]
    for bad, message in (
        ([dict(dets[0], image_id=9)], "unknown image_id"),
        ([dict(dets[0], category_id=7)], "unknown category_id"),
        ([dict(dets[0], bbox=[95, 0, 10, 10])], "outside"),
        ([dict(dets[0], bbox=[5, 5, 0, 3])], "positive width"),
        ([], "empty"),
    ):
        code, _, err = _run(capsys, "--task", "det", "--pred", _write(tmp_path / "bad.json", bad), "--gt", gt)
        assert code == 2 and message in err, err
    empty = _json(capsys, "--task", "det", "--pred", str(tmp_path / "bad.json"), "--gt", gt, "--allow-empty")
    assert empty["AP50"] == 0.0  # documented: an empty set, when allowed, finds nothing


def _dota_gt(tmp_path):
    folder = tmp_path / "labelTxt"
    folder.mkdir()
    (folder / "P1.txt").write_text(
        "imagesource:x\ngsd:0.1\n0 0 10 0 10 10 0 10 plane 0\n50 50 60 50 60 60 50 60 plane 1\n"
    )
    (folder / "P2.txt").write_text("20 20 30 20 30 30 20 30 ship 0\n")
    return folder


def test_obb_dota_task1_files(tmp_path, capsys):
    gt = _dota_gt(tmp_path)
    pred = tmp_path / "pred"
    pred.mkdir()
    # plane: a rotated square over P1's first box (IoU 1/2 exactly? no: diamond inside square -> 50/100 = .5, not
    # > .5 -> FP) then the exact box (TP); the difficult box's detection is ignored
    (pred / "Task1_plane.txt").write_text(
        "P1 0.9 5 0 10 5 5 10 0 5\nP1 0.8 0 0 10 0 10 10 0 10\nP1 0.7 50 50 60 50 60 60 50 60\n"
    )
    (pred / "Task1_ship.txt").write_text("P2 0.5 20 20 30 20 30 30 20 30\n")
    result = _json(capsys, "--task", "obb", "--pred", str(pred), "--gt", str(gt))
    # plane: precision [0, 1/2], recall [0, 1] -> VOC07: 11 points at max precision 1/2 = 0.5; ship: 1
    assert result["AP50_per_class"] == pytest.approx({"plane": 0.5, "ship": 1.0})
    assert result["AP50"] == pytest.approx(0.75)
    all_point = _json(capsys, "--task", "obb", "--pred", str(pred), "--gt", str(gt), "--all-point-ap")
    assert all_point["AP50_per_class"]["plane"] == pytest.approx(0.5)
    (pred / "Task1_helipad.txt").write_text("P1 0.5 0 0 1 0 1 1 0 1\n")
    code, _, err = _run(capsys, "--task", "obb", "--pred", str(pred), "--gt", str(gt))
    assert code == 2 and "helipad" in err
    (pred / "Task1_helipad.txt").unlink()
    (pred / "Task1_ship.txt").write_text("P9 0.5 20 20 30 20 30 30 20 30\n")
    code, _, err = _run(capsys, "--task", "obb", "--pred", str(pred), "--gt", str(gt))
    assert code == 2 and "unknown image" in err


def test_det_dota_task2_files(tmp_path, capsys):
    gt = _dota_gt(tmp_path)
    pred = tmp_path / "pred"
    pred.mkdir()
    (pred / "Task2_plane.txt").write_text("P1 0.9 0 0 10 10\n")
    (pred / "Task2_ship.txt").write_text("P2 0.9 20 20 30 31\n")  # inclusive IoU 121/132 > .5
    result = _json(capsys, "--task", "det", "--pred", str(pred), "--gt", str(gt))
    assert result["AP50_per_class"] == pytest.approx({"plane": 1.0, "ship": 1.0})
    # DET_DOTA.py writes patch-level files: the same plane seen by two patches merges into one detection
    patches = tmp_path / "patches"
    patches.mkdir()
    (patches / "Task2_plane.txt").write_text("P1__1__0___0 0.9 0 0 10 10\nP1__1__0___5 0.8 0 -5 10 5\n")
    (patches / "Task2_ship.txt").write_text("P2__1__20___20 0.9 0 0 10 11\n")
    merged = _json(capsys, "--task", "det", "--pred", str(patches), "--gt", str(gt), "--merge-patches")
    assert merged["AP50_per_class"] == pytest.approx({"plane": 1.0, "ship": 1.0})  # no duplicate false positive
    code, _, err = _run(capsys, "--task", "det", "--pred", str(patches), "--gt", str(gt))
    assert code == 2 and "unknown image 'P1__1__0___0'" in err


def test_vg_with_missing_prediction_and_outside_box(tmp_path, capsys):
    gt = _write(
        tmp_path / "gt.json",
        [{"id": 1, "box": [0, 0, 10, 10], "width": 50, "height": 50}, {"id": 2, "box": [0, 0, 10, 10]}],
    )
    pred = _write(tmp_path / "p.json", [{"id": 1, "box": [0, 0, 10, 20]}, {"id": 2, "box": None}])
    result = _json(capsys, "--task", "vg", "--pred", pred, "--gt", gt)
    assert result["mIoU"] == pytest.approx(0.25) and result["Acc@0.5"] == 0.5
    bad = _write(tmp_path / "bad.json", [{"id": 1, "box": [0, 0, 60, 10]}, {"id": 2, "box": None}])
    code, _, err = _run(capsys, "--task", "vg", "--pred", bad, "--gt", gt)
    assert code == 2 and "outside" in err
    code, _, err = _run(
        capsys, "--task", "vg", "--pred", _write(tmp_path / "one.json", [{"id": 1, "box": None}]), "--gt", gt
    )
    assert code == 2 and "no prediction for 1" in err


def test_mlc_mcc_count(tmp_path, capsys):
    classes = ["a", "b", "c"]
    gt = _write(
        tmp_path / "gt.json",
        {"classes": classes, "samples": [{"id": 1, "labels": ["a"]}, {"id": 2, "labels": ["b", "c"]}]},
    )
    pred = _write(
        tmp_path / "p.json",
        {"classes": classes, "samples": [{"id": 1, "scores": [0.6, 0.5, 0.1]}, {"id": 2, "labels": ["b"]}]},
    )
    assert _json(capsys, "--task", "mlc", "--pred", pred, "--gt", gt)["accuracy"] == pytest.approx(5 / 6)
    bad = _write(
        tmp_path / "bad.json", {"classes": classes, "samples": [{"id": 1, "labels": ["z"]}, {"id": 2, "labels": []}]}
    )
    code, _, err = _run(capsys, "--task", "mlc", "--pred", bad, "--gt", gt)
    assert code == 2 and "unknown classes" in err
    gt = _write(
        tmp_path / "gt2.json", {"classes": classes, "samples": [{"id": 1, "label": "a"}, {"id": 2, "label": "c"}]}
    )
    pred = _write(
        tmp_path / "p2.json",
        {"classes": classes, "samples": [{"id": 1, "scores": [0.5, 0.5, 0]}, {"id": 2, "label": "b"}]},
    )
    assert _json(capsys, "--task", "mcc", "--pred", pred, "--gt", gt)["accuracy"] == 0.5
    gt = _write(tmp_path / "gt3.json", [{"id": "i1", "count": 3}, {"id": "i2", "count": 0}])
    pred = _write(tmp_path / "p3.json", [{"id": "i1", "count": 3}, {"id": "i2", "count": 1}])
    result = _json(capsys, "--task", "count", "--pred", pred, "--gt", gt)
    assert result["accuracy"] == 0.5 and result["MAE"] == 0.5
    code, _, err = _run(
        capsys,
        "--task",
        "count",
        "--pred",
        _write(tmp_path / "p4.json", [{"id": "i1", "count": 2.5}, {"id": "i2", "count": 1}]),
        "--gt",
        gt,
    )
    assert code == 2 and "non-negative integer" in err


def test_caption_coco_files_and_plain_output(tmp_path, capsys):
    gt = _write(
        tmp_path / "gt.json",
        {
            "images": [{"id": 1}, {"id": 2}],
            "annotations": [
                {"image_id": 1, "id": 1, "caption": "A plane."},
                {"image_id": 2, "id": 2, "caption": "Some trees."},
            ],
        },
    )
    pred = _write(tmp_path / "p.json", [{"image_id": 1, "caption": "a plane"}, {"image_id": 2, "caption": "some"}])
    result = _json(capsys, "--task", "caption", "--pred", pred, "--gt", gt)
    assert result["CIDEr"] == pytest.approx((5.0 + 10 * (1 / 2**0.5) / 4) / 2)  # see test_metrics_captioning
    code, out, _ = _run(capsys, "--task", "caption", "--pred", pred, "--gt", gt)
    assert code == 0 and "CIDEr:" in out
    code, _, err = _run(
        capsys,
        "--task",
        "caption",
        "--pred",
        _write(tmp_path / "x.json", [{"image_id": 1, "caption": "a"}, {"image_id": 3, "caption": "c"}]),
        "--gt",
        gt,
    )
    assert code == 2 and "unknown ids" in err
    code, _, err = _run(capsys, "--task", "caption", "--pred", str(tmp_path / "missing.json"), "--gt", gt)
    assert code == 2 and "not found" in err
