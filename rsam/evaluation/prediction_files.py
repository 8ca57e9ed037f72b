"""Score saved predictions against saved ground truth, for every task (what ``rsam score`` runs).

File formats are documented in ``docs/prediction-formats.md``. Every input problem is an error naming the file and the
item (``ValueError``): unknown or duplicate ids, images without a prediction, unknown classes, class lists that differ,
boxes outside the image, malformed boxes, empty prediction sets (unless ``allow_empty`` says an empty set is meant,
and then it scores as it should: nothing found). Nothing silently becomes 0.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils

from rsam.evaluation.dota_submission import read_submission
from rsam.evaluation.readers.dota import parse_dota_txt
from rsam.evaluation.samples import read_raster
from rsam.metrics import (
    CocoDetectionMetric,
    CountingAccuracy,
    GroundingMetric,
    MultiLabelAccuracy,
    ReferringSegMetric,
    SceneAccuracy,
    SemanticSegMetric,
    VocDetectionMetric,
)
from rsam.metrics.captioning import caption_scores
from rsam.preprocess import resize_mask
from rsam.tasks.m2b import Boxes
from rsam.tasks.tiling import suppress_merged

TASKS = ("res", "semseg", "det", "obb", "vg", "mlc", "mcc", "count", "caption")


def _load_json(path: Path) -> Any:
    if path.is_dir():
        raise ValueError(f"{path}: expected a JSON file, got a folder")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"file not found: {path}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


def _by_id(entries, path: Path, *, id_key: str = "id") -> dict[str, dict]:
    """``[{id, ...}]`` -> ``{str(id): entry}``; duplicate or missing ids are errors."""
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of objects with an {id_key!r} field")
    result: dict[str, dict] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or id_key not in entry:
            raise ValueError(f"{path}: item {index} has no {id_key!r}")
        key = str(entry[id_key])
        if key in result:
            raise ValueError(f"{path}: id {key!r} appears twice")
        result[key] = entry
    return result


def _match_ids(pred: dict, gt: dict, pred_path: Path, allow_empty: bool = False) -> list[str]:
    if not pred and not allow_empty:
        raise ValueError(f"{pred_path}: the prediction set is empty")
    unknown = sorted(set(pred) - set(gt))
    if unknown:
        raise ValueError(f"{pred_path}: {len(unknown)} predictions name unknown ids, e.g. {unknown[:3]}")
    missing = sorted(set(gt) - set(pred))
    if missing:
        raise ValueError(f"{pred_path}: no prediction for {len(missing)} ground-truth ids, e.g. {missing[:3]}")
    return sorted(gt)


def _check_classes(pred_classes, gt_classes, pred_path: Path) -> list[str]:
    if not isinstance(gt_classes, list) or not gt_classes:
        raise ValueError("ground truth: 'classes' must be a non-empty list")
    if list(pred_classes or []) != list(gt_classes):
        raise ValueError(f"{pred_path}: class list {pred_classes} differs from the ground truth's {gt_classes}")
    return list(gt_classes)


# ---------------------------------------------------------------- masks (res, semseg)
def _read_mask(value, base: Path, where: str) -> np.ndarray:
    if isinstance(value, dict):
        if not isinstance(value.get("counts"), str) or len(value.get("size", [])) != 2:
            raise ValueError(f"{where}: a mask RLE needs 'size' [h, w] and compressed string 'counts'")
        try:
            return mask_utils.decode({"size": list(value["size"]), "counts": value["counts"]}).astype(np.int64)
        except Exception as err:
            raise ValueError(f"{where}: cannot decode RLE: {err}") from None
    if isinstance(value, str):
        path = base / value
        if not path.is_file():
            raise FileNotFoundError(f"{where}: mask file not found: {path}")
        array = read_raster(path, where)
        if array.ndim != 2:
            raise ValueError(f"{where}: {path} must be a single-channel PNG")
        return array.astype(np.int64)
    raise ValueError(f"{where}: a mask is a PNG path or a COCO RLE object")


def _mask_entries(path: Path) -> dict[str, Any]:
    """A JSON list of ``{id, mask}`` or a folder of PNGs (id = file stem)."""
    if path.is_dir():
        return {p.stem: {"id": p.stem, "mask": p.name} for p in sorted(path.glob("*.png"))}
    return _by_id(_load_json(path), path)


def _pair_sizes(pred: np.ndarray, gt: np.ndarray, eval_size: int | None, where: str):
    if eval_size:  # the official PIL NEAREST rule (REF.py / SEG.py), the same function as ``rsam test``
        size = (eval_size, eval_size)
        return resize_mask(pred, size), resize_mask(gt, size)
    if pred.shape != gt.shape:
        raise ValueError(
            f"{where}: prediction {pred.shape} and ground truth {gt.shape} differ in size "
            f"(pass --eval-size to compare both at one size)"
        )
    return pred, gt


def score_res(pred_path: Path, gt_path: Path, eval_size: int | None = None, **_) -> dict:
    pred, gt = _mask_entries(pred_path), _mask_entries(gt_path)
    metric = ReferringSegMetric()
    pred_base = pred_path if pred_path.is_dir() else pred_path.parent
    gt_base = gt_path if gt_path.is_dir() else gt_path.parent
    for key in _match_ids(pred, gt, pred_path):
        p = _read_mask(pred[key].get("mask"), pred_base, f"{pred_path} id {key}")
        g = _read_mask(gt[key].get("mask"), gt_base, f"{gt_path} id {key}")
        p, g = _pair_sizes(p, g, eval_size, f"id {key}")
        metric.update(p[None], g[None])
    return metric.compute()


def score_semseg(pred_path: Path, gt_path: Path, eval_size: int | None = None, **_) -> dict:
    pred_doc, gt_doc = _load_json(pred_path), _load_json(gt_path)
    classes = _check_classes(pred_doc.get("classes"), gt_doc.get("classes"), pred_path)
    ignore = gt_doc.get("ignore_index")
    metric = SemanticSegMetric(classes, ignore_index=ignore)
    pred, gt = _by_id(pred_doc.get("images"), pred_path), _by_id(gt_doc.get("images"), gt_path)
    for key in _match_ids(pred, gt, pred_path):
        p = _read_mask(pred[key].get("label"), pred_path.parent, f"{pred_path} id {key}")
        g = _read_mask(gt[key].get("label"), gt_path.parent, f"{gt_path} id {key}")
        p, g = _pair_sizes(p, g, eval_size, f"id {key}")
        if (p >= len(classes)).any() or (p < 0).any():
            raise ValueError(f"{pred_path} id {key}: labels outside [0, {len(classes)})")
        metric.update(p[None], g[None])
    return metric.compute()


# ---------------------------------------------------------------- boxes (det, obb)
def _number(value, where: str, what: str) -> float:
    """A finite JSON number (not a string, not a bool, not NaN / inf)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: {what} {value!r} is not a number")
    if not math.isfinite(value):
        raise ValueError(f"{where}: {what} {value!r} is not finite")
    return float(value)


