"""COCO-json detection annotations (the official DIOR protocol ``DIORcoco/Annotations/DIOR_test.json``; iSAID).

Only images with at least one annotation are evaluated (``data/datasets/DET.py`` builds its image list from the
annotations); class names are mapped to the official prompt spelling, an unknown one is an error naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from rsam.evaluation.samples import BoxTarget, Sample, class_index


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
