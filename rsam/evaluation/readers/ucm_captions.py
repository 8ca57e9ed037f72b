"""UCM captions (``data/datasets/CAP.py``): Karpathy-style ``dataset.json`` (``images[].filename / imgid / split /
sentences[].raw``)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from rsam.evaluation.samples import Sample


class CaptionReader:
    task = "caption"

    def __init__(self, json_file: str | Path, image_dir: str | Path, split: str, class_names: Iterable[str]):
        self.image_dir, self.class_names = Path(image_dir), tuple(class_names)
        with open(json_file, encoding="utf-8") as f:
            data = json.load(f)
        self._items = []
        for item in data.get("images", []):
            if item.get("split") != split:
                continue
            refs = [s["raw"] for s in item.get("sentences", []) if str(s.get("raw", "")).strip()]
            if not refs:
                raise ValueError(f"{json_file}: image {item.get('filename')} has no reference caption")
            self._items.append((item["filename"], item.get("imgid", item["filename"]), refs))
        if not self._items:
            raise ValueError(f"{json_file}: no images in split {split!r}")
        self._items.sort(key=lambda entry: entry[0])

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Sample]:
        for filename, image_id, refs in self._items:
            yield Sample(key=str(image_id), image_path=self.image_dir / filename, target=refs)
