"""``rsam fit``: train RemoteSAM from a recipe (best-by-val-oIoU and last checkpoints, wandb offline by default)."""

from __future__ import annotations

import argparse
import logging

from rsam.cli._lightning import add_recipe_arguments, finish, start

log = logging.getLogger(__name__)
STOPPED_BY_SIGTERM = 143  # 128 + SIGTERM, the shell's code for a process ended by SIGTERM


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
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    session = start("fit", args, fitting=True)
    try:
        # resumed checkpoints are read with weights-only unpickling (no code in a checkpoint can run)
        session.trainer.fit(
            session.module, datamodule=session.datamodule, ckpt_path=session.ckpt_path, weights_only=True
        )
    except SIGTERMException:  # last.ckpt was written (rsam.lit.resume.PreemptionCheckpoint); not a finished run
        log.warning(
            "stopped by SIGTERM after step %d; resume with --ckpt_path last (or auto)", session.trainer.global_step
        )
        return STOPPED_BY_SIGTERM
    callback = session.trainer.checkpoint_callback
    best_score = callback.best_model_score
    return finish(
        session,
        {
            "best": callback.best_model_path or None,
            "last": callback.last_model_path or None,
            "best_score": None if best_score is None else round(float(best_score), 6),
        },
    )
