"""Detection readers: DIOR VOC-XML (horizontal ``bndbox`` / oriented ``robndbox``), COCO json, DOTA text boxes.

Class names are mapped to the official prompt spelling (:func:`rsam.tasks.prompts.canonical_class_name`); a class
outside the benchmark's list is an error naming the file. Coordinates are kept as written (DIOR ``xmax``/``ymax`` are
used as the exclusive right/bottom edges, as the official COCO conversion ``[x, y, x + w, y + h]`` does).

* ``DiorXmlReader``: ``<object><name>`` + ``<bndbox><xmin>..`` (hbb) or ``<robndbox><x_left_top>..`` (obb, DIOR-R);
  ``<difficult>`` honoured when present.
* ``CocoDetectionReader``: the official DIOR protocol (``DIORcoco/Annotations/DIOR_test.json``); only images with at
  least one annotation are evaluated (``data/datasets/DET.py`` builds its image list from the annotations).
* ``DotaReader``: one ``<image>.txt`` per image, lines ``x1 y1 x2 y2 x3 y3 x4 y4 class [difficult]``; header lines
  (``imagesource:``, ``gsd:``) and other short lines are skipped as in the devkit's ``parse_dota_poly``; horizontal
  boxes are the polygon's extents. ``skip_empty`` drops images without any box.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from rsam.benchmarks.samples import BoxTarget, Sample, find_image
from rsam.tasks.prompts import canonical_class_name

ROBNDBOX_FIELDS = (
    "x_left_top",
    "y_left_top",
    "x_right_top",
    "y_right_top",
    "x_right_bottom",
    "y_right_bottom",
    "x_left_bottom",
    "y_left_bottom",
)
BNDBOX_FIELDS = ("xmin", "ymin", "xmax", "ymax")


def class_index(name: str, class_names: Sequence[str], where: str, canonical: bool = True) -> int:
    """Index of ``name`` in ``class_names`` (after :func:`canonical_class_name` unless ``canonical=False``)."""
    wanted = canonical_class_name(name) if canonical else name
    try:
        return list(class_names).index(wanted)
    except ValueError:
        raise ValueError(f"{where}: class {name!r} is not one of the benchmark's classes") from None


def _box_type_fields(box_type: str) -> tuple[str, tuple[str, ...]]:
    if box_type == "hbb":
        return "bndbox", BNDBOX_FIELDS
    if box_type == "obb":
        return "robndbox", ROBNDBOX_FIELDS
    raise ValueError(f"box_type must be 'hbb' or 'obb', got {box_type!r}")


def parse_dior_xml(path: Path, class_names: Sequence[str], box_type: str) -> tuple[str | None, BoxTarget]:
    """``(filename or None, boxes)`` of one DIOR annotation file."""
    tag, fields = _box_type_fields(box_type)
    root = ET.parse(path).getroot()
    boxes, labels, difficult = [], [], []
    for obj in root.findall("object"):
        name = obj.findtext("name")
        if name is None:
            raise ValueError(f"{path}: an <object> has no <name>")
        node = obj.find(tag)
        if node is None:
            raise ValueError(f"{path}: object {name!r} has no <{tag}>")
        try:
            boxes.append([float(node.findtext(f)) for f in fields])
        except (TypeError, ValueError):
            raise ValueError(f"{path}: object {name!r} has a missing or non-numeric <{tag}> field") from None
        labels.append(class_index(name, class_names, str(path)))
        difficult.append(int(obj.findtext("difficult") or 0) == 1)
    return root.findtext("filename"), BoxTarget(np.asarray(boxes), labels, difficult)


class DiorXmlReader:
    task = "det"

    def __init__(
        self,
        xml_dir: str | Path,
        image_dir: str | Path,
        class_names: Sequence[str],
        *,
        box_type: str = "hbb",
        image_ids: Sequence[str] | None = None,
        skip_empty: bool = True,
    ):
        self.xml_dir, self.image_dir = Path(xml_dir), Path(image_dir)
        self.class_names, self.box_type, self.skip_empty = tuple(class_names), box_type, skip_empty
        self.task = "det" if box_type == "hbb" else "obb"
        _box_type_fields(box_type)
        ids = sorted(p.stem for p in self.xml_dir.glob("*.xml")) if image_ids is None else list(image_ids)
        if not ids:
            raise FileNotFoundError(f"no annotation files in {self.xml_dir}")
        self.image_ids = ids

    def __len__(self) -> int:
        return len(self.image_ids)

    def __iter__(self) -> Iterator[Sample]:
        for image_id in self.image_ids:
            filename, target = parse_dior_xml(self.xml_dir / f"{image_id}.xml", self.class_names, self.box_type)
            if self.skip_empty and len(target.labels) == 0:
                continue
            path = self.image_dir / filename if filename else find_image(self.image_dir, image_id)
            yield Sample(key=image_id, image_path=path, target=target)


class CocoDetectionReader:
    task = "det"

    def __init__(
        self, json_file: str | Path, image_dir: str | Path, class_names: Sequence[str], *, skip_empty: bool = True
    ):
        self.image_dir, self.class_names = Path(image_dir), tuple(class_names)
        with open(json_file, encoding="utf-8") as f:
            data = json.load(f)
        categories = {
            c["id"]: class_index(c["name"], self.class_names, f"{json_file} categories")
            for c in data.get("categories", [])
        }
        self.images = {img["id"]: img for img in data.get("images", [])}
        self.boxes: dict = {image_id: ([], []) for image_id in self.images}
        for ann in data.get("annotations", []):
            if ann["image_id"] not in self.images:
                raise ValueError(f"{json_file}: annotation {ann.get('id')} names unknown image {ann['image_id']}")
            if ann["category_id"] not in categories:
                raise ValueError(f"{json_file}: annotation {ann.get('id')} has unknown category {ann['category_id']}")
            x, y, w, h = (float(v) for v in ann["bbox"])
            self.boxes[ann["image_id"]][0].append([x, y, x + w, y + h])
            self.boxes[ann["image_id"]][1].append(categories[ann["category_id"]])
        self.order = sorted(
            (i for i in self.images if self.boxes[i][1] or not skip_empty), key=lambda i: self.images[i]["file_name"]
        )

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[Sample]:
        for image_id in self.order:
            boxes, labels = self.boxes[image_id]
            yield Sample(
                key=str(image_id),
                image_path=self.image_dir / self.images[image_id]["file_name"],
                target=BoxTarget(np.asarray(boxes), labels),
                meta={"image_id": image_id},
            )


def parse_dota_txt(path: Path, class_names: Sequence[str], canonical: bool = True) -> BoxTarget:
    polys, labels, difficult = [], [], []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if len(fields) < 9:
            continue  # 'imagesource:...', 'gsd:...' headers and blank lines, as parse_dota_poly
        try:
            polys.append([float(v) for v in fields[:8]])
        except ValueError:
            raise ValueError(f"{path}:{line_no}: non-numeric coordinates in {line!r}") from None
        labels.append(class_index(fields[8], class_names, f"{path}:{line_no}", canonical))
        difficult.append(len(fields) > 9 and fields[9] not in ("0",))
    return BoxTarget(np.asarray(polys), labels, difficult)


class DotaReader:
    task = "obb"

    def __init__(
        self,
        label_dir: str | Path,
        image_dir: str | Path,
        class_names: Sequence[str],
        *,
        box_type: str = "obb",
        skip_empty: bool = False,
    ):
        _box_type_fields(box_type)
        self.label_dir, self.image_dir = Path(label_dir), Path(image_dir)
        self.class_names, self.box_type, self.skip_empty = tuple(class_names), box_type, skip_empty
        self.task = "obb" if box_type == "obb" else "det"
        self.files = sorted(self.label_dir.glob("*.txt"))
        if not self.files:
            raise FileNotFoundError(f"no DOTA label files in {self.label_dir}")

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterator[Sample]:
        for path in self.files:
            target = parse_dota_txt(path, self.class_names)
            if self.skip_empty and len(target.labels) == 0:
                continue
            if self.box_type == "hbb" and len(target.labels):
                xs, ys = target.boxes[:, 0::2], target.boxes[:, 1::2]
                target = BoxTarget(
                    np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], 1), target.labels, target.difficult
                )
            yield Sample(key=path.stem, image_path=find_image(self.image_dir, path.stem), target=target)
