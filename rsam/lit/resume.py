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
- :class:`PeerFailures` ends every rank promptly when an exception strikes one of them (the others sit in a collective
  the failed rank will never join; with NCCL they would wait for the collective timeout). With DDP the failed rank
  writes ``last.ckpt`` from its own replica first (DDP replicas are identical at a step boundary, so no barrier is
  needed; :class:`rsam.lit.checkpointing.RunCheckpoint`); with DeepSpeed its notice asks every rank to write its part
  of the checkpoint folder. The notice goes in the process group's key-value store (the
  TCPStore that MASTER_ADDR:MASTER_PORT names, which answers while the ranks are blocked in collectives). A watcher
  thread on every rank polls for it, and a notified rank leaves with exit code 2 without a traceback of its own, so
  the one error message is the failed rank's.
The training order itself is restored by the datamodule (it skips the batches the checkpointed epoch consumed).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta

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


FAILED_KEY = "rsam-fit/failed"  # {"rank", "error"} of the rank that failed first
DONE_KEY = "rsam-fit/done-"  # + rank: that rank has seen the notice (or has written its checkpoint, if it failed)
RELEASED_KEY = "rsam-fit/released"  # the failed rank has seen every DONE_KEY and touches the store no more
PEER_EXIT_CODE = 2  # a rank ended because another failed: the run failed (the CLI's code for an error)


def _store_client(timeout_s: float = 10.0):
    """A client of the process group's TCPStore (MASTER_ADDR:MASTER_PORT, set by every launcher), or None."""
    address, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if not address or not port:
        return None
    return torch.distributed.TCPStore(
        address, int(port), is_master=False, timeout=timedelta(seconds=timeout_s), wait_for_workers=False
    )


