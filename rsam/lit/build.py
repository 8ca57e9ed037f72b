"""Recipe -> LightningModule / Trainer / loggers / callbacks (shared by ``rsam fit|validate|test|predict``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig, OmegaConf

from rsam.lit.module import RemoteSAMModule
from rsam.lit.panel import OverlayPanel
from rsam.recipes import model_config, model_runtime, optim_settings, text_encoder_folder

log = logging.getLogger(__name__)

BEST_FILENAME = "best-epoch{epoch:03d}-step{step:06d}"


def initialise_weights(module: RemoteSAMModule, recipe: DictConfig) -> None:
    """The recipe's ``init`` section (``weights``, or ``backbone`` + ``text_encoder``) into a fresh module; the log
    says what was initialised from where (:func:`rsam.checkpoint.initialise.initialise_model`)."""
    from rsam.checkpoint.initialise import initialise_model

    init = recipe.init
    initialise_model(
        module.model,
        weights=init.weights,
        backbone=init.backbone,
        text_encoder=text_encoder_folder(recipe) if init.text_encoder else None,
    )


def build_module(recipe: DictConfig, *, initialise: bool = True) -> RemoteSAMModule:
    module = RemoteSAMModule(model_config(recipe).to_dict(), optim_settings(recipe), model_runtime(recipe))
    if initialise:
        initialise_weights(module, recipe)
    return module


def load_module(ckpt_path: str | Path, recipe: DictConfig | None = None) -> RemoteSAMModule:
    """A module holding trained weights from anything :func:`rsam.checkpoint.load_model` reads (a Lightning
    checkpoint, a DeepSpeed checkpoint folder, an rsam model folder, an official ``.pth``); no pickled code runs.
    The network is rebuilt from the file's own config; ``recipe`` supplies the optimisation settings."""
    from rsam.checkpoint import load_model

    network = load_model(ckpt_path)
    module = RemoteSAMModule(network.config.to_dict(), optim_settings(recipe) if recipe is not None else None)
    module.model.load_state_dict(network.state_dict(), strict=True)
    return module


def run_dir(recipe: DictConfig) -> Path:
    return Path(recipe.trainer.default_root_dir)


def checkpoint_dir(recipe: DictConfig) -> Path:
    return Path(recipe.checkpoint.dirpath) if recipe.checkpoint.dirpath else run_dir(recipe) / "checkpoints"


def _newest_file_time(path: Path) -> float:
    """Modification time of a checkpoint: the file's, or the newest file's inside a DeepSpeed checkpoint folder."""
    if path.is_dir():
        return max((p.stat().st_mtime for p in path.rglob("*") if p.is_file()), default=path.stat().st_mtime)
    return path.stat().st_mtime


def resume_candidates(recipe: DictConfig) -> list[Path]:
    """Checkpoints a restarted job can resume from, oldest first: ``<checkpoints>/last.ckpt``, the best-by-monitor
    ``best-*.ckpt`` and Lightning's Slurm requeue checkpoints ``<default_root_dir>/hpc_ckpt_N.ckpt``."""
    folder = checkpoint_dir(recipe)
    found = [folder / "last.ckpt", *folder.glob("best-*.ckpt"), *run_dir(recipe).glob("hpc_ckpt_*.ckpt")]
    return sorted((p for p in found if p.exists()), key=_newest_file_time)


def resolve_ckpt_path(recipe: DictConfig, ckpt_path: str | None) -> str | None:
    """``last`` -> ``<checkpoints>/last.ckpt``; ``best`` -> the newest readable ``best-*.ckpt``; ``auto`` -> the
    newest readable of last.ckpt, best-*.ckpt and the Slurm requeue checkpoints (``hpc_ckpt_N.ckpt``), each
    unreadable one skipped with its reason, or None (a fresh start) when there is none; a path must exist.
    A checkpoint that cannot be read raises :class:`rsam.lit.checkpointing.CheckpointError` naming it."""
    from rsam.lit.checkpointing import CheckpointError, checkpoint_problem, newest_readable, require_readable

    if ckpt_path in (None, ""):
        return None
    folder = checkpoint_dir(recipe)
    option = f"--ckpt_path {ckpt_path}"
    if ckpt_path in ("auto", "best"):
        candidates = resume_candidates(recipe) if ckpt_path == "auto" else sorted(folder.glob("best-*.ckpt"))
        candidates = sorted(candidates, key=_newest_file_time)
        if not candidates:
            if ckpt_path == "best":
                raise FileNotFoundError(f"no best-*.ckpt in {folder}")
            log.info("--ckpt_path auto: no checkpoint in %s or %s; starting fresh", folder, run_dir(recipe))
            return None
        chosen = newest_readable(candidates, option)
        if chosen is None:
            raise CheckpointError(
                f"{option}: no readable checkpoint; the newest, {candidates[-1]}: {checkpoint_problem(candidates[-1])}"
            )
        log.info("%s: resuming from %s", option, chosen)
        return str(chosen)
    path = folder / "last.ckpt" if ckpt_path == "last" else Path(ckpt_path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} not found")
    return require_readable(path, option)


