"""``rsam data from-coco``: the RemoteSAM data engine on any COCO-style instance dataset.

For every image (one job; the unit of the counts) it writes, in this order:

1. **one-to-many**: ``"{category} in the image"`` (the official prompt template) with the union of all instances of
   each category present (paper §3.1.1);
2. **one-to-zero**: ``zero_per_image`` categories absent from the image with an empty mask. The pool is the
   dataset's categories whose ``supercategory`` is also absent (``dataset``), a fixed vocabulary (``vocab``), or both;
   the choice is seeded by (seed, image id), so it is reproducible;
3. **one-to-one**: rule-based attribute expressions (:mod:`rsam.data.expressions`) kept only when they single out
   exactly one instance; ambiguous ones are dropped and counted; at most ``max_one_to_one`` per category;
4. optionally, **VLM descriptions** (:mod:`rsam.data.vlm`) matched to the categories present.

Optionally a scorer (:mod:`rsam.data.filtering`) drops triplets whose mask region scores below ``min_score``.
Annotations without a segmentation (or with an empty list) use their box as the mask, and the record says
``mask_type: "box"``. Instance masks follow COCO ``annToMask`` (``union`` of parts) unless told otherwise. Crowd
annotations join the one-to-many union but make one-to-one rules for their category unsafe, so those are skipped.
A bad annotation rejects its whole image (its one-to-many/zero triplets would be wrong without it). So does an image
id used by two images or an annotation id used twice (which image, which instance, is ambiguous); an annotation whose
image id names no image is a reject of its own, so ``inputs == written + rejected`` counts every input record.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from rsam.data.expressions import Instance, candidate_expressions, select_unique
from rsam.data.filtering import Scorer, mask_region
from rsam.data.masks import box_mask, decode_segmentation
from rsam.data.pipeline import DatasetSpec, Job, JobOutput
from rsam.data.records import (
    KIND_ONE_TO_MANY,
    KIND_ONE_TO_ONE,
    KIND_ONE_TO_ZERO,
    ImageInfo,
    SampleError,
    Triplet,
    inspect_image_bytes,
    make_key,
    reencode_image,
    validate_text,
)
from rsam.data.vlm import MAX_WORDS, VLMClient, VLMError, normalise_category, word_count

log = logging.getLogger(__name__)

ZERO_POOLS = ("dataset", "vocab", "both")
PROVENANCE_FIELD = "rsam_provenance"  # optional dict on a COCO image, copied into its records as "provenance"
TEMPLATE = "{category} in the image"


@dataclass
class EngineOptions:
    source: str = "coco"
    split: str = "train"
    val_fraction: float = 0.0  # > 0: split images by a hash of their file name into train/val
    zero_per_image: int = 1
    zero_pool: str = "dataset"
    zero_vocab: list[str] = field(default_factory=list)
    max_one_to_one: int = 3
    overlap_rule: str = "union"
    seed: int = 0
    licence: str = "unknown"
    min_score: float | None = None
    reencode: str = "none"  # "jpg"/"png": store re-encoded images instead of the original bytes


def split_of(image: dict, options: EngineOptions) -> str:
    """The split of a COCO image: its own ``split`` field, else ``options.split``, else (``val_fraction`` > 0)
    train/val by a stable hash of its file name."""
    if image.get("split"):
        return str(image["split"])
    file_name = str(image.get("file_name"))
    if options.val_fraction <= 0:
        return options.split
    bucket = int(hashlib.sha1(file_name.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if bucket < options.val_fraction else "train"


class _Draft(NamedTuple):
    """A triplet before scoring and keying."""

    text: str
    kind: str
    rule: str
    mask: np.ndarray
    ann_ids: list
    category: str


@dataclass
class _ImageAnnotations:
    """One image's decoded annotations, by category name."""

    masks: dict[str, list[tuple[object, np.ndarray]]] = field(default_factory=dict)
    instances: dict[str, list[Instance]] = field(default_factory=dict)
    seg_types: dict[str, set[str]] = field(default_factory=dict)
    crowded: set[str] = field(default_factory=set)


def _callable_name(function) -> str:
    target = function if hasattr(function, "__qualname__") else type(function)
    return f"{target.__module__}:{target.__qualname__}"