def _xywh(value, where: str) -> list[float]:
    """A COCO ``bbox``: 4 finite numbers ``[x, y, w, h]``."""
    if not isinstance(value, list) or len(value) != 4:
        raise ValueError(f"{where}: bbox must be [x, y, w, h] (4 numbers), got {value!r}")
    return [_number(v, where, "bbox coordinate") for v in value]


def _coco_boxes(gt_doc: dict, gt_path: Path):
    if not isinstance(gt_doc, dict):
        raise ValueError(f"{gt_path}: expected a COCO object with 'images', 'annotations' and 'categories'")
    images = {img["id"]: img for img in gt_doc.get("images", [])}
    categories = sorted(gt_doc.get("categories", []), key=lambda c: c["id"])
    if not images or not categories:
        raise ValueError(f"{gt_path}: a COCO file needs 'images' and 'categories'")
    cat_index = {c["id"]: k for k, c in enumerate(categories)}
    truth = {image_id: ([], [], []) for image_id in images}
    for index, ann in enumerate(gt_doc.get("annotations", [])):
        where = f"{gt_path} annotation {ann.get('id', index) if isinstance(ann, dict) else index}"
        if not isinstance(ann, dict) or ann.get("image_id") not in images or ann.get("category_id") not in cat_index:
            raise ValueError(f"{where}: names an unknown image or category")
        x, y, w, h = _xywh(ann.get("bbox"), where)
        if w < 0 or h < 0:
            raise ValueError(f"{where}: bbox {ann['bbox']} has a negative width or height")
        truth[ann["image_id"]][0].append([x, y, w, h])
        truth[ann["image_id"]][1].append(cat_index[ann["category_id"]])
        truth[ann["image_id"]][2].append(int(bool(ann.get("iscrowd", 0))))
    return images, [c["name"] for c in categories], cat_index, truth


