"""DIOR / DIOR-R VOC-XML detection annotations: horizontal ``bndbox`` / oriented ``robndbox``.

Class names are mapped to the official prompt spelling (:func:`rsam.tasks.prompts.canonical_class_name`); a class
outside the benchmark's list is an error naming the file. Coordinates are kept as written (DIOR ``xmax``/``ymax`` are
used as the exclusive right/bottom edges, as the official COCO conversion ``[x, y, x + w, y + h]`` does).
``<difficult>`` is honoured when present.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from rsam.evaluation.samples import BoxTarget, Sample, class_index, find_image

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


def box_type_fields(box_type: str) -> tuple[str, tuple[str, ...]]:
    if box_type == "hbb":
        return "bndbox", BNDBOX_FIELDS
    if box_type == "obb":
        return "robndbox", ROBNDBOX_FIELDS
    raise ValueError(f"box_type must be 'hbb' or 'obb', got {box_type!r}")


def parse_dior_xml(path: Path, class_names: Sequence[str], box_type: str) -> tuple[str | None, BoxTarget]:
    """``(filename or None, boxes)`` of one DIOR annotation file."""
    tag, fields = box_type_fields(box_type)
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
        box_type_fields(box_type)
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
