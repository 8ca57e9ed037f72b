"""UCM / AID scene classification (``data/datasets/MCC.py``).

``SceneFolderReader``: one sub-folder per class (folder names may use the datasets' own spelling, e.g.
``baseballdiamond``, ``storagetanks``); ``SceneListReader``: lines ``relative/path<space>class``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from rsam.evaluation.samples import IMAGE_EXTENSIONS, Sample, class_index


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