def wandb_active(recipe: DictConfig, use_wandb: bool) -> bool:
    """wandb is on unless ``--no-wandb``, ``wandb.enabled=false``, ``wandb.mode=disabled`` or WANDB_MODE=disabled."""
    settings = recipe.wandb
    return use_wandb and settings.enabled and settings.mode != "disabled" and os.environ.get("WANDB_MODE") != "disabled"


def build_loggers(recipe: DictConfig, use_wandb: bool) -> list:
    from lightning.pytorch.loggers import CSVLogger

    loggers = [CSVLogger(str(run_dir(recipe)), name="csv")]
    settings = recipe.wandb
    if wandb_active(recipe, use_wandb):
        from lightning.pytorch.loggers import WandbLogger

        # the mode is passed explicitly: rsam never logs in; offline runs never open a network connection
        save_dir = Path(settings.save_dir or run_dir(recipe))
        save_dir.mkdir(parents=True, exist_ok=True)
        loggers.append(
            WandbLogger(
                project=settings.project,
                name=settings.name or recipe.name,
                save_dir=str(save_dir),
                offline=settings.mode == "offline",
                mode=settings.mode,
                config=OmegaConf.to_container(recipe, resolve=True),
            )
        )
    return loggers


def build_callbacks(recipe: DictConfig, use_wandb: bool, fitting: bool) -> list[pl.Callback]:
    """Fitting: the run-folder lock, per-step reseeding, and best-by-monitor + last checkpoints that also stop the run
    at a step boundary on SIGTERM/SIGINT/SIGUSR1 and save on any exception (exact resume)."""
    from rsam.lit.checkpointing import RunCheckpoint, RunFolderLock
    from rsam.lit.resume import Interruptions, StepSeeding

    callbacks: list[pl.Callback] = []
    if fitting:
        ckpt = recipe.checkpoint
        callbacks.append(RunFolderLock(run_dir(recipe), checkpoint_dir(recipe)))
        callbacks.append(StepSeeding(recipe.seed))
        callbacks.append(
            RunCheckpoint(
                dirpath=str(checkpoint_dir(recipe)),
                filename=BEST_FILENAME,
                monitor=ckpt.monitor,
                mode=ckpt.mode,
                save_top_k=ckpt.save_top_k,
                auto_insert_metric_name=False,
                interruptions=Interruptions(),
            )
        )
        from rsam.lit.throughput import TrainingThroughput

        callbacks.append(TrainingThroughput())  # samples/s, TFLOP/s, MFU, peak memory: progress bar and loggers
    if wandb_active(recipe, use_wandb) and recipe.wandb.panel_samples > 0:
        callbacks.append(OverlayPanel(recipe.wandb.panel_samples))
    return callbacks


def _strategy(recipe: DictConfig):
    """``ddp`` as upstream: ``find_unused_parameters=True``, because the last stage's gates and intra-scale branch
    only update the trunk, which nothing reads after stage 4 (their gradients are always absent, upstream too).
    ``deepspeed``: ZeRO as the recipe's deepspeed section says (on CPU through the CPU shim). On CPU: gloo, and
    collectives time out after 5 minutes instead of 30, so that a desynchronised rank fails fast."""
    from rsam.lit.strategies import PROCESS_GROUP_TIMEOUT, deepspeed_strategy, runs_on_cpu
    from rsam.recipes import deepspeed_config, uses_deepspeed

    trainer = recipe.trainer
    if uses_deepspeed(recipe):
        return deepspeed_strategy(trainer.accelerator, deepspeed_config(recipe))
    if trainer.strategy != "ddp":
        return trainer.strategy
    from lightning.pytorch.strategies import DDPStrategy

    if runs_on_cpu(trainer.accelerator):
        return DDPStrategy(find_unused_parameters=True, process_group_backend="gloo", timeout=PROCESS_GROUP_TIMEOUT)
    return DDPStrategy(find_unused_parameters=True)


def build_trainer(recipe: DictConfig, *, use_wandb: bool = True, fitting: bool = False, **overrides) -> pl.Trainer:
    """The one Trainer builder (``rsam fit|validate|test|predict`` and ``rsam test --benchmark``); ``overrides``:
    Trainer arguments outside the recipe's trainer section (e.g. ``enable_checkpointing=False``)."""
    from rsam.hardware import warn_if_bf16_is_emulated
    from rsam.lit.strategies import runs_on_cpu

    options = OmegaConf.to_container(recipe.trainer)
    if str(recipe.trainer.precision).startswith("bf16") and runs_on_cpu(recipe.trainer.accelerator):
        warn_if_bf16_is_emulated(f"trainer.precision={recipe.trainer.precision}")
    options["strategy"] = _strategy(recipe)
    options = {key: value for key, value in options.items() if value is not None}
    from rsam.lit.checkpointing import AtomicCheckpointIO

    options.update(overrides)
    return pl.Trainer(
        logger=build_loggers(recipe, use_wandb),
        callbacks=build_callbacks(recipe, use_wandb, fitting),
        plugins=[AtomicCheckpointIO()],  # every checkpoint file written atomically (best, last, hpc_ckpt_N)
        **options,
    )


def prepare_process(recipe: DictConfig) -> None:
    """Seed and thread settings; call before building anything."""
    if recipe.threads:
        torch.set_num_threads(int(recipe.threads))
    pl.seed_everything(recipe.seed, workers=True, verbose=False)
