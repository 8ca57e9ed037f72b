"""DIOR-RSVG visual grounding (``data/datasets/VG.py``): XML files in sorted order, objects counted globally in file
order; the split file lists the global object indices to evaluate; box ``<bndbox>`` ints, sentence
``<description>``."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from rsam.evaluation.samples import Sample


class RsvgReader:
    task = "vg"
    class_names: tuple[str, ...] = ()

    def __init__(self, xml_dir: str | Path, image_dir: str | Path, split_file: str | Path):
        self.image_dir = Path(image_dir)
        wanted = {int(line) for line in Path(split_file).read_text(encoding="utf-8").split()}
        self._items = []
        counter = 0
        for path in sorted(Path(xml_dir).glob("*.xml")):
            root = ET.parse(path).getroot()
            filename = root.findtext("filename")
            for obj in root.findall("object"):
                if counter in wanted:
                    try:
                        box = [int(obj.find("bndbox").findtext(f)) for f in ("xmin", "ymin", "xmax", "ymax")]
                    except (AttributeError, TypeError, ValueError):
                        raise ValueError(f"{path}: object {counter} has a missing or non-integer <bndbox>") from None
                    text = (obj.findtext("description") or "").strip()
                    if not text or not filename:
                        raise ValueError(f"{path}: object {counter} has no <description> or the file no <filename>")
                    self._items.append((counter, filename, box, text))
                counter += 1
        missing = wanted - {item[0] for item in self._items}
        if missing:
            raise ValueError(f"{split_file}: {len(missing)} object indices do not exist (e.g. {sorted(missing)[:5]})")

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Sample]:
        for index, filename, box, text in self._items:
            yield Sample(key=str(index), image_path=self.image_dir / filename, target=np.asarray(box, float), text=text)
