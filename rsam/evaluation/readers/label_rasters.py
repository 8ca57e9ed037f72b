"""Semantic-segmentation label rasters: RGB palettes (iSAID, Potsdam) and index maps (LoveDA).

Conventions: ``class_names[0]`` is the background — the class no prompt claims (label 0 of the official merge) — and
the other classes are prompted in order, so label ``k`` of the merged prediction is ``class_names[k]``.

* iSAID (``tasks/code/eval/SEG.py``): RGB palette of 15 classes, **colours not in the palette become background**
  (``unknown_colors="background"``, the official rule) — or an error with ``unknown_colors="error"``.
* Potsdam (ISPRS): RGB palette of 6 classes; clutter/background (255, 0, 0) is taken as class 0 (no official script).
* LoveDA: single-channel values 0..7, 0 = no-data (ignored, ``ignore_index``), 1 = background, ... (no official
  script).

Pairing: each label file ``<stem><label_suffix>.<ext>`` pairs with the image ``<stem>.<ext>`` in ``image_dir``.
The official iSAID script takes the image named by the first five characters of the label name; that quirk is not
reproduced (it maps every patch of a scene to the same image).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from rsam.evaluation.samples import Sample, find_image, read_raster

IGNORE_INDEX = 255

ISAID_PALETTE: dict[tuple[int, int, int], int] = {
    (0, 0, 63): 1,
    (0, 63, 63): 2,
    (0, 63, 0): 3,
    (0, 63, 127): 4,
    (0, 63, 191): 5,
    (0, 63, 255): 6,
    (0, 127, 63): 7,
    (0, 127, 127): 8,
    (0, 0, 127): 9,
    (0, 0, 191): 10,
    (0, 0, 255): 11,
    (0, 191, 127): 12,
    (0, 127, 191): 13,
    (0, 127, 255): 14,
    (0, 100, 155): 15,
}  # SEG.py cat_dictionary; black (0, 0, 0) and any other colour -> 0
POTSDAM_PALETTE: dict[tuple[int, int, int], int] = {
    (255, 0, 0): 0,
    (255, 255, 255): 1,
    (0, 0, 255): 2,
    (0, 255, 255): 3,
    (0, 255, 0): 4,
    (255, 255, 0): 5,
}
POTSDAM_SEG_CLASSES = ("clutter", "impervious surfaces", "building", "low vegetation", "tree", "car")
LOVEDA_VALUES: dict[int, int] = {0: IGNORE_INDEX, 1: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5, 7: 6}


def decode_palette(
    rgb: np.ndarray, palette: Mapping[tuple[int, int, int], int], unknown: str, where: str
) -> np.ndarray:
    """RGB label raster -> class indices. ``unknown``: "background" (-> 0) or "error"."""
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"{where}: expected an RGB label image, got shape {rgb.shape}")
    code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2].astype(np.int64)
    labels = np.zeros(code.shape, dtype=np.int64)
    known = np.zeros(code.shape, dtype=bool)
    for (r, g, b), index in palette.items():
        hit = code == ((r << 16) | (g << 8) | b)
        labels[hit] = index
        known |= hit
    if unknown == "error" and not known.all():
        colours = {tuple(int(v) for v in rgb[y, x, :3]) for y, x in zip(*np.nonzero(~known))}
        raise ValueError(f"{where}: colours not in the palette: {sorted(colours)[:5]}")
    return labels


def decode_values(raw: np.ndarray, values: Mapping[int, int] | None, where: str) -> np.ndarray:
    """Single-channel label raster -> class indices through ``values`` (identity when ``None``)."""
    if raw.ndim != 2:
        raise ValueError(f"{where}: expected a single-channel label image, got shape {raw.shape}")
    raw = raw.astype(np.int64)
    if values is None:
        return raw
    labels = np.full(raw.shape, -1, dtype=np.int64)
    for value, index in values.items():
        labels[raw == value] = index
    if (labels < 0).any():
        raise ValueError(f"{where}: label values without a class: {sorted(set(raw[labels < 0].tolist()))[:10]}")
    return labels


class SegmentationReader:
    """Pairs of image / label raster in two folders (see module docstring)."""

    task = "semseg"

    def __init__(
        self,
        image_dir: str | Path,
        label_dir: str | Path,
        class_names: Sequence[str],
        *,
        palette: Mapping[tuple[int, int, int], int] | None = None,
        values: Mapping[int, int] | None = None,
        unknown_colors: str = "background",
        label_suffix: str = "",
        ignore_index: int | None = None,
    ):
        if unknown_colors not in ("background", "error"):
            raise ValueError("unknown_colors must be 'background' or 'error'")
        self.image_dir, self.label_dir = Path(image_dir), Path(label_dir)
        self.class_names = tuple(class_names)
        self.palette, self.values, self.unknown_colors = palette, values, unknown_colors
        self.label_suffix, self.ignore_index = label_suffix, ignore_index
        self.labels = sorted(
            p for p in self.label_dir.iterdir() if p.suffix.lower() in (".png", ".tif", ".tiff", ".bmp")
        )
        if not self.labels:
            raise FileNotFoundError(f"no label rasters in {self.label_dir}")

    def __len__(self) -> int:
        return len(self.labels)

    def _stem(self, path: Path) -> str:
        stem = path.stem
        if self.label_suffix:
            if not stem.endswith(self.label_suffix):
                raise ValueError(f"label {path.name} does not end with {self.label_suffix!r}")
            stem = stem[: -len(self.label_suffix)]
        return stem

    def __iter__(self) -> Iterator[Sample]:
        for path in self.labels:
            raw = read_raster(path, "label raster", "RGB" if self.palette is not None else None)
            if self.palette is not None:
                labels = decode_palette(raw, self.palette, self.unknown_colors, str(path))
            else:
                labels = decode_values(raw, self.values, str(path))
            stem = self._stem(path)
            yield Sample(
                key=stem, image_path=find_image(self.image_dir, stem), target=labels, meta={"label_path": str(path)}
            )
