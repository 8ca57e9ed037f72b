"""Per-task evaluators: prompts for a sample, the official conversion of its probability maps, the metric update.

Contract with the model side: ``predict_fn(image_uint8 (H, W, 3), prompts: list[str]) -> float32 (N, h, w)``
foreground probabilities (softmax channel 1), one map per prompt, all prompts of an image in one call (batch them as
you like). Maps may come at the model resolution (896 x 896, which gives exact parity with the official protocol) or
at the image size; each evaluator resizes them with the official rule:

* res / semseg: metrics at ``eval_size`` (896), the target nearest-resized with PIL (REF.py / SEG.py); the official
  prediction is native at 896, a prediction of another size is nearest-resized with the same PIL rule as the target
  (so a perfect prediction stays perfect); ``eval_size=None`` scores at the target's own size instead;
* det / obb / vg / count / caption: maps nearest-resized to the image size, then M2B (model.py);
* mlc / mcc: pooled on the maps as given (the official code pools at 896 x 896, before any resize).

``boundary_fn(image_uint8) -> (H, W)`` boundary probabilities plugs in EPOC-style refinement (off by default: no
offline weights exist for DirectSAM).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from rsam.evaluation.dota_submission import DotaSubmission
from rsam.evaluation.samples import Sample
from rsam.metrics import (
    CaptionMetric,
    CocoDetectionMetric,
    CountingAccuracy,
    GroundingMetric,
    MultiLabelAccuracy,
    ReferringSegMetric,
    SceneAccuracy,
    SemanticSegMetric,
    VocDetectionMetric,
)
from rsam.preprocess import resize_mask
from rsam.tasks import (
    as_prob_stack,
    caption_rng,
    class_prompts,
    count_objects,
    detect,
    detect_tiled,
    grounding_box,
    multi_label_predict,
    probs_to_masks,
    resize_nearest,
    rule_based_caption,
    scene_scores,
    semantic_label_map,
)
from rsam.tasks.m2b import EPOC_THRESHOLD_COUNTING, EPOC_THRESHOLD_DETECTION
from rsam.tasks.prompts import PROMPT_TEMPLATE

PredictFn = Callable[[np.ndarray, Sequence[str]], np.ndarray]
BoundaryFn = Callable[[np.ndarray], np.ndarray]
MODEL_SIZE = 896


def _predict(predict_fn: PredictFn, image: np.ndarray, prompts: list[str]) -> np.ndarray:
    probs = as_prob_stack(predict_fn(image, prompts), name="predict_fn output")
    if probs.shape[0] != len(prompts):
        raise ValueError(f"predict_fn returned {probs.shape[0]} maps for {len(prompts)} prompts")
    return probs


def _like_target(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bring a predicted mask / label map to the scoring size with the PIL nearest rule used for the target."""
    return resize_mask(np.asarray(labels, dtype=np.int32), size)


def _at_image_size(probs: np.ndarray, image: np.ndarray) -> np.ndarray:
    return resize_nearest(probs, image.shape[:2])


def _boundary(boundary_fn: BoundaryFn | None, image: np.ndarray) -> np.ndarray | None:
    """The image's boundary map (EPOC) when a provider is plugged in, checked to be ``(H, W)``."""
    if boundary_fn is None:
        return None
    boundary = np.asarray(boundary_fn(image), dtype=np.float32)
    if boundary.shape != image.shape[:2]:
        raise ValueError(f"boundary_fn returned {boundary.shape}, expected the image size {image.shape[:2]}")
    return boundary


def _as_torch(entry: dict) -> dict:
    """numpy detection entry -> the tensors torchmetrics' ``MeanAveragePrecision`` wants (float64: the values reach
    COCOeval unrounded)."""
    return {
        key: torch.as_tensor(np.asarray(value), dtype=torch.long if key == "labels" else torch.float64)
        for key, value in entry.items()
    }


class Evaluator:
    """Base: ``process(sample, image, predict_fn)`` per sample, ``compute()`` at the end."""

    task = ""

    def __init__(self, metric):
        self.metric = metric

    def process(self, sample: Sample, image: np.ndarray, predict_fn: PredictFn) -> None:
        raise NotImplementedError

    def compute(self) -> dict:
        return self.metric.compute()


