"""Recipe -> LightningModule / Trainer / loggers / callbacks (shared by ``rsam fit|validate|test|predict``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from rsam.lit.module import RemoteSAMModule
from rsam.lit.panel import OverlayPanel
from rsam.recipes import MINILM, model_config, model_runtime, optim_settings

log = logging.getLogger(__name__)

BEST_FILENAME = "best-epoch{epoch:03d}-step{step:06d}"


def initialise_weights(module: RemoteSAMModule, recipe: DictConfig) -> None:
    """Load ``init.weights`` (the whole network) or ``init.text_encoder`` (the text encoder) into a fresh module."""
    init = recipe.init
    if init.weights:
        from rsam.checkpoint import load_model
        from rsam.checkpoint.official import load_strict

        source = load_model(init.weights)
        if source.config.to_dict() != module.model_config.to_dict():
            raise ValueError(f"init.weights {init.weights}: its architecture differs from the recipe's model section")
        load_strict(module.model, source.state_dict(), str(init.weights))
        log.info("initialised the whole network from %s", init.weights)
    elif init.text_encoder:
        from rsam.checkpoint.text_encoder import load_text_encoder
        from rsam.text import minilm_model_dir

        folder = minilm_model_dir() if init.text_encoder == MINILM else Path(init.text_encoder)
        load_text_encoder(module.model.text_encoder, folder)
        log.info("initialised the text encoder from %s", folder)


def build_module(recipe: DictConfig, *, initialise: bool = True) -> RemoteSAMModule:
    module = RemoteSAMModule(model_config(recipe).to_dict(), optim_settings(recipe), model_runtime(recipe))
    if initialise:
        initialise_weights(module, recipe)
    return module


def load_module(ckpt_path: str | Path) -> RemoteSAMModule:
    """A trained module from a Lightning checkpoint (its hyperparameters rebuild the network; no pickled code runs).
    A DeepSpeed checkpoint folder is first merged into one fp32 checkpoint (in a scratch folder)."""
    from rsam.lit.strategies import consolidate_checkpoint, is_deepspeed_checkpoint

    if is_deepspeed_checkpoint(ckpt_path):
        import tempfile

        with tempfile.TemporaryDirectory() as scratch:
            merged = consolidate_checkpoint(ckpt_path, Path(scratch) / "consolidated.ckpt")
            return RemoteSAMModule.load_from_checkpoint(str(merged), map_location="cpu", weights_only=True)
    return RemoteSAMModule.load_from_checkpoint(str(ckpt_path), map_location="cpu", weights_only=True)


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
    """Checkpoints a restarted job can resume from: ``<checkpoints>/last.ckpt`` and Lightning's Slurm requeue
    checkpoints ``<default_root_dir>/hpc_ckpt_N.ckpt``, oldest first."""
    found = [checkpoint_dir(recipe) / "last.ckpt", *run_dir(recipe).glob("hpc_ckpt_*.ckpt")]
    return sorted((p for p in found if p.exists()), key=_newest_file_time)


def resolve_ckpt_path(recipe: DictConfig, ckpt_path: str | None) -> str | None:
    """``last`` -> ``<checkpoints>/last.ckpt``, ``best`` -> the newest ``best-*.ckpt``, ``auto`` -> the newest of
    last.ckpt and the Slurm requeue checkpoints (``hpc_ckpt_N.ckpt``), or None (a fresh start) when there is none;
    a path must exist."""
    if ckpt_path in (None, ""):
        return None
    folder = checkpoint_dir(recipe)
    if ckpt_path == "auto":
        candidates = resume_candidates(recipe)
        if not candidates:
            log.info("--ckpt_path auto: no checkpoint in %s or %s; starting fresh", folder, run_dir(recipe))
            return None
        log.info("--ckpt_path auto: resuming from %s", candidates[-1])
        return str(candidates[-1])
    if ckpt_path == "last":
        path = folder / "last.ckpt"
    elif ckpt_path == "best":
        found = sorted(folder.glob("best-*.ckpt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise FileNotFoundError(f"no best-*.ckpt in {folder}")
        path = found[-1]
    else:
        path = Path(ckpt_path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} not found")
    return str(path)


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
    """Fitting: best-by-monitor + last checkpoints, per-step reseeding and a last.ckpt on SIGTERM (exact resume)."""
    from rsam.lit.resume import PreemptionCheckpoint, StepSeeding

    callbacks: list[pl.Callback] = []
    if fitting:
        ckpt = recipe.checkpoint
        callbacks.append(
            ModelCheckpoint(
                dirpath=str(checkpoint_dir(recipe)),
                filename=BEST_FILENAME,
                monitor=ckpt.monitor,
                mode=ckpt.mode,
                save_top_k=ckpt.save_top_k,
                save_last=ckpt.save_last,
                auto_insert_metric_name=False,
            )
        )
        callbacks.append(StepSeeding(recipe.seed))
        callbacks.append(PreemptionCheckpoint(checkpoint_dir(recipe) / "last.ckpt"))
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


def build_trainer(recipe: DictConfig, *, use_wandb: bool = True, fitting: bool = False) -> pl.Trainer:
    options = OmegaConf.to_container(recipe.trainer)
    options["strategy"] = _strategy(recipe)
    options = {key: value for key, value in options.items() if value is not None}
    return pl.Trainer(
        logger=build_loggers(recipe, use_wandb), callbacks=build_callbacks(recipe, use_wandb, fitting), **options
    )


def prepare_process(recipe: DictConfig) -> None:
    """Seed and thread settings; call before building anything."""
    if recipe.threads:
        torch.set_num_threads(int(recipe.threads))
    pl.seed_everything(recipe.seed, workers=True, verbose=False)