def _coco_predictions(pred_path: Path, images: dict, cat_index: dict, allow_empty: bool):
    entries = _load_json(pred_path)
    if not isinstance(entries, list):
        raise ValueError(f"{pred_path}: expected a COCO results list")
    if not entries and not allow_empty:
        raise ValueError(f"{pred_path}: the prediction set is empty (pass --allow-empty to score it as no detection)")
    preds: dict = {image_id: ([], [], []) for image_id in images}
    for index, det in enumerate(entries):
        where = f"{pred_path} item {index}"
        if not isinstance(det, dict) or not {"image_id", "category_id", "bbox", "score"} <= set(det):
            raise ValueError(f"{where}: needs image_id, category_id, bbox [x, y, w, h] and a numeric score")
        image_id, category = det["image_id"], det["category_id"]
        if image_id not in images:
            raise ValueError(f"{where}: unknown image_id {image_id!r}")
        if category not in cat_index:
            raise ValueError(f"{where}: unknown category_id {category!r}")
        x, y, w, h = _xywh(det["bbox"], where)
        score = _number(det["score"], where, "score")
        width, height = images[image_id].get("width"), images[image_id].get("height")
        if w <= 0 or h <= 0:
            raise ValueError(f"{where}: box {det['bbox']} must have positive width and height")
        if x < 0 or y < 0 or (width and x + w > width) or (height and y + h > height):
            raise ValueError(f"{where}: box {det['bbox']} lies outside the {width}x{height} image {image_id!r}")
        preds[image_id][0].append([x, y, w, h])
        preds[image_id][1].append(score)
        preds[image_id][2].append(cat_index[category])
    return preds


def _score_coco(pred_path: Path, gt_path: Path, allow_empty: bool) -> dict:
    """COCOeval on the files' own ``[x, y, w, h]`` numbers in float64, images in COCOeval's (sorted id) order."""
    images, names, cat_index, truth = _coco_boxes(_load_json(gt_path), gt_path)
    preds = _coco_predictions(pred_path, images, cat_index, allow_empty)
    metric = CocoDetectionMetric(names, box_format="xywh")
    for image_id in sorted(images):
        boxes, scores, labels = preds[image_id]
        gt_boxes, gt_labels, crowd = truth[image_id]
        metric.update(
            [
                {
                    "boxes": torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4),
                    "scores": torch.tensor(scores, dtype=torch.float64),
                    "labels": torch.tensor(labels, dtype=torch.long),
                }
            ],
            [
                {
                    "boxes": torch.tensor(gt_boxes, dtype=torch.float64).reshape(-1, 4),
                    "labels": torch.tensor(gt_labels, dtype=torch.long),
                    "iscrowd": torch.tensor(crowd, dtype=torch.long),
                }
            ],
        )
    return metric.compute()


PATCH_NAME = re.compile(r"^(?P<name>.+)__(?P<rate>[0-9.]+)__(?P<x>[0-9]+)___(?P<y>[0-9]+)$")


