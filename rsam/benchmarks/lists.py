"""Readers of list-style benchmarks: DIOR-RSVG grounding XML, multi-label and scene-classification lists,
Falcon-format counting JSON and UCM captions JSON.

* ``RsvgReader`` (``data/datasets/VG.py``): XML files in sorted order, objects counted globally in file order; the
  split file lists the global object indices to evaluate; box ``<bndbox>`` ints, sentence ``<description>``.
* ``MultiLabelTableReader``: a multi-hot table (UCM/AID multi-label style): header ``IMAGE<TAB>class...``, rows
  ``name<TAB>0/1...`` (tabs or commas); images ``<image_dir>/<name>.<ext>``.
* ``MultiLabelFromBoxesReader``: multi-hot targets from a detection reader (the official DIOR/DOTA MLC protocol builds
  them from the detection annotations).
* ``SceneFolderReader`` (``data/datasets/MCC.py``): one sub-folder per class (folder names may use the datasets' own
  spelling, e.g. ``baseballdiamond``, ``storagetanks``); ``SceneListReader``: lines ``relative/path<space>class``.
* ``CountingReader`` (``data/datasets/CNT.py``): Falcon conversation JSON, the class is what follows "the number of"
  in the question, the answer is the integer count; the image is looked up by basename in ``image_dir``.
* ``CaptionReader`` (``data/datasets/CAP.py``): Karpathy-style ``dataset.json`` (``images[].filename / imgid / split /
  sentences[].raw``).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from rsam.benchmarks.detection import class_index
from rsam.benchmarks.samples import Sample, find_image


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


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


class SceneFolderReader:
    task = "mcc"

    def __init__(self, root: str | Path, class_names: Sequence[str]):
        self.root, self.class_names = Path(root), tuple(class_names)
        self._items = []
        folders = sorted(p for p in self.root.iterdir() if p.is_dir())
        if not folders:
            raise FileNotFoundError(f"no class folders in {self.root}")
        for folder in folders:
            label = class_index(folder.name, self.class_names, f"folder {folder}")
            for path in sorted(folder.iterdir()):
                if path.suffix.lower() in IMAGE_EXTENSIONS:
                    self._items.append((path, label))

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Sample]:
        for path, label in self._items:
            yield Sample(key=f"{path.parent.name}/{path.name}", image_path=path, target=label)


class SceneListReader:
    task = "mcc"

    def __init__(self, list_file: str | Path, image_dir: str | Path, class_names: Sequence[str]):
        self.image_dir, self.class_names = Path(image_dir), tuple(class_names)
        self._items = []
        for line_no, line in enumerate(Path(list_file).read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.strip().rsplit(maxsplit=1)
            if len(parts) != 2:
                raise ValueError(f"{list_file}:{line_no}: expected '<image path> <class>'")
            self._items.append((parts[0], class_index(parts[1], self.class_names, f"{list_file}:{line_no}")))

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Sample]:
        for rel, label in self._items:
            yield Sample(key=rel, image_path=self.image_dir / rel, target=label)


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