class ReferringEvaluator(Evaluator):
    task = "res"

    def __init__(self, eval_size: int | None = MODEL_SIZE):
        super().__init__(ReferringSegMetric())
        self.eval_size = eval_size

    def process(self, sample, image, predict_fn):
        mask = probs_to_masks(_predict(predict_fn, image, [sample.text])[0])
        target = np.asarray(sample.target, dtype=np.uint8)
        size = (self.eval_size, self.eval_size) if self.eval_size else target.shape
        self.metric.update(_like_target(mask, size)[None], resize_mask(target, size)[None])


class SemanticSegEvaluator(Evaluator):
    """``class_names[0]`` is the unprompted background; the other classes are prompted in order."""

    task = "semseg"

    def __init__(
        self,
        class_names: Sequence[str],
        template: str = PROMPT_TEMPLATE,
        eval_size: int | None = MODEL_SIZE,
        ignore_index: int | None = None,
        mean_classes: Sequence[int] | None = None,
    ):
        super().__init__(SemanticSegMetric(class_names, ignore_index=ignore_index, mean_classes=mean_classes))
        self.prompts = class_prompts(list(class_names)[1:], template)
        self.eval_size = eval_size

    def process(self, sample, image, predict_fn):
        labels = semantic_label_map(_predict(predict_fn, image, self.prompts))
        target = np.asarray(sample.target)
        size = (self.eval_size, self.eval_size) if self.eval_size else target.shape
        target = resize_mask(target.astype(np.int32), size)
        self.metric.update(_like_target(labels, size)[None], target[None])


class DetectionEvaluator(Evaluator):
    """Horizontal (COCO or DOTA-devkit AP) or oriented (DOTA-devkit AP) detection; optional DOTA tiling, and with
    ``submission=True`` the DOTA submission rows of every image (:attr:`submission`, written by ``rsam test``)."""

    def __init__(
        self,
        class_names: Sequence[str],
        *,
        box_type: str = "hbb",
        protocol: str = "coco",
        template: str = PROMPT_TEMPLATE,
        boundary_fn: BoundaryFn | None = None,
        boundary_threshold: float = EPOC_THRESHOLD_DETECTION,
        tiled: bool = False,
        submission: bool = False,
    ):
        if protocol == "coco" and box_type != "hbb":
            raise ValueError("the COCO protocol scores horizontal boxes only; use protocol='voc' for obb")
        metric = (
            CocoDetectionMetric(class_names)
            if protocol == "coco"
            else VocDetectionMetric(class_names, box_kind="hbb" if box_type == "hbb" else "poly")
        )
        super().__init__(metric)
        self.task = "det" if box_type == "hbb" else "obb"
        self.class_names, self.box_type, self.protocol = list(class_names), box_type, protocol
        self.prompts = class_prompts(self.class_names, template)
        self.boundary_fn, self.boundary_threshold, self.tiled = boundary_fn, boundary_threshold, tiled
        # DOTA submission files (Task1 / Task2 per class) of the merged whole-image detections, keyed by sample key
        self.submission = DotaSubmission(self.class_names) if submission else None

    def process(self, sample, image, predict_fn):
        boundary = _boundary(self.boundary_fn, image)
        options = dict(box_type=self.box_type, boundary=boundary, boundary_threshold=self.boundary_threshold)
        if self.tiled:
            found = detect_tiled(image, self.class_names, self.prompts, predict_fn, **options)
        else:
            found = detect(
                _at_image_size(_predict(predict_fn, image, self.prompts), image), self.class_names, **options
            )
        if self.submission is not None:
            self.submission.add(sample.key, found)
        if sample.target is None:  # an image without ground truth (DOTA test-dev): submission rows only
            if self.submission is None:
                raise ValueError(f"sample {sample.key}: no ground truth to score against")
            return
        width = 4 if self.box_type == "hbb" else 8
        coords = [found[n].coords for n in self.class_names]
        pred = {
            "boxes": np.concatenate(coords).reshape(-1, width),
            "scores": np.concatenate([found[n].scores for n in self.class_names]),
            "labels": np.concatenate([np.full(len(found[n]), k) for k, n in enumerate(self.class_names)]),
        }
        target = {"boxes": sample.target.boxes.reshape(-1, width), "labels": sample.target.labels}
        if self.protocol == "coco":
            self.metric.update([_as_torch(pred)], [_as_torch(target)])
        else:
            target["difficult"] = sample.target.difficult
            self.metric.update([pred], [target])


