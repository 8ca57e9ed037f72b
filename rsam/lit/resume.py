"""Stopping and resuming so that a stopped-and-resumed run ends bit-identical to an uninterrupted one.

- :class:`StepSeeding` reseeds torch's CPU and CUDA generators before every training step from
  (seed, batch number, rank), so dropout / drop-path masks depend only on where the run is, not on what ran before
  in this process: a resumed process draws exactly the masks the uninterrupted one drew.
- :class:`Interruptions` makes SIGTERM, SIGINT and SIGUSR1 stop a fit at an optimisation-step boundary, whichever
  rank (or every rank, or the whole process group) got the signal: the handler only notes the signal (no collective
  and no I/O inside a handler; Lightning's own SIGTERM handler broadcasts from inside the handler, which pairs with
  whatever collective another rank is in), and after every optimisation step the ranks all-reduce what they noted,
  so all of them stop after the same step. :class:`rsam.lit.checkpointing.RunCheckpoint` then saves ``last.ckpt``
  there; on Slurm's requeue signal (SIGUSR1 with Lightning's SLURMEnvironment auto-requeue) Lightning's own requeue
  runs at that boundary too (``hpc_ckpt_N.ckpt``, then ``scontrol requeue``). The exit code is 128 + the signal.
The training order itself is restored by the datamodule (it skips the batches the checkpointed epoch consumed).
"""

from __future__ import annotations

import logging
import signal
import threading

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment

log = logging.getLogger(__name__)

_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant: spreads (seed, step, rank) over the seed space
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


def step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * _MIX + step * 1_000_003 + rank * 7919) % (2**63 - 1)


class StepSeeding(pl.Callback):
    """Seeds from the run-wide batch counter (restored by a resume), so micro-batches of one accumulated
    optimisation step draw different masks."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module) -> None:
        """The training order's epoch is the trainer's epoch. Lightning passes ``epoch_progress.processed`` to
        ``set_epoch``, which a restart from an epoch-end checkpoint (a validation-end ``best-*``/``last.ckpt``)
        counts once more than the epochs run, shifting every later epoch's order by one."""
        from lightning.fabric.utilities.data import _set_sampler_epoch

        loaders = trainer.train_dataloader
        for loader in getattr(loaders, "flattened", None) or [loaders]:
            _set_sampler_epoch(loader, trainer.current_epoch)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module, batch, batch_idx: int) -> None:
        batch_number = trainer.fit_loop.epoch_loop.batch_progress.total.ready  # this batch is counted already
        torch.manual_seed(step_seed(self.seed, batch_number, trainer.global_rank))  # CPU and every CUDA generator


class Interruptions:
    """The stop signals one process received during training (the first one counts)."""

    def __init__(self):
        self.received = 0
        self._rank = 0
        self._previous: dict[int, object] = {}

    def install(self, rank: int) -> None:
        self._rank = rank
        if threading.current_thread() is not threading.main_thread() or self._previous:
            return
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._note)

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def _note(self, signum: int, frame) -> None:
        if not self.received:
            self.received = signum
            log.warning(
                "rank %d: received %s; stopping after the current optimisation step",
                self._rank,
                signal.Signals(signum).name,
            )

    def agreed(self, trainer: pl.Trainer) -> int:
        """The signal every rank stops on (0: none). A collective: every rank calls it after every step."""
        if trainer.world_size == 1:
            return self.received
        flag = torch.tensor([self.received], dtype=torch.int32, device=trainer.strategy.root_device)
        return int(trainer.strategy.reduce(flag, reduce_op="max").item())

    @staticmethod
    def is_requeue(trainer: pl.Trainer, signum: int) -> bool:
        environment = trainer._accelerator_connector.cluster_environment
        return (
            isinstance(environment, SLURMEnvironment)
            and environment.auto_requeue
            and signum == int(environment.requeue_signal or signal.SIGUSR1)
        )
