"""``rsam test --benchmark``: a registered benchmark (:mod:`rsam.evaluation.registry`) as a Lightning test loop.

* :class:`BenchmarkTestModule` wraps the network and the benchmark's evaluator. Each rank reads its disjoint share of
  the images (:class:`rsam.evaluation.sharding.RankShare`, padded with empty items that are never scored); per image
  the evaluator builds the prompts, the model answers all of them as one chunked batch
  (:func:`rsam.evaluation.model_predict.model_predict_fn`) and the evaluator applies the official rule (tiling of
  large DOTA images included) and updates its torchmetrics metric. At the end the metric is computed, which
  synchronises its states across ranks (over a CPU gloo group when the default group is NCCL: the metric states stay
  on the CPU).
* :func:`run_benchmark_test` builds everything from a checkpoint path — the Trainer, its strategy and loggers with
  the one builder of :mod:`rsam.lit.build` (:func:`benchmark_recipe` describes the run as a recipe) — runs
  ``trainer.test`` and writes ``results.md`` / ``results.json`` into ``out_dir`` (rank 0), the DOTA submission files
  (``submission/Task1_<class>.txt``, ``Task2_<class>.txt``) for the DOTA detection benchmarks, and logs the metrics
  and a results table to wandb (offline unless ``WANDB_MODE`` says otherwise; nothing when it is ``disabled`` or
  ``use_wandb=False``).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from rsam.evaluation.dota_submission import DotaSubmission
from rsam.evaluation.evaluators import Evaluator
from rsam.evaluation.metric_sync import compute_synchronised
from rsam.evaluation.model_predict import model_predict_fn
from rsam.evaluation.registry import BenchmarkSpec, get_benchmark
from rsam.evaluation.report import write_results
from rsam.evaluation.sharding import RankShare, collate_items
from rsam.lit.build import build_trainer
from rsam.models import RemoteSAM
from rsam.predict import Predictor
from rsam.recipes import WANDB_MODES, Recipe

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 8
SUBMISSION_DIR = "submission"
WANDB_PROJECT = "rsam-benchmarks"


def scalar_metrics(result: dict) -> dict[str, float]:
    """Loggable scalars: top-level numbers and per-class entries as ``<metric>/<class>`` (``None`` left out)."""
    out = {}
    for key, value in result.items():
        if isinstance(value, dict):
            out.update({f"{key}/{name}": float(v) for name, v in value.items() if isinstance(v, (int, float))})
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(value)
    return out


def gather_submission(submission: DotaSubmission | None, group=None) -> DotaSubmission | None:
    """Every rank's DOTA submission rows in one :class:`DotaSubmission` (same on every rank)."""
    dist = torch.distributed
    if submission is None or not (dist.is_available() and dist.is_initialized()):
        return submission
    parts = [None] * dist.get_world_size(group)
    dist.all_gather_object(parts, submission, group=group)
    merged = DotaSubmission(submission.class_names)
    for part in parts:
        merged.merge(part)
    return merged


