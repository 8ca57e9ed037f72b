"""Run a benchmark with any ``predict_fn`` and report its metrics (the model-free half of ``rsam test``).

``run_benchmark(reader, predict_fn, evaluator)`` loops over the reader's samples (every ``world``-th one from
``rank`` when ``shard=(rank, world)`` is given; the torchmetrics states then synchronise on ``compute``), loads each
image as uint8 RGB, lets the evaluator build the prompts, call ``predict_fn`` once per image (or once per patch for
tiled DOTA) and apply the official conversion. ``results_markdown`` formats the result as a table.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from rsam.evaluation.evaluators import Evaluator, PredictFn
from rsam.evaluation.registry import BenchmarkSpec

log = logging.getLogger(__name__)


def run_benchmark(
    reader: Iterable,
    predict_fn: PredictFn,
    evaluator: Evaluator,
    *,
    shard: tuple[int, int] | None = None,
    limit: int | None = None,
    log_every: int = 100,
) -> dict:
    """Evaluate every sample; returns ``evaluator.compute()`` plus ``seconds``.

    ``limit``: stop after that many samples (of this shard) — for smoke runs only, say so in any report.
    """
    rank, world = shard or (0, 1)
    if not 0 <= rank < world:
        raise ValueError(f"shard must be (rank, world) with 0 <= rank < world, got {shard}")
    start, done = time.time(), 0
    for index, sample in enumerate(reader):
        if index % world != rank:
            continue
        if limit is not None and done >= limit:
            break
        evaluator.process(sample, sample.load_image(), predict_fn)
        done += 1
        if log_every and done % log_every == 0:
            log.info("%s: %d samples, %.1f s", evaluator.task, done, time.time() - start)
    if done == 0:
        log.warning("%s: this shard saw no sample", evaluator.task)
    if getattr(reader, "labelled", True):
        result = evaluator.compute()
    else:  # images without ground truth (DOTA test-dev): the evaluator's submission rows are the result
        result = {"images": done, "labelled": False}
    result["seconds"] = round(time.time() - start, 3)
    return result


def run_registered(
    spec: BenchmarkSpec,
    root,
    predict_fn: PredictFn,
    *,
    split: str | None = None,
    shard: tuple[int, int] | None = None,
    limit: int | None = None,
    **evaluator_options,
) -> dict:
    """Read ``spec`` from ``root`` and run it with the benchmark's official evaluator settings."""
    result = run_benchmark(
        spec.reader(root, split), predict_fn, spec.evaluator(**evaluator_options), shard=shard, limit=limit
    )
    result["benchmark"] = spec.name
    return result


NOT_SCALED = {"MAE", "seconds", "samples", "images", "classes_with_ground_truth"}


def _cell(key: str, value) -> str:
    if isinstance(value, float) and key not in NOT_SCALED:
        return f"{100 * value:.2f}"
    return str(value)


def results_markdown(name: str, result: dict, metrics: Iterable[str] | None = None) -> str:
    """Markdown table of the headline metrics (fractions shown x100; CIDEr values are x10 already -> x100 shown
    as the official script prints them)."""
    keys = [k for k in (metrics or result) if k in result and not isinstance(result[k], (dict, list))]
    header = "| benchmark | " + " | ".join(keys) + " |"
    rule = "|---|" + "---:|" * len(keys)
    row = f"| {name} | " + " | ".join(_cell(k, result[k]) for k in keys) + " |"
    return "\n".join([header, rule, row])
