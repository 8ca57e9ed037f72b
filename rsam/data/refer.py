"""``rsam data from-refer``: the RemoteSAM-270K / RRSIS-D (RMSIN ``refer``) layout -> shards.

Inputs (spec ``remotesam.md`` §1.6, ``official-protocol-quirks.md`` A):

- ``refs(unc).p``: a pickled list of ref dicts (``split``, ``ann_id``, ``image_id``, ``file_name``, ``category_id``,
  ``sentences[*].sent|raw``). The file is untrusted: it is read with the restricted unpickler of
  :mod:`rsam.safe_pickle`, which refuses every global but the plain-container constructors, so nothing in the pickle
  can execute code.
- ``instances.json``: COCO-style; ``annotations[*].segmentation`` is a list of RLEs or polygons (one RLE dict is
  accepted too). Uncompressed RLE is rejected, as by both official readers.
- An image folder. The named file wins; if it is missing, ``.png`` is retried as ``.jpg`` and vice versa, exactly as
  the official training reader does (``X.JPG`` -> ``X.png``).

Masks follow the official rule: pixels covered by exactly one segmentation part. One job per (ref, sentence):
``--sentences first`` emits ``sentences[0]`` as the official trainer, ``all`` every sentence as the official eval
reader. Unlike the official training reader (keyed by ``ann_id``, later refs overwrite earlier ones), every ref is
kept. Kind: an empty mask is ``one-to-zero``; a ``"<category> in the image"`` expression is ``one-to-many``;
anything else ``one-to-one``.
"""

from __future__ import annotations

import json
import logging
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from rsam.data.masks import decode_segmentation
from rsam.data.pipeline import SPLIT_NAME, DatasetSpec, Job, JobOutput
from rsam.data.records import (
    KIND_ONE_TO_MANY,
    KIND_ONE_TO_ONE,
    KIND_ONE_TO_ZERO,
    REENCODE_CHOICES,
    SampleError,
    Triplet,
    inspect_image_bytes,
    make_key,
    reencode_image,
    validate_text,
)
from rsam.safe_pickle import safe_load_pickle

log = logging.getLogger(__name__)

SENTENCE_MODES = ("first", "all")
UNKNOWN_SPLIT = "unknown_split"
TEXT_FIELDS = ("sent", "raw")
_ONE_TO_MANY_TEXT = re.compile(r"^.+ in the image\.?$", re.IGNORECASE)


def load_refs(path: str | Path) -> list:
    """The refs list from an untrusted pickle (the restricted unpickler :func:`rsam.safe_pickle.safe_load_pickle`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"refs pickle not found: {path}")
    refs = safe_load_pickle(path)  # ValueError / UnsafePickleError naming the file
    if not isinstance(refs, list):
        raise ValueError(f"{path}: expected a pickled list of refs, got {type(refs).__name__}")
    return refs


def resolve_image_path(folder: Path, file_name: str) -> Path | None:
    """The official training reader's file rule: the named file, else ``.png`` <-> ``.jpg`` (case-insensitive)."""
    named = folder / file_name
    if named.is_file():
        return named
    lower = file_name.lower()
    if lower.endswith(".png"):
        other = folder / (file_name[:-4] + ".jpg")
    elif lower.endswith(".jpg"):
        other = folder / (file_name[:-4] + ".png")
    else:
        return None
    return other if other.is_file() else None


def infer_kind(text: str, empty_mask: bool) -> str:
    if empty_mask:
        return KIND_ONE_TO_ZERO
    return KIND_ONE_TO_MANY if _ONE_TO_MANY_TEXT.match(text) else KIND_ONE_TO_ONE


def find_layout(root: Path) -> tuple[Path, Path, Path]:
    """``(refs, instances, images)`` of a RemoteSAM-270K folder (``Annotations/`` + ``JPEGImages/``)."""
    annotations = root / "Annotations"
    refs = sorted(annotations.glob("refs(*).p")) if annotations.is_dir() else []
    if not refs:
        raise FileNotFoundError(f"{root}: no Annotations/refs(*).p found (pass --refs/--instances/--images)")
    return refs[0], annotations / "instances.json", root / "JPEGImages"