def cpu_sync_group():
    """A gloo group for CPU-resident metric states when the default group cannot carry them (NCCL); else None."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_backend() != "gloo":
        return dist.new_group(backend="gloo")
    return None


class BenchmarkTestModule(pl.LightningModule):
    """Test loop of one benchmark; after ``trainer.test`` the metrics are in :attr:`result` (same on every rank)."""

    def __init__(
        self,
        model: RemoteSAM,
        reader,
        evaluator: Evaluator,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        at_model_size: bool = True,
        limit: int | None = None,
        batch_size: int = 1,
        num_workers: int = 0,
    ):
        super().__init__()
        self.model = model
        self.reader, self.evaluator = reader, evaluator  # plain objects: the metric stays on the CPU
        self.chunk_size, self.at_model_size = chunk_size, at_model_size
        self.limit, self.batch_size, self.num_workers = limit, batch_size, num_workers
        self.result: dict | None = None
        self.samples_seen = 0  # this rank's scored samples
        self._predict = None
        self._sync_group = None
        self.submission: DotaSubmission | None = None  # all ranks' DOTA submission rows, after the test

    def test_dataloader(self) -> DataLoader:
        share = RankShare(self.reader, self.global_rank, self.trainer.world_size, self.limit)
        log.info(
            "rank %d/%d: %d of %d samples (padded share)",
            self.global_rank,
            self.trainer.world_size,
            len(share),
            share.total,
        )
        return DataLoader(share, batch_size=self.batch_size, collate_fn=collate_items, num_workers=self.num_workers)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch  # uint8 images and targets stay on the CPU; the predictor moves each chunk to the device

    def on_test_start(self) -> None:
        predictor = Predictor(self.model, device=self.device, chunk_size=self.chunk_size)
        self._predict = model_predict_fn(predictor, at_model_size=self.at_model_size)
        self._sync_group = cpu_sync_group()
        if self._sync_group is not None and hasattr(self.evaluator.metric, "process_group"):
            self.evaluator.metric.process_group = self._sync_group
        self.evaluator.metric.reset()
        self.samples_seen = 0

    def test_step(self, batch, batch_idx) -> None:
        for item in batch:
            if item is None:  # padding that evens out the ranks
                continue
            sample, image = item
            self.evaluator.process(sample, image, self._predict)
            self.samples_seen += 1

    def on_test_epoch_end(self) -> None:
        log.info("rank %d scored %d samples", self.global_rank, self.samples_seen)
        # synchronised across ranks (torchmetrics; whole-state gather for per-image list states)
        if getattr(self.reader, "labelled", True):
            self.result = compute_synchronised(self.evaluator.metric, self._sync_group)
        else:  # no ground truth (DOTA test-dev): the submission files are the result
            self.result = {"images": RankShare(self.reader, 0, 1, self.limit).total, "labelled": False}
        self.submission = gather_submission(getattr(self.evaluator, "submission", None), self._sync_group)
        for name, value in scalar_metrics(self.result).items():
            self.log(f"test/{name}", value, sync_dist=False)


def resolve_benchmark(name: str) -> BenchmarkSpec:
    try:
        return get_benchmark(name)
    except KeyError as err:
        raise ValueError(err.args[0]) from None


def _accelerator(accelerator: str) -> str:
    if accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return accelerator


def benchmark_recipe(
    spec: BenchmarkSpec,
    data: str | Path,
    out_dir: Path,
    model_config,
    *,
    devices=1,
    accelerator: str = "cpu",
    precision: str = "32-true",
    split: str | None = None,
    wandb_project: str = WANDB_PROJECT,
    progress_bar: bool = True,
) -> DictConfig:
    """The evaluation run as a recipe, for the one Trainer / strategy / logger builder of :mod:`rsam.lit.build`:
    the checkpoint's architecture, the benchmark's data, ``ddp`` on more than one device (gloo and a short
    collective timeout on CPU, NCCL on GPUs, as for training), wandb in ``$WANDB_MODE`` (offline by default)."""
    many = (isinstance(devices, int) and devices > 1) or (isinstance(devices, (list, tuple)) and len(devices) > 1)
    mode = os.environ.get("WANDB_MODE", "offline")
    overrides = {
        "name": f"test-{spec.name}",
        "model": {k: v for k, v in model_config.to_dict().items() if k != "format"},
        "data": {"dirs": [str(data)], "test_split": split or spec.default_split},
        "trainer": {
            "accelerator": accelerator,
            "devices": ",".join(map(str, devices)) if isinstance(devices, (list, tuple)) else devices,
            "strategy": "ddp" if many else "auto",
            "precision": precision,
            "default_root_dir": str(out_dir),
            "enable_progress_bar": progress_bar,
        },
        "wandb": {
            "project": wandb_project,
            "mode": mode if mode in WANDB_MODES else "offline",
            "save_dir": str(out_dir),
            "panel_samples": 0,
        },
    }
    return OmegaConf.merge(OmegaConf.structured(Recipe), overrides)


def _log_table(logger, name: str, result: dict, metrics) -> None:
    keys = [k for k in metrics if k in result]
    logger.log_table(key="test/results", columns=["benchmark", *keys], data=[[name, *[result[k] for k in keys]]])
    logger.experiment.finish()


def run_benchmark_test(
    benchmark: str,
    data: str | Path,
    ckpt: str | Path,
    out_dir: str | Path,
    *,
    devices=1,
    accelerator: str = "auto",
    precision: str = "32-true",
    split: str | None = None,
    use_wandb: bool = True,
    wandb_project: str = WANDB_PROJECT,
    limit: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    batch_size: int = 1,
    num_workers: int = 0,
    at_model_size: bool = True,
    evaluator_options: dict | None = None,
    progress_bar: bool = True,
) -> dict:
    """Evaluate checkpoint ``ckpt`` on ``benchmark`` read from ``data``; returns the payload of ``results.json``
    (``{"benchmark", "task", ..., "metrics": {...}}``) plus ``"files"`` (rank 0 writes them).

    ``ckpt``: an rsam model folder, an official ``.pth`` or a Lightning ``.ckpt`` from ``rsam fit``.
    ``limit``: only the first ``limit`` samples of the benchmark (all ranks together) — smoke runs; the JSON says so.
    ``evaluator_options``: overrides of the benchmark's evaluator settings (e.g. ``{"seed": 1}`` for captions).
    """
    from rsam.checkpoint import load_model

    started = time.time()
    spec = resolve_benchmark(benchmark)
    reader = spec.reader(data, split)
    model = load_model(ckpt)
    evaluator = spec.evaluator(**(evaluator_options or {}))
    module = BenchmarkTestModule(
        model,
        reader,
        evaluator,
        chunk_size=chunk_size,
        at_model_size=at_model_size,
        limit=limit,
        batch_size=batch_size,
        num_workers=num_workers,
    )
    out = Path(out_dir)
    accelerator = _accelerator(accelerator)
    recipe = benchmark_recipe(
        spec,
        data,
        out,
        model.config,
        devices=devices,
        accelerator=accelerator,
        precision=precision,
        split=split,
        wandb_project=wandb_project,
        progress_bar=progress_bar,
    )
    trainer = build_trainer(
        recipe,
        use_wandb=use_wandb,
        enable_checkpointing=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    logger = next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)
    trainer.test(module, verbose=False)
    result = module.result
    info = {
        "task": spec.task,
        "split": split or spec.default_split,
        "data": str(data),
        "ckpt": str(ckpt),
        "limit": limit,
        "world_size": trainer.world_size,
        "accelerator": accelerator,
        "precision": precision,
        "chunk_size": chunk_size,
        "maps_at_model_size": at_model_size,
        "seconds": round(time.time() - started, 2),
    }
    payload = {"benchmark": spec.name, **info, "metrics": result}
    if trainer.is_global_zero:
        markdown, data_file = write_results(out, spec.name, result, spec.metrics, info)
        payload["files"] = {"markdown": str(markdown), "json": str(data_file)}
        if module.submission is not None:
            folder = out / SUBMISSION_DIR
            module.submission.write(folder)
            payload["files"]["submission"] = str(folder)
            log.info("%s: DOTA submission files (Task1/Task2 per class) in %s", spec.name, folder)
        log.info("%s: results in %s", spec.name, markdown)
        if logger is not None:
            logger.log_hyperparams({"benchmark": spec.name, **info})
            _log_table(logger, spec.name, result, spec.metrics)
    return payload
