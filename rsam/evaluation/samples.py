"""Benchmark samples and boxes shared by the readers and the runner."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from rsam.preprocess import to_rgb_uint8
from rsam.tasks.prompts import canonical_class_name


@dataclass
class BoxTarget:
    """Boxes of one image: ``boxes`` ``(M, 4)`` ``x1 y1 x2 y2`` or ``(M, 8)`` polygons; ``labels`` class indices."""

    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray | None = None

    def __post_init__(self):
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        boxes = np.asarray(self.boxes, dtype=np.float64)
        self.boxes = boxes.reshape(len(self.labels), -1) if boxes.size else np.zeros((0, 4))
        self.difficult = (
            np.zeros(len(self.labels), bool) if self.difficult is None else np.asarray(self.difficult, dtype=bool)
        )


@dataclass
class Sample:
    """One evaluation item.

    ``target`` by task: res — bool mask ``(H, W)``; semseg — int label map ``(H, W)``; det / obb — :class:`BoxTarget`
    (``None`` for an image without ground truth, see :class:`rsam.evaluation.readers.dota.DotaReader`); vg — box
    ``[x1, y1, x2, y2]``; mlc — bool vector ``(C,)``; mcc — class index; count — int; caption — list of
    reference sentences. ``text``: the sentence (res, vg) or the class asked (count).
    """

    key: str
    image_path: Path
    target: Any
    text: str | None = None
    meta: dict = field(default_factory=dict)

    def load_image(self) -> np.ndarray:
        return to_rgb_uint8(self.image_path)


class Reader(Protocol):
    """What every benchmark reader offers."""

    task: str
    class_names: Sequence[str]

    def __iter__(self) -> Iterator[Sample]: ...

    def __len__(self) -> int: ...


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def find_image(folder: Path, stem: str, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> Path:
    """The image file ``folder/stem.<ext>`` (first extension that exists); a clear error when none does."""
    for ext in extensions:
        for candidate in (folder / f"{stem}{ext}", folder / f"{stem}{ext.upper()}"):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"no image named {stem}.* ({', '.join(extensions)}) in {folder}")


def class_index(name: str, class_names: Sequence[str], where: str, canonical: bool = True) -> int:
    """Index of ``name`` in ``class_names`` (after :func:`canonical_class_name` unless ``canonical=False``)."""
    wanted = canonical_class_name(name) if canonical else name
    try:
        return list(class_names).index(wanted)
    except ValueError:
        raise ValueError(f"{where}: class {name!r} is not one of the benchmark's classes") from None


def read_raster(path: Path, where: str, mode: str | None = None) -> np.ndarray:
    """A label / mask image as an array (``mode``: PIL conversion, e.g. ``"RGB"``); an empty, truncated or garbled
    file is one ``ValueError`` naming ``where`` and the path."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert(mode) if mode else img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"{where}: cannot read {path}: {err}") from None