class CocoEngine:
    """Builds the :class:`DatasetSpec` of the data engine over one COCO instances file and its image folder."""

    def __init__(
        self,
        instances: Path,
        images: Path,
        options: EngineOptions,
        *,
        vlm: VLMClient | None = None,
        scorer: Scorer | None = None,
        coco: dict | None = None,
    ):
        if options.zero_pool not in ZERO_POOLS:
            raise ValueError(f"zero pool must be one of {ZERO_POOLS}")
        if options.zero_pool != "dataset" and not options.zero_vocab:
            raise ValueError("a 'vocab' zero pool needs a vocabulary (--zero-vocab)")
        if (options.min_score is None) != (scorer is None):
            raise ValueError("a scorer and a minimum score go together (--scorer with --min-score)")
        self.instances_path, self.images, self.options = Path(instances), Path(images), options
        if coco is None and not self.instances_path.is_file():
            raise FileNotFoundError(f"instances file not found: {self.instances_path}")
        self._coco = coco  # read lazily: a caller may still be filling it (see rsam.data.demo)
        self.vlm, self.scorer = vlm, scorer

    @cached_property
    def coco(self) -> dict:
        if not self.images.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.images}")
        if self._coco is None:
            self._coco = json.loads(self.instances_path.read_text(encoding="utf-8"))
        return self._coco

    @cached_property
    def categories(self) -> dict:
        return {cat["id"]: cat for cat in self.coco.get("categories", [])}

    @cached_property
    def licences(self) -> dict:
        return {lic.get("id"): lic for lic in self.coco.get("licenses", []) if isinstance(lic, dict)}

    @cached_property
    def images_by_id(self) -> dict:
        return {img.get("id"): img for img in self.coco.get("images", [])}

    @cached_property
    def annotations(self) -> dict[object, list[dict]]:
        by_image: dict[object, list[dict]] = {}
        for ann in self.coco.get("annotations", []):
            by_image.setdefault(ann.get("image_id"), []).append(ann)
        return by_image

    @cached_property
    def _image_id_uses(self) -> Counter:
        return Counter(img.get("id") for img in self.coco.get("images", []))

    @cached_property
    def _annotation_id_uses(self) -> Counter:
        return Counter(ann["id"] for ann in self.coco.get("annotations", []) if ann.get("id") is not None)

    # ---- jobs -------------------------------------------------------------------------------------------------
    def jobs(self) -> dict[str, list[Job]]:
        """One job per entry of ``images`` (a duplicated image id gives one job, and one reject, per entry) and one
        per annotation whose ``image_id`` names no image (always a reject), so that the counts reconcile over every
        input record: an annotation is written or rejected with its image, or rejected on its own."""
        by_split: dict[str, list[Job]] = {}
        images = self.coco.get("images", [])
        order = sorted(range(len(images)), key=lambda i: (str(type(images[i].get("id"))), images[i].get("id"), i))
        for position in order:
            image = images[position]
            name = f"image {image.get('id')} ({image.get('file_name')})"
            by_split.setdefault(split_of(image, self.options), []).append(Job(name, position))
        for index, ann in enumerate(self.coco.get("annotations", [])):
            if ann.get("image_id") not in self._image_id_uses:
                name = f"annotation {ann.get('id')} (image_id {ann.get('image_id')!r})"
                by_split.setdefault(self.options.split, []).append(Job(name, ("orphan", index)))
        return by_split

    def _check_ids(self, image: dict, sample: str) -> None:
        """A duplicated image id or annotation id makes the image's annotations ambiguous: the image is rejected."""
        image_id = image.get("id")
        if self._image_id_uses[image_id] > 1:
            files = [img.get("file_name") for img in self.coco.get("images", []) if img.get("id") == image_id]
            raise SampleError(
                f"{sample}: image id {image_id!r} is used by {len(files)} images ({', '.join(map(str, files))}); "
                "their annotations cannot be told apart"
            )
        for ann in self.annotations.get(image_id, []):
            uses = self._annotation_id_uses[ann.get("id")] if ann.get("id") is not None else 1
            if uses > 1:
                raise SampleError(f"{sample}: annotation id {ann.get('id')!r} appears {uses} times in the annotations")

    # ---- per image --------------------------------------------------------------------------------------------
    @lru_cache(maxsize=4)  # noqa: B019 - one converter per run; the cache lives as long as it does
    def _load(self, image_id) -> tuple[ImageInfo, np.ndarray]:
        image = self.images_by_id[image_id]
        file_name = image.get("file_name")
        path = self.images / str(file_name)
        if not file_name or not path.is_file():
            raise SampleError(f"image {image_id}: file {file_name!r} not found in {self.images}")
        info = inspect_image_bytes(path.read_bytes(), f"image {image_id} ({file_name})")
        for key, actual in (("width", info.width), ("height", info.height)):
            if key in image and int(image[key]) != actual:
                raise SampleError(
                    f"image {image_id} ({file_name}): {key} {actual} differs from the JSON's {image[key]}"
                )
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))
        return reencode_image(info, rgb, self.options.reencode), rgb

    def _instance_mask(self, ann: dict, info: ImageInfo, sample: str) -> tuple[np.ndarray, str]:
        segmentation = ann.get("segmentation")
        if segmentation in (None, []):
            if "bbox" not in ann:
                raise SampleError(f"{sample}: annotation {ann.get('id')} has neither segmentation nor bbox")
            return box_mask(ann["bbox"], info.height, info.width, f"{sample} annotation {ann.get('id')}"), "box"
        return decode_segmentation(
            segmentation,
            info.height,
            info.width,
            f"{sample} annotation {ann.get('id')}",
            rule=self.options.overlap_rule,
        )

    def _category_name(self, ann: dict, sample: str) -> str:
        category = self.categories.get(ann.get("category_id"))
        if category is None:
            raise SampleError(
                f"{sample}: annotation {ann.get('id')} has unknown category_id {ann.get('category_id')!r}"
            )
        return validate_text(category.get("name"), f"{sample} category {ann.get('category_id')}")

    def _licence(self, image: dict) -> str:
        licence = self.licences.get(image.get("license"))
        return licence.get("name", self.options.licence) if licence else self.options.licence

    def _annotations(self, image_id, info: ImageInfo, rgb: np.ndarray, sample: str) -> _ImageAnnotations:
        found = _ImageAnnotations()
        for ann in self.annotations.get(image_id, []):
            category = self._category_name(ann, sample)
            mask, seg_type = self._instance_mask(ann, info, sample)
            found.masks.setdefault(category, []).append((ann.get("id"), mask))
            found.seg_types.setdefault(category, set()).add(seg_type)
            if ann.get("iscrowd"):
                found.crowded.add(category)
            elif (instance := Instance.from_mask(ann.get("id"), category, mask, rgb)) is not None:
                found.instances.setdefault(category, []).append(instance)
        return found

    def _template_drafts(self, image_id, found: _ImageAnnotations, shape: tuple[int, int], dropped: Counter) -> list:
        drafts = []
        for category in sorted(found.masks):
            union = np.logical_or.reduce([mask for _, mask in found.masks[category]])
            if not union.any():
                dropped["empty_mask"] += 1
                continue
            ids = [ann_id for ann_id, _ in found.masks[category]]
            drafts.append(
                _Draft(TEMPLATE.format(category=category), KIND_ONE_TO_MANY, "template", union, ids, category)
            )
        empty = np.zeros(shape, dtype=bool)
        for category in self._absent_categories(image_id, set(found.masks)):
            drafts.append(_Draft(TEMPLATE.format(category=category), KIND_ONE_TO_ZERO, "absent", empty, [], category))
        return drafts

    def _rule_drafts(self, found: _ImageAnnotations, info: ImageInfo, dropped: Counter) -> list:
        drafts = []
        everyone = [i for group in found.instances.values() for i in group]
        for category in sorted(found.instances):
            if category in found.crowded:
                dropped["crowd_category"] += 1
                continue
            group = found.instances[category]
            others = [i for i in everyone if i.category != category]
            kept, ambiguous, over = select_unique(
                candidate_expressions(category, group, others, info.width, info.height), self.options.max_one_to_one
            )
            dropped["ambiguous"] += ambiguous
            dropped["over_limit"] += over
            by_id = {i.ann_id: i for i in group}
            for candidate in kept:
                (target,) = candidate.targets
                drafts.append(
                    _Draft(candidate.text, KIND_ONE_TO_ONE, candidate.rule, by_id[target].mask, [target], category)
                )
        return drafts

    def materialize(self, job: Job) -> JobOutput:
        if isinstance(job.payload, tuple):  # an annotation whose image_id names no image
            ann = self.coco["annotations"][job.payload[1]]
            raise SampleError(f"{job.name}: its image_id {ann.get('image_id')!r} is not in the instances' images")
        image = self.coco["images"][job.payload]
        image_id = image.get("id")
        self._check_ids(image, job.name)
        info, rgb = self._load(image_id)
        found = self._annotations(image_id, info, rgb, job.name)
        out = JobOutput()
        drafts = self._template_drafts(image_id, found, (info.height, info.width), out.dropped)
        drafts += self._rule_drafts(found, info, out.dropped)
        if self.vlm is not None:
            drafts += self._vlm_drafts(info, found.masks, out.dropped)
        base = {
            "source": self.options.source,
            "image_id": image_id,
            "image_file": image.get("file_name"),
            "split": split_of(image, self.options),
            "licence": self._licence(image),
        }
        attribution = self.licences.get(image.get("license"), {}).get("attribution")
        if attribution:
            base["attribution"] = attribution
        if self.options.reencode != "none":
            base["reencoded"] = self.options.reencode
        if image.get(PROVENANCE_FIELD):
            base["provenance"] = image[PROVENANCE_FIELD]
        for draft in drafts:
            mask_type = "empty" if draft.kind == KIND_ONE_TO_ZERO else "+".join(sorted(found.seg_types[draft.category]))
            record = dict(
                base,
                text=draft.text,
                kind=draft.kind,
                rule=draft.rule,
                category=draft.category,
                ann_ids=draft.ann_ids,
                mask_type=mask_type,
            )
            if self.scorer is not None and draft.kind != KIND_ONE_TO_ZERO:
                score = float(self.scorer(mask_region(rgb, draft.mask), draft.text))
                record["score"] = round(score, 6)
                if score < self.options.min_score:
                    out.dropped["low_score"] += 1
                    continue
            key = make_key(self.options.source, image_id, f"{len(out.triplets):03d}")
            out.triplets.append(Triplet(key=key, image=info, mask=draft.mask, record=record))
        return out

    def _absent_categories(self, image_id, present: set[str]) -> list[str]:
        options = self.options
        if options.zero_per_image <= 0:
            return []
        present_super = {cat.get("supercategory") for cat in self.categories.values() if cat.get("name") in present} - {
            None
        }
        pool = set()
        if options.zero_pool in ("dataset", "both"):
            pool |= {
                cat["name"]
                for cat in self.categories.values()
                if cat["name"] not in present and cat.get("supercategory") not in present_super
            }
        if options.zero_pool in ("vocab", "both"):
            pool |= {name for name in options.zero_vocab if name not in present}
        rng = random.Random(f"{options.seed}:{image_id}")
        return sorted(rng.sample(sorted(pool), min(options.zero_per_image, len(pool))))

    def _vlm_drafts(self, info: ImageInfo, masks: dict, dropped: Counter) -> list:
        try:
            descriptions = self.vlm.describe(info.data, info.suffix, sorted(masks))
        except VLMError as err:
            raise SampleError(f"VLM step failed: {err}") from err
        lookup = {normalise_category(name): name for name in masks}
        drafts = []
        for key, description in sorted(descriptions.items()):
            category = lookup.get(normalise_category(key))
            if category is None:
                dropped["vlm_unmatched"] += 1
                continue
            text = " ".join(description.split())
            if not text or word_count(text) > MAX_WORDS:
                dropped["vlm_too_long" if text else "vlm_empty"] += 1
                continue
            union = np.logical_or.reduce([mask for _, mask in masks[category]])
            ids = [ann_id for ann_id, _ in masks[category]]
            kind = KIND_ONE_TO_ONE if len(ids) == 1 else KIND_ONE_TO_MANY
            drafts.append(_Draft(text, kind, "vlm", union, ids, category))
        return drafts

    def spec(
        self,
        name: str | None = None,
        *,
        licences: list[dict] | None = None,
        extra_files: dict[str, bytes] | None = None,
        fingerprint_extra: dict | None = None,
        prepare=None,
    ) -> DatasetSpec:
        source_stat = None
        if self.instances_path.is_file():
            stat = self.instances_path.stat()
            source_stat = [str(self.instances_path.resolve()), stat.st_size, stat.st_mtime_ns]
        return DatasetSpec(
            name=name or self.options.source,
            converter="from-coco",
            unit="image",
            splits=self.jobs,
            materialize=self.materialize,
            fingerprint_inputs={
                "instances": source_stat,
                "images": str(self.images.resolve()),
                "options": asdict(self.options),
                "vlm": [self.vlm.url, self.vlm.model] if self.vlm else None,
                "scorer": _callable_name(self.scorer) if self.scorer else None,
                **(fingerprint_extra or {}),
            },
            licences=licences
            or [
                {"name": lic.get("name"), "url": lic.get("url"), "attribution": lic.get("attribution")}
                for lic in self.licences.values()
            ]
            or [{"name": self.options.licence}],
            extra_files=extra_files or {},
            prepare=prepare,
        )