class ReferConverter:
    """Builds the :class:`DatasetSpec` of a refer-layout dataset."""

    def __init__(
        self,
        refs: Path,
        instances: Path,
        images: Path,
        *,
        source: str,
        sentences: str = "first",
        text_field: str = "sent",
        splits: list[str] | None = None,
        licence: str = "unknown",
        reencode: str = "none",
    ):
        if sentences not in SENTENCE_MODES:
            raise ValueError(f"--sentences must be one of {SENTENCE_MODES}")
        if text_field not in TEXT_FIELDS:
            raise ValueError(f"--text-field must be one of {TEXT_FIELDS}")
        if not Path(images).is_dir():
            raise FileNotFoundError(f"image folder not found: {images}")
        if not Path(instances).is_file():
            raise FileNotFoundError(f"instances file not found: {instances}")
        self.refs_path, self.instances_path, self.images = Path(refs), Path(instances), Path(images)
        self.source, self.sentences, self.text_field, self.licence = source, sentences, text_field, licence
        if reencode not in REENCODE_CHOICES:
            raise ValueError(f"--reencode must be one of {REENCODE_CHOICES}")
        self.reencode = reencode
        self.refs = load_refs(self.refs_path)
        with open(self.instances_path, encoding="utf-8") as handle:
            instances = json.load(handle)
        self.annotations = {ann["id"]: ann for ann in instances.get("annotations", []) if isinstance(ann, dict)}
        self.categories = {
            cat.get("id"): cat.get("name") for cat in instances.get("categories", []) if isinstance(cat, dict)
        }
        self.image_names = {img["id"]: img.get("file_name") for img in instances.get("images", []) if "id" in img}
        self.wanted_splits = set(splits) if splits else None

    def jobs(self) -> dict[str, list[Job]]:
        by_split: dict[str, list[Job]] = {}
        for ref_index, ref in enumerate(self.refs):
            split = ref.get("split") if isinstance(ref, dict) else None
            if not isinstance(split, str) or not SPLIT_NAME.fullmatch(split):
                split = UNKNOWN_SPLIT  # materialize rejects these refs, naming them
            if self.wanted_splits is not None and split not in self.wanted_splits:
                continue
            count = 1
            if self.sentences == "all" and isinstance(ref, dict) and isinstance(ref.get("sentences"), list):
                count = max(1, len(ref["sentences"]))
            for sent_index in range(count):
                ann_id = ref.get("ann_id") if isinstance(ref, dict) else "?"
                name = f"ref[{ref_index}] (ann_id {ann_id}) sentence {sent_index}"
                by_split.setdefault(split, []).append(Job(name, (ref_index, sent_index)))
        return by_split

    @lru_cache(maxsize=8)  # noqa: B019 - one converter per run; the cache lives as long as it does
    def _image(self, path: Path):
        info = inspect_image_bytes(path.read_bytes(), f"image {path.name}")
        if self.reencode == "none":
            return info
        with Image.open(path) as img:
            return reencode_image(info, np.asarray(img.convert("RGB")), self.reencode)

    def _sentence(self, ref: dict, sent_index: int, sample: str) -> str:
        sentences = ref.get("sentences")
        if not isinstance(sentences, list) or not sentences:
            raise SampleError(f"{sample}: ref has no sentences")
        sentence = sentences[sent_index]
        if not isinstance(sentence, dict) or self.text_field not in sentence:
            raise SampleError(f"{sample}: sentence has no {self.text_field!r} field")
        return validate_text(sentence[self.text_field], sample)

    def materialize(self, job: Job) -> JobOutput:
        ref_index, sent_index = job.payload
        ref, sample = self.refs[ref_index], job.name
        if not isinstance(ref, dict):
            raise SampleError(f"{sample}: ref is a {type(ref).__name__}, not a dict")
        missing = [key for key in ("split", "ann_id", "image_id") if key not in ref]
        if missing:
            raise SampleError(f"{sample}: ref lacks {', '.join(missing)}")
        if not isinstance(ref["split"], str) or not SPLIT_NAME.fullmatch(ref["split"]):
            raise SampleError(f"{sample}: invalid split {ref['split']!r} (letters, digits and '_' only)")
        text = self._sentence(ref, sent_index, sample)
        file_name = ref.get("file_name") or self.image_names.get(ref["image_id"])
        if not isinstance(file_name, str) or not file_name:
            raise SampleError(f"{sample}: no file name for image_id {ref['image_id']!r}")
        path = resolve_image_path(self.images, file_name)
        if path is None:
            raise SampleError(f"{sample}: image file {file_name!r} not found in {self.images} (nor .png/.jpg twin)")
        try:
            image = self._image(path)
        except SampleError as err:
            raise SampleError(f"{sample}: {err}") from err
        annotation = self.annotations.get(ref["ann_id"])
        if annotation is None:
            raise SampleError(f"{sample}: annotation {ref['ann_id']!r} missing from {self.instances_path.name}")
        mask, seg_type = decode_segmentation(
            annotation.get("segmentation"),
            image.height,
            image.width,
            f"{sample} annotation {ref['ann_id']}",
            rule="exactly-one",
            allow_uncompressed=False,
        )
        record = {
            "text": text,
            "kind": infer_kind(text, not mask.any()),
            "category": self.categories.get(ref.get("category_id"), ref.get("category_id")),
            "category_id": ref.get("category_id"),
            "source": self.source,
            "image_id": ref["image_id"],
            "image_file": path.name,
            "ann_ids": [ref["ann_id"]],
            "ref_id": ref.get("ref_id"),
            "sentence_index": sent_index,
            "split": str(ref["split"]),
            "licence": self.licence,
            "mask_type": seg_type,
        }
        if self.reencode != "none":
            record["reencoded"] = self.reencode
        key = make_key(self.source, "ref", ref_index, sent_index)
        return JobOutput([Triplet(key=key, image=image, mask=mask, record=record)])

    def spec(self, name: str | None = None) -> DatasetSpec:
        def stat(path: Path) -> list:
            info = path.stat()
            return [str(path.resolve()), info.st_size, info.st_mtime_ns]

        return DatasetSpec(
            name=name or self.source,
            converter="from-refer",
            unit="sentence",
            splits=self.jobs(),
            materialize=self.materialize,
            fingerprint_inputs={
                "refs": stat(self.refs_path),
                "instances": stat(self.instances_path),
                "images": str(self.images.resolve()),
                "sentences": self.sentences,
                "text_field": self.text_field,
                "splits": sorted(self.wanted_splits or []),
                "source": self.source,
                "licence": self.licence,
                "reencode": self.reencode,
            },
            licences=[{"name": self.licence, "applies_to": self.source}],
        )
