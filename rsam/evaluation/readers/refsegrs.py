"""RefSegRS / RISBench release layout: ``output_phrase_{split}.txt`` lines ``"<id> <expression>"``, images
``<image_dir>/<id>.<ext>`` and masks ``<mask_dir>/<id>.<ext>`` (foreground = any non-zero value)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from rsam.evaluation.samples import Sample, find_image, read_raster


class PhraseReader:
    """RefSegRS / RISBench release layout (see module docstring)."""

    task = "res"
    class_names: tuple[str, ...] = ()

    def __init__(
        self,
        root: str | Path,
        split: str,
        image_dir: str = "images",
        mask_dir: str = "masks",
        phrase_file: str = "output_phrase_{split}.txt",
    ):
        self.root = Path(root)
        self.image_dir, self.mask_dir = self.root / image_dir, self.root / mask_dir
        path = self.root / phrase_file.format(split=split)
        self._items = []
        for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.strip().split(maxsplit=1)
            if len(parts) != 2:
                raise ValueError(f"{path}:{line_no}: expected '<id> <expression>', got {line!r}")
            self._items.append((line_no, parts[0], parts[1]))

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Sample]:
        for line_no, stem, text in self._items:
            mask = read_raster(find_image(self.mask_dir, stem), f"sample {line_no}:{stem}")
            if mask.ndim == 3:
                mask = mask.any(axis=2)
            yield Sample(
                key=f"{line_no}:{stem}",
                image_path=find_image(self.image_dir, stem),
                target=mask > 0,
                text=text,
                meta={"image_id": stem},
            )