def _merge_patches(rows: list, box_kind: str, where: Path) -> list:
    """Devkit ``ResultMerge`` of patch-level rows ``(image, class, score, coords)``: names
    ``<image>__<rate>__<x>___<y>`` are shifted back to the full image, then NMS 0.3 per image and class."""
    groups: dict = {}
    for image, label, score, coords in rows:
        match = PATCH_NAME.match(image)
        if not match:
            raise ValueError(f"{where}: {image!r} is not a devkit patch name '<image>__<rate>__<x>___<y>'")
        rate, x, y = float(match["rate"]), int(match["x"]), int(match["y"])
        shifted = [(v + (x if k % 2 == 0 else y)) / rate for k, v in enumerate(coords)]
        groups.setdefault((match["name"], label), []).append((score, shifted))
    merged = []
    for (image, label), items in groups.items():
        boxes = Boxes(
            np.asarray([c for _, c in items]), np.asarray([s for s, _ in items]), "hbb" if box_kind == "hbb" else "obb"
        )
        kept = suppress_merged(boxes)
        merged.extend((image, label, float(sc), list(co)) for sc, co in zip(kept.scores, kept.coords))
    return merged


def _dota_predictions(
    pred_path: Path, box_kind: str, names: list[str], images: set[str], allow_empty: bool, merge_patches: bool
):
    """The ``Task1_<class>.txt`` (obb) or ``Task2_<class>.txt`` (hbb) files of a folder
    (:mod:`rsam.evaluation.dota_submission`)."""
    rows = read_submission(pred_path, "obb" if box_kind == "poly" else "hbb", names)
    if merge_patches:
        rows = _merge_patches(rows, box_kind, pred_path)
    preds: dict[str, list] = {image: [] for image in images}
    for image, label, score, coords in rows:
        if image not in preds:
            raise ValueError(f"{pred_path}: a prediction names unknown image {image!r}")
        preds[image].append((score, coords, label))
    if not rows and not allow_empty:
        raise ValueError(f"{pred_path}: the prediction set is empty (pass --allow-empty to score it as no detection)")
    return preds


def _score_dota(
    pred_path: Path,
    gt_path: Path,
    box_kind: str,
    classes: list[str] | None,
    allow_empty: bool,
    use_07_metric: bool,
    merge_patches: bool,
) -> dict:
    if not pred_path.is_dir():
        raise ValueError(
            f"{pred_path}: with a DOTA label folder as ground truth, predictions are a folder of "
            "Task1_<class>.txt (obb) / Task2_<class>.txt (hbb) files"
        )
    gt_files = sorted(gt_path.glob("*.txt"))
    if not gt_files:
        raise ValueError(f"{gt_path}: no DOTA label files")
    raw = {
        p.stem: [line.split() for line in p.read_text(encoding="utf-8").splitlines() if len(line.split()) >= 9]
        for p in gt_files
    }
    names = list(classes) if classes else sorted({fields[8] for rows in raw.values() for fields in rows})
    width = 8 if box_kind == "poly" else 4
    preds = _dota_predictions(pred_path, box_kind, names, set(raw), allow_empty, merge_patches)
    metric = VocDetectionMetric(names, box_kind=box_kind, use_07_metric=use_07_metric)
    for path in gt_files:
        target = parse_dota_txt(path, names, canonical=False)
        boxes = target.boxes if box_kind == "poly" else _extents(target.boxes)
        dets = preds[path.stem]
        metric.update(
            [
                {
                    "boxes": np.asarray([d[1] for d in dets]).reshape(-1, width),
                    "scores": np.asarray([d[0] for d in dets]),
                    "labels": np.asarray([d[2] for d in dets]),
                }
            ],
            [{"boxes": boxes.reshape(-1, width), "labels": target.labels, "difficult": target.difficult}],
        )
    return metric.compute()


def _extents(polys: np.ndarray) -> np.ndarray:
    if not len(polys):
        return np.zeros((0, 4))
    xs, ys = polys[:, 0::2], polys[:, 1::2]
    return np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], axis=1)


