"""DOTA submission files: ``Task1_<class>.txt`` (oriented) and ``Task2_<class>.txt`` (horizontal), one per class.

The DOTA evaluation server takes, per class, one line per detection on the **original** images (patches merged back
with the devkit's ``ResultMerge`` rule: shift by the patch origin, NMS 0.3 per image and class — done by
:func:`rsam.tasks.tiling.detect_tiled`)::

    Task1_<class>.txt   <image> <score> x1 y1 x2 y2 x3 y3 x4 y4        (the 4 corners of the oriented box)
    Task2_<class>.txt   <image> <score> xmin ymin xmax ymax            (the horizontal box)

These are the layouts of the DOTA server's task pages (captain-whu.github.io/DOTA/tasks.html). The official
``tasks/code/eval/DET_DOTA.py`` writes its patch-level Task2 lines as 4 corners instead
(``pts = [x1, y1, x2, y1, x2, y2, x1, y2]``), which the server's 4-value Task2 parser would misread; that layout is
accepted when reading. Numbers are written as Python writes a float (``str(float(v))``, as DET_DOTA.py and the
devkit's ``ResultMerge`` do), so reading a file back gives the very values written. Lines are sorted by image name,
then by descending score. Files are named with the DOTA server's class names (``Task1_plane.txt``,
``Task2_storage-tank.txt``: the devkit's spelling, :data:`DOTA_FILE_NAMES`), which is also the spelling of the DOTA
label files. From horizontal detections (``dota-v2-det``) Task1 holds the same boxes as axis-aligned polygons; from
oriented detections (``dota-v2-obb``) Task2 holds the extents of the merged polygons.

Reading (``rsam score --task det|obb`` on a folder of these files): ``det`` reads the ``Task2_*`` files — 4 values
``xmin ymin xmax ymax`` (the server's layout) or 8 values (the DET_DOTA.py layout, which must be an axis-aligned
rectangle) — and ``obb`` the ``Task1_*`` files. Every number must be finite; every problem is an error naming
the file and line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from rsam.tasks.m2b import Boxes
from rsam.tasks.prompts import canonical_class_name

TASK_PREFIX = {"obb": "Task1", "hbb": "Task2"}
# the DOTA server's class names where the official prompt spelling differs (DOTA-v2 devkit ``wordname_18``)
DOTA_FILE_NAMES = {
    "airplane": "plane",
    "storagetank": "storage-tank",
    "baseballfield": "baseball-diamond",
    "tenniscourt": "tennis-court",
    "basketballcourt": "basketball-court",
    "groundtrackfield": "ground-track-field",
}


def official_float(value) -> str:
    """A number as the official scripts write it: ``str(float(v))`` (shortest repr that reads back exactly)."""
    return str(float(value))


def hbb_corners(hbb: np.ndarray) -> np.ndarray:
    """``(N, 4)`` ``x1 y1 x2 y2`` -> ``(N, 8)`` corners ``x1 y1 x2 y1 x2 y2 x1 y2`` (DET_DOTA.py order)."""
    x1, y1, x2, y2 = (hbb[:, k] for k in range(4))
    return np.stack([x1, y1, x2, y1, x2, y2, x1, y2], axis=1)


class DotaSubmission:
    """Merged whole-image detections per task and class; :meth:`write` puts them in submission files."""

    def __init__(self, class_names: Sequence[str]):
        self.class_names = list(class_names)
        self.rows: dict[str, dict[str, list[tuple[str, float, list[float]]]]] = {
            task: {name: [] for name in self.class_names} for task in TASK_PREFIX
        }

    def add(self, image: str, found: Mapping[str, Boxes]) -> None:
        """The detections of one original image (``found[class]``: merged boxes, hbb or obb)."""
        if any(ch.isspace() for ch in image) or not image:
            raise ValueError(f"DOTA image name {image!r} must be non-empty without spaces")
        for name, boxes in found.items():
            if name not in self.rows["obb"]:
                raise ValueError(f"class {name!r} is not one of the submission's classes")
            hbb = boxes.as_hbb()
            polys = boxes.coords if boxes.box_type == "obb" else hbb_corners(hbb)
            for score, poly, box in zip(boxes.scores, polys, hbb):
                self.rows["obb"][name].append((image, float(score), [float(v) for v in poly]))
                self.rows["hbb"][name].append((image, float(score), [float(v) for v in box]))

    def merge(self, other: DotaSubmission) -> None:
        """Add another rank's rows."""
        for task, per_class in other.rows.items():
            for name, rows in per_class.items():
                self.rows[task][name].extend(rows)

    def write(self, out_dir: str | Path) -> list[Path]:
        """Write ``Task1_<class>.txt`` and ``Task2_<class>.txt`` for every class (empty files for classes without
        a detection) into ``out_dir``; returns the paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for task, prefix in TASK_PREFIX.items():
            for name in self.class_names:
                rows = sorted(self.rows[task][name], key=lambda row: (row[0], -row[1]))
                path = out / f"{prefix}_{DOTA_FILE_NAMES.get(name, name)}.txt"
                lines = [
                    " ".join([image, official_float(score), *map(official_float, coords)])
                    for image, score, coords in rows
                ]
                path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
                written.append(path)
        return written


def _finite(token: str, where: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise ValueError(f"{where}: {token!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: {token!r} is not a finite number")
    return value


def parse_line(line: str, task: str, where: str) -> tuple[str, float, list[float]] | None:
    """``(image, score, coords)`` of one submission line (``None`` for a blank line); ``coords`` are 8 polygon
    values for ``obb`` and ``x1 y1 x2 y2`` for ``hbb``."""
    fields = line.split()
    if not fields:
        return None
    counts = (8,) if task == "obb" else (8, 4)
    if len(fields) - 2 not in counts:
        layouts = " or ".join(str(n) for n in counts)
        raise ValueError(f"{where}: expected '<image> <score>' and {layouts} coordinates, got {len(fields)} fields")
    score = _finite(fields[1], f"{where} score")
    coords = [_finite(v, f"{where} coordinate") for v in fields[2:]]
    if task == "obb":
        return fields[0], score, coords
    if len(coords) == 8:
        x1, y1, x2, y1b, x2b, y2, x1b, y2b = coords
        if (x1, x2, y1, y2) != (x1b, x2b, y1b, y2b):
            raise ValueError(f"{where}: a Task2 line must be the axis-aligned corners x1 y1 x2 y1 x2 y2 x1 y2")
        coords = [x1, y1, x2, y2]
    if coords[2] < coords[0] or coords[3] < coords[1]:
        raise ValueError(f"{where}: box {coords} needs x2 >= x1 and y2 >= y1")
    return fields[0], score, coords


def read_submission(folder: str | Path, task: str, class_names: Sequence[str]) -> list[tuple[str, int, float, list]]:
    """Rows ``(image, class index, score, coords)`` of the ``Task1_*`` (obb) or ``Task2_*`` (hbb) files in
    ``folder``. A file's class matches ``class_names`` as written or in any spelling of the same class
    (``plane`` / ``airplane``, :func:`rsam.tasks.prompts.canonical_class_name`); a non-empty file of any other
    class is an error."""
    if task not in TASK_PREFIX:
        raise ValueError(f"task must be 'obb' or 'hbb', got {task!r}")
    names = list(class_names)
    canonical = [canonical_class_name(n) for n in names]
    rows = []
    for path in sorted(Path(folder).glob(f"{TASK_PREFIX[task]}_*.txt")):
        name, text = path.stem.split("_", 1)[1], path.read_text(encoding="utf-8")
        if name in names:
            label = names.index(name)
        elif canonical_class_name(name) in canonical:
            label = canonical.index(canonical_class_name(name))
        elif not text.strip():
            continue  # an empty file of a class the ground truth does not hold: nothing to score
        else:
            raise ValueError(f"{path}: class {name!r} is not in the ground truth's classes {names}")
        for line_no, line in enumerate(text.splitlines(), start=1):
            parsed = parse_line(line, task, f"{path}:{line_no}")
            if parsed is not None:
                rows.append((parsed[0], label, parsed[1], parsed[2]))
    return rows
