"""Falcon-format counting conversations (DIOR / DOTA counting, ``data/datasets/CNT.py``): the class is what follows
"the number of" in the question, the answer is the integer count; the image is looked up by basename in
``image_dir``."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from rsam.evaluation.samples import Sample, class_index


class CountingReader:
    task = "count"

    def __init__(self, json_file: str | Path, image_dir: str | Path, class_names: Sequence[str]):
        self.image_dir, self.class_names = Path(image_dir), tuple(class_names)
        with open(json_file, encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, list):
            raise ValueError(f"{json_file}: expected a list of conversations")
        self._items = []
        for index, item in enumerate(data):
            where = f"{json_file} item {index}"
            try:
                question = item["conversations"][0]["content"]
                answer = item["conversations"][1]["content"]
                image = Path(item["images"][0]).name
            except (KeyError, IndexError, TypeError):
                raise ValueError(f"{where}: expected images[0] and two conversation turns") from None
            if "the number of" not in question:
                raise ValueError(f"{where}: question does not ask 'the number of ...': {question!r}")
            raw = question.split("the number of")[-1].split(".")[0].strip()
            label = class_index(raw, self.class_names, where)
            try:
                count = int(str(answer).strip())
            except ValueError:
                raise ValueError(f"{where}: answer {answer!r} is not an integer count") from None
            self._items.append((index, image, self.class_names[label], count))

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Sample]:
        for index, image, name, count in self._items:
            yield Sample(key=str(index), image_path=self.image_dir / image, target=count, text=name)