class GroundingEvaluator(Evaluator):
    task = "vg"

    def __init__(self):
        super().__init__(GroundingMetric())

    def process(self, sample, image, predict_fn):
        prob = _at_image_size(_predict(predict_fn, image, [sample.text]), image)[0]
        self.metric.update([grounding_box(prob)], [sample.target])


class MultiLabelEvaluator(Evaluator):
    task = "mlc"

    def __init__(self, class_names: Sequence[str], max_weight: float = 0.5, template: str = PROMPT_TEMPLATE):
        super().__init__(MultiLabelAccuracy(class_names))
        self.prompts = class_prompts(class_names, template)
        self.max_weight = max_weight

    def process(self, sample, image, predict_fn):
        pred = multi_label_predict(_predict(predict_fn, image, self.prompts), self.max_weight)
        self.metric.update(pred[None], np.asarray(sample.target, bool)[None])


class SceneEvaluator(Evaluator):
    task = "mcc"

    def __init__(self, class_names: Sequence[str], max_weight: float = 1.0, template: str = PROMPT_TEMPLATE):
        super().__init__(SceneAccuracy(class_names))
        self.prompts = class_prompts(class_names, template)
        self.max_weight = max_weight

    def process(self, sample, image, predict_fn):
        scores = scene_scores(_predict(predict_fn, image, self.prompts), self.max_weight)
        self.metric.update(scores[None], [int(sample.target)])


class CountingEvaluator(Evaluator):
    task = "count"

    def __init__(
        self,
        priors=None,
        template: str = PROMPT_TEMPLATE,
        boundary_fn: BoundaryFn | None = None,
        boundary_threshold: float = EPOC_THRESHOLD_COUNTING,
    ):
        super().__init__(CountingAccuracy())
        self.priors, self.template = priors, template
        self.boundary_fn, self.boundary_threshold = boundary_fn, boundary_threshold

    def process(self, sample, image, predict_fn):
        prob = _at_image_size(_predict(predict_fn, image, class_prompts([sample.text], self.template)), image)
        boundary = _boundary(self.boundary_fn, image)
        count = count_objects(
            prob, sample.text, self.priors, boundary=boundary, boundary_threshold=self.boundary_threshold
        )
        self.metric.update([count], [int(sample.target)])


class CaptionEvaluator(Evaluator):
    task = "caption"

    def __init__(
        self,
        class_names: Sequence[str],
        *,
        regions: int = 4,
        seed: int = 0,
        template: str = PROMPT_TEMPLATE,
        boundary_fn: BoundaryFn | None = None,
        boundary_threshold: float = EPOC_THRESHOLD_DETECTION,
        meteor: bool = False,
    ):
        super().__init__(CaptionMetric(meteor=meteor))
        self.class_names = list(class_names)
        self.prompts = class_prompts(self.class_names, template)
        self.regions, self.seed = regions, seed
        self.boundary_fn, self.boundary_threshold = boundary_fn, boundary_threshold

    def process(self, sample, image, predict_fn):
        probs = _at_image_size(_predict(predict_fn, image, self.prompts), image)
        boundary = _boundary(self.boundary_fn, image)
        found = detect(probs, self.class_names, boundary=boundary, boundary_threshold=self.boundary_threshold)
        boxes = {name: found[name].coords for name in self.class_names if len(found[name])}
        caption = rule_based_caption(boxes, image.shape[:2], caption_rng(self.seed, sample.key), self.regions)
        self.metric.update([sample.key], [caption], [sample.target])