def score_det(
    pred_path: Path,
    gt_path: Path,
    allow_empty: bool = False,
    classes: list[str] | None = None,
    use_07_metric: bool = True,
    merge_patches: bool = False,
    **_,
) -> dict:
    if gt_path.is_dir():
        return _score_dota(pred_path, gt_path, "hbb", classes, allow_empty, use_07_metric, merge_patches)
    return _score_coco(pred_path, gt_path, allow_empty)


def score_obb(
    pred_path: Path,
    gt_path: Path,
    allow_empty: bool = False,
    classes: list[str] | None = None,
    use_07_metric: bool = True,
    merge_patches: bool = False,
    **_,
) -> dict:
    if not gt_path.is_dir():
        raise ValueError(f"{gt_path}: oriented-box ground truth is a folder of DOTA label files")
    return _score_dota(pred_path, gt_path, "poly", classes, allow_empty, use_07_metric, merge_patches)


# ---------------------------------------------------------------- per-id tasks (vg, mlc, mcc, count)
def _box(value, where: str, size=None):
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 4:
        raise ValueError(f"{where}: a box is [x1, y1, x2, y2] or null")
    x1, y1, x2, y2 = (_number(v, where, "box coordinate") for v in value)
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"{where}: box {value} needs x2 > x1 and y2 > y1")
    if size and (x1 < 0 or y1 < 0 or x2 > size[0] or y2 > size[1]):
        raise ValueError(f"{where}: box {value} lies outside the {size[0]}x{size[1]} image")
    return [x1, y1, x2, y2]


def score_vg(pred_path: Path, gt_path: Path, **_) -> dict:
    pred, gt = _by_id(_load_json(pred_path), pred_path), _by_id(_load_json(gt_path), gt_path)
    metric = GroundingMetric()
    for key in _match_ids(pred, gt, pred_path):
        size = (gt[key]["width"], gt[key]["height"]) if "width" in gt[key] and "height" in gt[key] else None
        target = _box(gt[key].get("box"), f"{gt_path} id {key}", size)
        if target is None:
            raise ValueError(f"{gt_path} id {key}: the ground-truth box is missing")
        metric.update([_box(pred[key].get("box"), f"{pred_path} id {key}", size)], [target])
    return metric.compute()


def _class_vector(entry: dict, classes: list[str], where: str, threshold: float) -> np.ndarray:
    if "scores" in entry:
        scores = np.asarray(entry["scores"], dtype=np.float64)
        if scores.shape != (len(classes),) or not np.all(np.isfinite(scores)):
            raise ValueError(f"{where}: 'scores' must hold {len(classes)} finite numbers")
        return scores > threshold
    labels = entry.get("labels")
    if not isinstance(labels, list):
        raise ValueError(f"{where}: give 'labels' (class names) or 'scores'")
    unknown = [name for name in labels if name not in classes]
    if unknown:
        raise ValueError(f"{where}: unknown classes {unknown}")
    return np.isin(np.asarray(classes), labels)


def score_mlc(pred_path: Path, gt_path: Path, threshold: float = 0.5, **_) -> dict:
    pred_doc, gt_doc = _load_json(pred_path), _load_json(gt_path)
    classes = _check_classes(pred_doc.get("classes"), gt_doc.get("classes"), pred_path)
    pred, gt = _by_id(pred_doc.get("samples"), pred_path), _by_id(gt_doc.get("samples"), gt_path)
    metric = MultiLabelAccuracy(classes)
    for key in _match_ids(pred, gt, pred_path):
        p = _class_vector(pred[key], classes, f"{pred_path} id {key}", threshold)
        g = _class_vector({"labels": gt[key].get("labels")}, classes, f"{gt_path} id {key}", threshold)
        metric.update(p[None], g[None])
    return metric.compute()


def _class_label(entry: dict, classes: list[str], where: str) -> int:
    if "scores" in entry:
        scores = np.asarray(entry["scores"], dtype=np.float64)
        if scores.shape != (len(classes),) or not np.all(np.isfinite(scores)):
            raise ValueError(f"{where}: 'scores' must hold {len(classes)} finite numbers")
        return int(np.argmax(scores))
    if entry.get("label") not in classes:
        raise ValueError(f"{where}: label {entry.get('label')!r} is not one of the classes")
    return classes.index(entry["label"])


