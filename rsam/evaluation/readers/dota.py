"""DOTA label files: one ``<image>.txt`` per image, lines ``x1 y1 x2 y2 x3 y3 x4 y4 class [difficult]``.

Header lines (``imagesource:``, ``gsd:``) and other short lines are skipped as in the devkit's ``parse_dota_poly``;
horizontal boxes are the polygon's extents. ``skip_empty`` drops images without any box.

``labels_required=False`` (the DOTA detection benchmarks, whose test-dev split has no public labels): without a label
folder every image of ``image_dir`` is a sample without ground truth (``target=None``) — the run then writes the
DOTA submission files and computes no metric.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from rsam.evaluation.readers.dior import box_type_fields
from rsam.evaluation.samples import IMAGE_EXTENSIONS, BoxTarget, Sample, class_index, find_image

log = logging.getLogger(__name__)


def parse_dota_txt(path: Path, class_names: Sequence[str], canonical: bool = True) -> BoxTarget:
    polys, labels, difficult = [], [], []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if len(fields) < 9:
            continue  # 'imagesource:...', 'gsd:...' headers and blank lines, as parse_dota_poly
        try:
            poly = [float(v) for v in fields[:8]]
        except ValueError:
            raise ValueError(f"{path}:{line_no}: non-numeric coordinates in {line!r}") from None
        if not all(math.isfinite(v) for v in poly):
            raise ValueError(f"{path}:{line_no}: coordinates must be finite numbers, got {line!r}")
        polys.append(poly)
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
        labels_required: bool = True,
    ):
        box_type_fields(box_type)
        self.label_dir, self.image_dir = Path(label_dir), Path(image_dir)
        self.class_names, self.box_type, self.skip_empty = tuple(class_names), box_type, skip_empty
        self.task = "obb" if box_type == "obb" else "det"
        self.labelled = labels_required or self.label_dir.is_dir()
        if not self.labelled:
            self.images = sorted(p for p in self.image_dir.glob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not self.images:
                raise FileNotFoundError(f"no label folder {self.label_dir} and no images in {self.image_dir}")
            log.warning("no DOTA label folder %s: %d images without ground truth", self.label_dir, len(self.images))
            return
        self.files = sorted(self.label_dir.glob("*.txt"))
        if not self.files:
            raise FileNotFoundError(f"no DOTA label files in {self.label_dir}")

    def __len__(self) -> int:
        return len(self.files) if self.labelled else len(self.images)

    def __iter__(self) -> Iterator[Sample]:
        if not self.labelled:
            for path in self.images:
                yield Sample(key=path.stem, image_path=path, target=None)
            return
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