def _wait_for(condition: Callable[[], bool], timeout_s: float, poll_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(poll_s)


class PeerFailures:
    """One rank's failure told to the others without a collective (see the module docstring).

    The protocol, in the order it runs (no rank uses the store after global rank 0, which hosts it, may have left):

    1. the failed rank (``failing`` set at once, so that its own watcher stays out of the way) posts ``FAILED_KEY``
       (:meth:`post`; the first failure's notice stands when two ranks fail at once); with DDP it has already written
       ``last.ckpt`` from its own replica; with sharded state the notice carries a save request (the folder every rank
       writes its part of the checkpoint into), and it writes its own part. It sets its ``DONE_KEY``, waits until every
       rank's ``DONE_KEY`` is there (:meth:`collect`; at most ``ACK_TIMEOUT_S``, or ``SAVE_TIMEOUT_S`` for a save),
       finishes the save if every part was written, and sets ``RELEASED_KEY`` (:meth:`release`); then its exception
       goes on to the CLI (one line, exit 2);
    2. a notified rank writes its part when asked (``on_save_request``, from the watcher thread, while its main thread
       sits in a collective that will never complete, or still computes a step that cannot finish: only tensors that
       the step does not change before its optimizer update are read), sets its ``DONE_KEY`` to the outcome (JSON),
       logs one warning, waits for ``RELEASED_KEY`` and leaves (``os._exit`` with exit code 2, after flushing the
       loggers and releasing the run lock). Under Lightning's launcher global rank 0 is the process the user started
       (its exit code is the run's) and the others are its children: rank 0 waits until the failed rank, when it is
       one of its children, has exited (so that its error line comes before the shell's prompt); any other child waits
       until its parent, rank 0, has gone (at most ``PEER_WAIT_S``), as a child that exits non-zero first makes rank
       0's process observer SIGKILL rank 0 before rank 0 has reported.

    A notified rank whose collective then breaks (the failed rank's sockets closed) leaves the same way instead of
    reporting that second error (after its watcher has finished). A rank that dies without an exception (SIGKILL, out
    of memory) posts nothing: the launcher ends the others (Lightning's process observer, ``srun --kill-on-bad-exit``,
    torchrun), unless their collective breaks first (gloo), which each then handles as its own failure."""

    POLL_S = 0.1
    ACK_TIMEOUT_S = 20.0
    SAVE_TIMEOUT_S = 600.0  # every rank writes its part of a sharded checkpoint
    PEER_WAIT_S = 30.0

    def __init__(self):
        self.failing = False
        self.peer_failure: str | None = None
        self.on_save_request: Callable[[dict], dict] | None = None  # this rank's part of a save -> {"saved", "reason"}
        self._rank, self._world = 0, 1
        self._launcher_parent: int | None = None  # rank 0's pid, when Lightning's launcher started this rank
        self._children: dict[int, object] = {}  # global rank -> Popen: the ranks Lightning's launcher started here
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_leave: Callable[[], None] = lambda: None
        self._store = None

    @property
    def active(self) -> bool:
        return self._thread is not None

    def start(self, trainer: pl.Trainer, on_leave: Callable[[], None]) -> None:
        """Start the watcher (once; several ranks only). ``on_leave`` runs before a notified rank exits."""
        from lightning.fabric.plugins.environments import LightningEnvironment

        if self._thread is not None or trainer.world_size == 1:
            return
        self._rank, self._world, self._on_leave = trainer.global_rank, trainer.world_size, on_leave
        environment = trainer._accelerator_connector.cluster_environment
        if type(environment) is LightningEnvironment and trainer.local_rank > 0:
            self._launcher_parent = os.getppid()
        if trainer.global_rank == 0:
            procs = getattr(trainer.strategy.launcher, "procs", None) or []
            self._children = {rank: proc for rank, proc in enumerate(procs, start=1)}
        try:
            store = _store_client()
        except Exception as err:  # noqa: BLE001 - the run goes on; a failure then ends through the launcher
            store, reason = None, f"{type(err).__name__}: {err}"
        else:
            reason = "MASTER_ADDR/MASTER_PORT are not set"
        if store is None:
            log.warning("rank %d: no process-group store (%s); a failure on one rank ends the others only "
                        "through the launcher", self._rank, reason)  # fmt: skip
            return
        self._thread = threading.Thread(target=self._watch, args=(store,), daemon=True, name="rsam-peer-failures")
        self._thread.start()

    def stop(self) -> None:
        """End the watcher and wait for it (at most a second): a daemon thread still inside the store client's C++
        call when the interpreter exits can abort the process (SIGABRT instead of the run's exit code)."""
        self._stop.set()
        if self._thread is not None and threading.current_thread() is not self._thread:
            self._thread.join(timeout=1.0)

    def post(self, error: str, save: dict | None = None) -> dict | None:
        """Post this rank's failure (with a save request for every rank, or none); the notice that stands (this
        one, or another rank's that came first), or None without a store."""
        if self._thread is None:
            return None
        self.stop()
        mine = json.dumps({"rank": self._rank, "error": error, "save": save})
        try:
            self._store = _store_client()
            return json.loads(self._store.compare_set(FAILED_KEY, "", mine))
        except Exception as err:  # noqa: BLE001 - then the launcher ends the others
            log.warning("rank %d: could not tell the other ranks about the failure: %s", self._rank, err)
            self._store = None
            return None

    def done(self, outcome: dict) -> None:
        """This rank's ``DONE_KEY``: it has seen the notice, and how its part of a save went."""
        if self._store is not None:
            self._store.set(f"{DONE_KEY}{self._rank}", json.dumps(outcome))

    def collect(self, timeout_s: float) -> dict[int, dict | None]:
        """Every rank's outcome (None for a rank that did not answer within ``timeout_s``)."""
        if self._store is None:
            return {}
        everyone = [f"{DONE_KEY}{rank}" for rank in range(self._world)]
        _wait_for(lambda: self._store.check(everyone), timeout_s, self.POLL_S)
        outcomes: dict[int, dict | None] = {}
        for rank, key in enumerate(everyone):
            outcomes[rank] = json.loads(self._store.get(key)) if self._store.check([key]) else None
        return outcomes

    def release(self) -> None:
        if self._store is not None:
            self._store.set(RELEASED_KEY, "1")

    def wait_released(self, timeout_s: float) -> None:
        if self._store is not None:
            _wait_for(lambda: self._store.check([RELEASED_KEY]), timeout_s, self.POLL_S)

    def announce(self, error: str) -> None:
        """Tell the other ranks that this one failed, and wait until each has seen it (see the protocol)."""
        if self.post(error) is None:
            return
        try:
            self.done({"saved": False})
            self.collect(self.ACK_TIMEOUT_S)
            self.release()
        except Exception as err:  # noqa: BLE001 - then the launcher ends the others
            log.warning("rank %d: could not tell the other ranks about the failure: %s", self._rank, err)

    def leave(self) -> None:
        """End this rank after another one failed: let the watcher finish this rank's part of a save, release what
        the rank holds, then exit without unwinding (its main thread may be blocked in a collective that will never
        complete)."""
        if self._thread is not None and threading.current_thread() is not self._thread:
            self._thread.join(self.SAVE_TIMEOUT_S)  # it exits the process itself when it is done
        try:
            self._on_leave()
        finally:
            if self._launcher_parent is not None:
                _wait_for(lambda: os.getppid() != self._launcher_parent, self.PEER_WAIT_S, self.POLL_S)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(PEER_EXIT_CODE)

    def take_part(self, notice: dict) -> None:
        """This rank's answer to another rank's failure notice: its part of the save when one is asked for, its
        ``DONE_KEY``, then wait for the failed rank's release."""
        request = notice.get("save")
        outcome = {"saved": False}
        if request and self.on_save_request is not None:
            try:
                outcome = self.on_save_request(request)
            except Exception as err:  # noqa: BLE001 - reported to the failed rank, which names it
                outcome = {"saved": False, "reason": f"{type(err).__name__}: {err}"}
        try:
            self.done(outcome)
            self.wait_released(self.SAVE_TIMEOUT_S if request else self.ACK_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - the store is gone: the failed rank has gone on
            pass

    def _watch(self, store) -> None:
        while not self._stop.wait(self.POLL_S):
            try:
                if not store.check([FAILED_KEY]):
                    continue
                notice = json.loads(store.get(FAILED_KEY))
            except Exception:  # noqa: BLE001 - the store is gone (rank 0 ended): nothing to watch any more
                return
            if self.failing:
                return  # this rank failed too: its own exception path runs
            self.peer_failure = f"rank {notice['rank']} failed ({notice['error']})"
            log.warning("rank %d: stopping because %s; that rank reports the error", self._rank, self.peer_failure)
            self._store = store
            self.take_part(notice)
            failed = self._children.get(notice["rank"])
            if failed is not None:
                try:
                    failed.wait(timeout=self.PEER_WAIT_S)
                except Exception:  # noqa: BLE001 - it hangs: leave anyway (the launcher's observer is gone with us)
                    pass
            self.leave()