def score_mcc(pred_path: Path, gt_path: Path, **_) -> dict:
    pred_doc, gt_doc = _load_json(pred_path), _load_json(gt_path)
    classes = _check_classes(pred_doc.get("classes"), gt_doc.get("classes"), pred_path)
    pred, gt = _by_id(pred_doc.get("samples"), pred_path), _by_id(gt_doc.get("samples"), gt_path)
    metric = SceneAccuracy(classes)
    for key in _match_ids(pred, gt, pred_path):
        metric.update(
            [_class_label(pred[key], classes, f"{pred_path} id {key}")],
            [_class_label({"label": gt[key].get("label")}, classes, f"{gt_path} id {key}")],
        )
    return metric.compute()


def _count(entry: dict, where: str) -> int:
    value = entry.get("count")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{where}: 'count' must be a non-negative integer, got {value!r}")
    return value


def score_count(pred_path: Path, gt_path: Path, **_) -> dict:
    pred, gt = _by_id(_load_json(pred_path), pred_path), _by_id(_load_json(gt_path), gt_path)
    metric = CountingAccuracy()
    for key in _match_ids(pred, gt, pred_path):
        metric.update([_count(pred[key], f"{pred_path} id {key}")], [_count(gt[key], f"{gt_path} id {key}")])
    return metric.compute()


# ---------------------------------------------------------------- captions
def _caption_references(gt_path: Path, split: str | None) -> dict:
    doc = _load_json(gt_path)
    refs: dict = {}
    if "annotations" in doc:  # COCO captions (CAP.py groundtruth.json)
        refs = {img["id"]: [] for img in doc.get("images", [])}
        for ann in doc["annotations"]:
            if ann.get("image_id") not in refs:
                raise ValueError(f"{gt_path}: caption {ann.get('id')} names unknown image {ann.get('image_id')!r}")
            refs[ann["image_id"]].append(str(ann["caption"]))
    elif "images" in doc:  # Karpathy dataset.json
        for item in doc["images"]:
            if split is None or item.get("split") == split:
                refs[item.get("imgid", item.get("filename"))] = [s["raw"] for s in item.get("sentences", [])]
    if not refs:
        raise ValueError(f"{gt_path}: no reference captions (COCO captions or Karpathy dataset.json expected)")
    return refs


def score_caption(pred_path: Path, gt_path: Path, split: str | None = None, meteor: bool = False, **_) -> dict:
    refs = _caption_references(gt_path, split)
    entries = _load_json(pred_path)
    pred = _by_id(entries, pred_path, id_key="image_id")
    by_key = {str(k): k for k in refs}
    _match_ids(pred, {str(k): v for k, v in refs.items()}, pred_path)
    hypotheses = {by_key[key]: str(entry.get("caption", "")) for key, entry in pred.items()}
    return caption_scores(refs, hypotheses, meteor=meteor)


SCORERS: dict[str, Callable[..., dict]] = {
    "res": score_res,
    "semseg": score_semseg,
    "det": score_det,
    "obb": score_obb,
    "vg": score_vg,
    "mlc": score_mlc,
    "mcc": score_mcc,
    "count": score_count,
    "caption": score_caption,
}


def score_files(task: str, pred_path: str | Path, gt_path: str | Path, **options) -> dict:
    """Score the prediction file(s) of ``task`` against the ground truth; ``options`` per task (see the CLI)."""
    if task not in SCORERS:
        raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    pred_path, gt_path = Path(pred_path), Path(gt_path)
    for path in (pred_path, gt_path):
        if not path.exists():
            raise FileNotFoundError(f"not found: {path}")
    result = SCORERS[task](pred_path, gt_path, **options)
    result["task"] = task
    return result


__all__ = ["SCORERS", "TASKS", "score_files"]
