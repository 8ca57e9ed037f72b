"""Multi-label classification targets.

* ``MultiLabelTableReader``: a multi-hot table (UCM/AID multi-label style): header ``IMAGE<TAB>class...``, rows
  ``name<TAB>0/1...`` (tabs or commas); images ``<image_dir>/<name>.<ext>``.
* ``MultiLabelFromBoxesReader``: multi-hot targets from a detection reader (the official DIOR / DOTA-v2 MLC protocol
  builds them from the detection annotations).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from rsam.evaluation.samples import Sample, class_index, find_image


class MultiLabelTableReader:
    task = "mlc"

    def __init__(self, table: str | Path, image_dir: str | Path, class_names: Sequence[str] | None = None):
        self.image_dir = Path(image_dir)
        rows = [
            re.split(r"[\t,]", line.strip())
            for line in Path(table).read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
        if len(rows) < 2:
            raise ValueError(f"{table}: expected a header and at least one row")
        header = [h.strip() for h in rows[0][1:]]
        columns = [class_index(h, header if class_names is None else class_names, f"{table} header") for h in header]
        self.class_names = tuple(header if class_names is None else class_names)
        self._items = []
        for line_no, row in enumerate(rows[1:], start=2):
            if len(row) != len(header) + 1 or any(v.strip() not in ("0", "1") for v in row[1:]):
                raise ValueError(f"{table}:{line_no}: expected a name and {len(header)} 0/1 values")
            target = np.zeros(len(self.class_names), dtype=bool)
            target[[c for c, v in zip(columns, row[1:]) if v.strip() == "1"]] = True
            self._items.append((row[0].strip(), target))

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Sample]:
        for name, target in self._items:
            yield Sample(key=name, image_path=find_image(self.image_dir, name), target=target)


class MultiLabelFromBoxesReader:
    """Multi-hot targets from any detection reader (official DIOR / DOTAv2 MLC protocol)."""

    task = "mlc"

    def __init__(self, detection_reader):
        self.reader = detection_reader
        self.class_names = tuple(detection_reader.class_names)

    def __len__(self) -> int:
        return len(self.reader)

    def __iter__(self) -> Iterator[Sample]:
        for sample in self.reader:
            target = np.zeros(len(self.class_names), dtype=bool)
            target[np.asarray(sample.target.labels, dtype=np.int64)] = True
            yield Sample(key=sample.key, image_path=sample.image_path, target=target, meta=sample.meta)
