"""Callbacks that make a stopped-and-resumed run end bit-identical to an uninterrupted one.

- :class:`StepSeeding` reseeds torch's CPU and CUDA generators before every training step from
  (seed, batch number, rank), so dropout / drop-path masks depend only on where the run is, not on what ran before
  in this process: a resumed process draws exactly the masks the uninterrupted one drew.
- :class:`PreemptionCheckpoint` writes ``last.ckpt`` when the run is stopped by SIGTERM (Lightning turns it into
  a ``SIGTERMException`` on every rank at the same step boundary), so ``--ckpt_path last`` resumes from the last
  finished step. Slurm's SIGUSR1 requeue path is Lightning's own (an HPC checkpoint, then ``scontrol requeue``).
The training order itself is restored by the datamodule (it skips the batches the checkpointed epoch consumed).
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant: spreads (seed, step, rank) over the seed space


def step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * _MIX + step * 1_000_003 + rank * 7919) % (2**63 - 1)


class StepSeeding(pl.Callback):
    """Seeds from the run-wide batch counter (restored by a resume), so micro-batches of one accumulated
    optimisation step draw different masks."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module, batch, batch_idx: int) -> None:
        batch_number = trainer.fit_loop.epoch_loop.batch_progress.total.ready  # this batch is counted already
        torch.manual_seed(step_seed(self.seed, batch_number, trainer.global_rank))  # CPU and every CUDA generator


class PreemptionCheckpoint(pl.Callback):
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_exception(self, trainer: pl.Trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and trainer.state.fn == "fit":
            trainer.save_checkpoint(str(self.path))
            log.info("SIGTERM: saved %s at step %d", self.path, trainer.global_step)
