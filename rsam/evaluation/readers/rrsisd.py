"""Referring-segmentation readers: RRSIS-D-style ``refs(unc).p`` + ``instances.json`` and phrase-file folders.

``ReferReader`` follows the official eval path (``refer/refer.py`` + ``data/dataset_refer_bert.py``,
`official-protocol-quirks.md` A): refs keyed by ``ref_id``, one sample per sentence (``raw`` text), image file from the
``images`` table of ``instances.json``; the target keeps only pixels covered by **exactly one** segmentation part
(``sum == 1``, so overlaps of two parts are dropped and two identical parts give an empty target); polygons are
decoded with ``frPyObjects``. The refs pickle is untrusted and read with a restricted unpickler.
Rejected with an error naming the sample (the official reader accepts them silently): an RLE whose size differs from
the image, an uncompressed (list) or garbled RLE, an empty segmentation, a missing annotation, a ref without
sentences, an empty sentence.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from rsam.evaluation.samples import Sample
from rsam.safe_pickle import safe_load_pickle


def _decode_parts(segmentation, height: int, width: int, where: str) -> np.ndarray:
    """Decode a list of segmentation parts and keep pixels covered exactly once (official ``== 1`` rule)."""
    parts = [segmentation] if isinstance(segmentation, dict) else segmentation
    if not isinstance(parts, list) or not parts:
        raise ValueError(f"{where}: empty or malformed segmentation")
    if all(isinstance(p, list) for p in parts):
        if any(len(p) < 6 or len(p) % 2 for p in parts):
            raise ValueError(f"{where}: a polygon needs an even number (>= 6) of coordinates")
        rles = mask_utils.frPyObjects(parts, height, width)
    elif all(isinstance(p, dict) for p in parts):
        rles = []
        for part in parts:
            counts, size = part.get("counts"), part.get("size")
            if not isinstance(counts, (str, bytes)):
                raise ValueError(f"{where}: uncompressed or missing RLE counts are not accepted")
            if list(size or []) != [height, width]:
                raise ValueError(f"{where}: RLE size {size} differs from the image size {[height, width]}")
            rles.append({"size": [height, width], "counts": counts})
    else:
        raise ValueError(f"{where}: segmentation mixes polygons and RLEs")
    try:
        decoded = mask_utils.decode(rles)
    except Exception as err:
        raise ValueError(f"{where}: cannot decode RLE: {err}") from err
    coverage = decoded.reshape(height, width, -1).astype(np.int64).sum(axis=2)
    return coverage == 1


class ReferReader:
    """Samples of one split of a refs-pickle + instances.json referring set (RRSIS-D, RefSegRS, RISBench)."""

    task = "res"
    class_names: tuple[str, ...] = ()

    def __init__(self, refs_file: str | Path, instances_file: str | Path, image_dir: str | Path, split: str):
        self.image_dir = Path(image_dir)
        refs = safe_load_pickle(refs_file)
        if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
            raise ValueError(f"{refs_file}: expected a list of ref dicts")
        with open(instances_file, encoding="utf-8") as f:
            instances = json.load(f)
        self.images = {img["id"]: img for img in instances.get("images", [])}
        self.annotations = {ann["id"]: ann for ann in instances.get("annotations", [])}
        self.refs = [r for r in refs if r.get("split") == split]
        if not self.refs:
            splits = sorted({str(r.get("split")) for r in refs})
            raise ValueError(f"{refs_file}: no refs in split {split!r} (splits present: {splits})")
        self._items = []
        for ref in self.refs:
            sentences = ref.get("sentences") or []
            if not sentences:
                raise ValueError(f"ref {ref.get('ref_id')}: no sentences")
            for index, sentence in enumerate(sentences):
                text = str(sentence.get("raw", "")).strip()
                if not text:
                    raise ValueError(f"ref {ref.get('ref_id')} sentence {index}: empty sentence")
                self._items.append((ref, sentence.get("sent_id", index), text))

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Sample]:
        for ref, sent_id, text in self._items:
            key = f"{ref.get('ref_id')}:{sent_id}"
            ann = self.annotations.get(ref.get("ann_id"))
            if ann is None:
                raise ValueError(f"sample {key}: annotation {ref.get('ann_id')} is missing from instances.json")
            image = self.images.get(ref.get("image_id"))
            if image is None:
                raise ValueError(f"sample {key}: image {ref.get('image_id')} is missing from instances.json")
            mask = _decode_parts(ann.get("segmentation"), int(image["height"]), int(image["width"]), f"sample {key}")
            yield Sample(
                key=key,
                image_path=self.image_dir / image["file_name"],
                target=mask,
                text=text,
                meta={"ref_id": ref.get("ref_id"), "image_id": ref.get("image_id")},
            )
