"""``rsam fit``: train RemoteSAM from a recipe (best-by-val-oIoU and last checkpoints, wandb offline by default)."""

from __future__ import annotations

import argparse
import logging

from rsam.cli._lightning import add_recipe_arguments, finish, start

log = logging.getLogger(__name__)


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "fit",
        help="train from a recipe",
        description="Train the referring-segmentation model described by a recipe. Keeps the best checkpoint by "
        "val/oIoU and last.ckpt under <trainer.default_root_dir>/checkpoints.",
    )
    return add_recipe_arguments(
        parser,
        "resume from a Lightning checkpoint: 'last', 'best', a path, or 'auto' (the "
        "newest of last.ckpt and Slurm's hpc_ckpt_N.ckpt; a fresh start if none)",
    )


def run(args) -> int:
    import signal

    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from rsam.lit.checkpointing import CheckpointError, release_run_lock

    session = start("fit", args, fitting=True)
    trainer = session.trainer
    callback = trainer.checkpoint_callback
    try:
        # resumed checkpoints are read with weights-only unpickling (no code in a checkpoint can run)
        trainer.fit(session.module, datamodule=session.datamodule, ckpt_path=session.ckpt_path, weights_only=True)
    except SIGTERMException:  # every rank stopped after the same step and last.ckpt holds it (RunCheckpoint)
        signum = callback.stopped_by or signal.SIGTERM
        log.warning(
            "stopped by %s after step %d; resume with --ckpt_path last (or auto)",
            signal.Signals(signum).name,
            trainer.global_step,
        )
        return 128 + signum  # the shell's code for a process ended by that signal (143 for SIGTERM)
    except CheckpointError:  # a full disk, or a run folder in use: one line, from rank 0 only
        if not trainer.is_global_zero:
            return 2
        raise
    finally:
        release_run_lock(trainer)
    best_score = callback.best_model_score
    return finish(
        session,
        {
            "best": callback.best_model_path or None,
            "last": callback.last_model_path or None,
            "best_score": None if best_score is None else round(float(best_score), 6),
        },
    )
