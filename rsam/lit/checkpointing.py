"""The checkpoint lifecycle of ``rsam fit``: every write atomic, one ``last.ckpt`` that always holds the newest state,
checkpoints checked before they are resumed, and one live fit per run folder.

- :class:`AtomicCheckpointIO` is the trainer's CheckpointIO plugin, so every file Lightning writes (``best-*.ckpt``,
  ``last.ckpt``, the Slurm requeue checkpoint ``hpc_ckpt_N.ckpt``) goes to a temporary file in the same folder, is
  fsynced and renamed over the old one. A failed write (a full disk, a kill) never leaves a partial file under the real
  name: the temporary file is removed (or, after SIGKILL, by the next fit that takes the run folder) and the previous
  checkpoint stays as it was. A full disk stops the run with one line (:class:`CheckpointWriteError`).
- :class:`RunCheckpoint` is Lightning's ModelCheckpoint with its version counter off (``last.ckpt`` is rewritten in
  place, never ``last-v1.ckpt``) that rewrites ``last.ckpt`` at every checkpoint point, also when the monitored metric
  did not improve (Lightning 2.6 then keeps the old one) and at the end of training. It saves ``last.ckpt`` when the
  ranks agree to stop on a signal
  (:mod:`rsam.lit.resume`) and when an exception ends a fit (at the last completed step, :class:`StepStart`; with
  several ranks the failed rank writes it from its own replica (DDP), or every rank writes its part of the DeepSpeed
  folder, see :meth:`RunCheckpoint.on_exception`).
- :func:`replace_folder` puts a finished DeepSpeed checkpoint folder in place of the old one (the strategy's saves in
  :mod:`rsam.lit.strategies` and the failure save); :func:`remove_orphans` cleans up after a killed writer.
- :func:`checkpoint_problem` says why a checkpoint cannot be read (torn, truncated, not a Lightning checkpoint) without
  reading its tensors; ``--ckpt_path`` uses it to skip or name bad files in one line.
- :class:`RunFolderLock` holds ``<run>/.rsam-fit.lock`` (pid, host, Slurm job) while a fit runs; a second fit into
  the folder is refused, a lock left by a dead process (same host, or the same Slurm job requeued) is taken over with
  a warning.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import threading
import time
import zipfile
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from rsam.lit.resume import PeerFailures

log = logging.getLogger(__name__)

TEMP_MARK = ".tmp-"  # ".<name>.tmp-<pid>": a checkpoint being written (or left by a killed writer)
OLD_MARK = ".old-"  # ".<name>.old-<pid>": a checkpoint folder moved aside while its replacement is renamed in
LOCK_NAME = ".rsam-fit.lock"
REQUIRED_KEYS = ("state_dict", "global_step")


class CheckpointError(ValueError):
    """A checkpoint that cannot be written or read, or a run folder already in use; the message names the file."""


class CheckpointWriteError(CheckpointError):
    pass


class RunFolderInUse(CheckpointError):
    pass


# ---- atomic writes ---------------------------------------------------------------------------------------------
def temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")


def _os_error(err: BaseException) -> OSError | None:
    """The OSError behind ``err`` (torch's zip writer turns a failed ``write`` into a RuntimeError)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _save_synced(state: dict, path: str | Path) -> None:
    """``torch.save`` to ``path``, its data on the disk before this returns."""
    with open(path, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_save(checkpoint: dict, path: str | Path) -> None:
    """``torch.save`` to ``.<name>.tmp-<pid>`` next to ``path``, fsync, rename over ``path``, fsync the folder.

    On any failure the temporary file is removed, ``path`` is untouched and :class:`CheckpointWriteError` names it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        _save_synced(checkpoint, tmp)
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        failure = write_failure(path, err)
        if failure is None:
            raise
        raise failure from err


def write_failure(path: Path, err: BaseException) -> CheckpointWriteError | None:
    """The one-line error for a checkpoint write that failed with an OSError (a full disk, ...), or None."""
    cause = _os_error(err)
    if cause is None:
        return None
    kept = f"the previous {path.name} is kept" if path.exists() else f"no {path.name} was written"
    if cause.errno in (errno.ENOSPC, errno.EDQUOT):
        return CheckpointWriteError(f"no space left on the device to write checkpoint {path}; {kept}")
    return CheckpointWriteError(f"cannot write checkpoint {path}: {cause.strerror or cause}; {kept}")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch CheckpointIO with :func:`atomic_save` in place of its copy-from-``$TMPDIR`` write."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint takes no storage_options, got {storage_options}")
        atomic_save(checkpoint, path)


def replace_folder(new: Path, path: Path) -> None:
    """Put the finished checkpoint folder ``new`` (a DeepSpeed checkpoint) in place of ``path``.

    A folder cannot be renamed over a non-empty one, so the old folder is first renamed to ``.<name>.old-<pid>``,
    then ``new`` to ``path``, then the old one is deleted. A kill between the two renames leaves the old folder under
    its ``.old-`` name, which :func:`remove_orphans` renames back when there is no ``path``."""
    new, path = Path(new), Path(path)
    for folder in [*new.rglob("*"), new]:  # the files' data and the folder entries reach the disk first
        if folder.is_dir():
            _fsync_folder(folder)
        else:
            with open(folder, "rb") as handle:
                os.fsync(handle.fileno())
    old = path.with_name(f".{path.name}{OLD_MARK}{os.getpid()}")
    if path.exists():
        os.replace(path, old)
    os.replace(new, path)
    _fsync_folder(path.parent)
    shutil.rmtree(old, ignore_errors=True)


def _pid_suffix(path: Path, mark: str) -> bool:
    return mark in path.name and path.name.rsplit(mark, 1)[-1].isdigit()


def remove_orphans(*folders: Path) -> list[Path]:
    """Delete temporary checkpoint files and folders left by a killed writer, and put back a DeepSpeed checkpoint
    folder that a killed :func:`replace_folder` had moved aside (call while holding the run folder's lock)."""
    removed = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob(f".*{OLD_MARK}*")):
            if not _pid_suffix(path, OLD_MARK):
                continue
            original = path.with_name(path.name[1:].rsplit(OLD_MARK, 1)[0])
            if original.exists():
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink()
            else:
                log.warning("restoring %s from %s (its replacement was killed half-way)", original, path)
                os.replace(path, original)
        for path in sorted(folder.glob(f".*{TEMP_MARK}*")):
            if _pid_suffix(path, TEMP_MARK) and (path.is_file() or path.is_dir()):
                log.warning("removing %s, a checkpoint write that never finished (its process was killed)", path)
                shutil.rmtree(path) if path.is_dir() else path.unlink()
                removed.append(path)
    return removed


# ---- reading ---------------------------------------------------------------------------------------------------
def checkpoint_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be resumed from (missing, empty, torn, not a Lightning checkpoint), or None.

    A file is opened with the weights-only unpickler and memory-mapped, so its tensors are not read. A DeepSpeed
    checkpoint folder needs its model-states file(s), each a complete torch zip archive."""
    path = Path(path)
    if not path.exists():
        return "not found"
    if path.is_dir():
        states = sorted(path.glob("checkpoint/*model_states.pt"))
        if not states:
            return "a folder without DeepSpeed model states (checkpoint/*model_states.pt)"
        for state in sorted(path.glob("checkpoint/*.pt")):
            if not zipfile.is_zipfile(state):
                return f"{state.name} is truncated or not a torch archive ({state.stat().st_size} bytes)"
        return None
    size = path.stat().st_size
    if size == 0:
        return "empty file (0 bytes)"
    if not zipfile.is_zipfile(path):
        return f"truncated or not a torch checkpoint ({size} bytes, no zip directory at its end)"
    try:
        content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:
        return f"unreadable ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    if not isinstance(content, dict) or any(key not in content for key in REQUIRED_KEYS):
        return f"not a Lightning checkpoint (no {' / '.join(REQUIRED_KEYS)})"
    return None


def require_readable(path: str | Path, option: str) -> str:
    problem = checkpoint_problem(path)
    if problem is not None:
        raise CheckpointError(f"{option}: checkpoint {path}: {problem}")
    return str(path)


def newest_readable(candidates: list[Path], option: str) -> Path | None:
    """The newest of ``candidates`` (oldest first) that can be read; each skipped one is logged with its reason."""
    for path in reversed(candidates):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        log.warning("%s: skipping checkpoint %s: %s", option, path, problem)
    return None


# ---- the ModelCheckpoint of a fit ------------------------------------------------------------------------------
class RunCheckpoint(ModelCheckpoint):
    """Best-by-monitor checkpoints plus ``last.ckpt``, always rewritten under that name (atomically, through the
    trainer's :class:`AtomicCheckpointIO`).

    At every optimisation step it asks :class:`rsam.lit.resume.Interruptions` whether any rank got a stop signal
    (one small all-reduce; Lightning runs checkpoint callbacks after all others, so test pauses run first); if so,
    every rank saves ``last.ckpt`` here (and Lightning's requeue checkpoint on Slurm's requeue signal) and Lightning
    raises its SIGTERMException on every rank at the same step. An exception that ends a fit saves ``last.ckpt`` at
    the last completed step (:meth:`on_exception`), and :class:`rsam.lit.resume.PeerFailures` ends the other ranks."""

    def __init__(self, *args, interruptions, **kwargs):
        super().__init__(*args, save_last=True, enable_version_counter=False, **kwargs)
        self.interruptions = interruptions
        self.peers = PeerFailures()
        self.stopped_by: int | None = None
        self._step_checked: int | None = None
        self.step_start = StepStart()

    @property
    def last_path(self) -> Path:
        return Path(self.dirpath) / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"

    def save_last_now(self, trainer: pl.Trainer) -> None:
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def setup(self, trainer: pl.Trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit":  # the process group exists from here on
            self.peers.start(trainer, on_leave=lambda: _leave_run(trainer))
            self.peers.on_save_request = lambda request: self._save_part(trainer, Path(request["folder"]))
            self.step_start.watch(pl_module)

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module) -> None:
        self.interruptions.install(trainer.global_rank)  # replaces Lightning's handlers, registered just before

    def on_train_start(self, trainer: pl.Trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        self._step_checked = trainer.global_step
        self.interruptions.install(trainer.global_rank)  # (when there is no sanity check)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.global_step != self.step_start.step:
            self.step_start.record(trainer, pl_module)  # the first batch of an optimisation step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if trainer.global_step == self._step_checked:
            return  # inside an accumulation window: stop only where an optimisation step has just finished
        self._step_checked = trainer.global_step
        signum = self.interruptions.agreed(trainer)
        if not signum:
            return
        self.stopped_by = signum
        if self._last_global_step_saved != trainer.global_step:
            self.save_last_now(trainer)
        if self.interruptions.is_requeue(trainer, signum):
            trainer._signal_connector._slurm_sigusr_handler_fn(signum, None)  # Lightning's: hpc_ckpt_N + requeue
        log.warning(
            "rank %d: stopping on signal %d after step %d; saved %s",
            trainer.global_rank,
            signum,
            trainer.global_step,
            self.last_path,
        )
        trainer._signal_connector.received_sigterm = True  # Lightning's loops raise SIGTERMException on every rank

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if not self._should_skip_saving_checkpoint(trainer) and self._should_save_on_train_epoch_end(trainer):
            self.save_last_now(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_skip_saving_checkpoint(trainer) and not self._should_save_on_train_epoch_end(trainer):
            self.save_last_now(trainer)  # Lightning (2.6) rewrites last.ckpt only when a best-* was saved too

    def on_train_end(self, trainer: pl.Trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)
        if not self._should_skip_saving_checkpoint(trainer):
            self.save_last_now(trainer)  # the final state, whatever the schedule of validations

    def on_exception(self, trainer: pl.Trainer, pl_module, exception: BaseException) -> None:
        """Save ``last.ckpt`` at the last completed step, then, with several ranks, end the others.

        - Single process: through Lightning's own save (any strategy).
        - Several ranks, DDP: the failed rank writes it from its own replica (DDP keeps every replica identical at a
          step boundary), through the atomic CheckpointIO and without Lightning's barrier, which the other ranks,
          blocked in a collective, would never reach. Then :class:`rsam.lit.resume.PeerFailures` tells them to leave.
        - Several ranks, DeepSpeed (ZeRO stage 1/2/3: no rank holds the whole state): the failed rank asks every rank,
          through the process group's store, to write its part of the checkpoint folder (:meth:`_save_part`; the
          others do it from their watcher thread) into one temporary folder, which it puts in place of ``last.ckpt``
          once every part is there (:func:`replace_folder`); if a rank cannot, nothing replaces the newest checkpoint
          and the log says which rank and why.
        - Other strategies that may shard their state over several ranks (FSDP, a sharded optimizer): nothing is
          written; the log says so and the newest checkpoint on disk stays the one to resume.
        - The state of the last completed step: the buffers a forward pass changes (BatchNorm statistics) are put back
          from their copy at the step's start, the batch counters go back to the step's first batch (a gradient-
          accumulation window restarts whole), and the optimizer's tensors are checked by their version counters: an
          exception after the optimizer update had begun changing them (some weights and moments already hold the
          new step) writes nothing rather than a torn state, as the previous values exist nowhere in memory.
        A rank that failed only because another one failed first (its collective broke) leaves quietly."""
        self.interruptions.uninstall()
        if self.peers.peer_failure is not None:
            self.peers.leave()
        self.peers.failing = True
        told = False
        try:
            told = self._save_after(trainer, exception)
        finally:
            if not told and not isinstance(exception, (SIGTERMException, RunFolderInUse)):  # those reach every rank
                self.peers.announce(_describe(exception))
            self.peers.stop()  # Lightning may not call teardown after an exception

    def _save_after(self, trainer: pl.Trainer, exception: BaseException) -> bool:
        """Save what the failure left (see :meth:`on_exception`); True when the other ranks have been told."""
        if trainer.state.fn != "fit" or trainer.sanity_checking or isinstance(exception, SIGTERMException):
            return False
        if isinstance(exception, CheckpointError) or self._last_global_step_saved == trainer.global_step:
            return False  # a full disk (a second write would fail too), a folder another fit holds, or a step on disk
        rank, name = trainer.global_rank, type(exception).__name__
        torn = self._torn(trainer)
        if torn is not None:
            log.error("rank %d: %s came %s, so no checkpoint is written; %s", rank, name, torn, self._on_disk())
            return False
        if trainer.world_size > 1 and _is_deepspeed(trainer):
            self._save_sharded(trainer, exception)
            return True
        problem = rank_local_save_problem(trainer) if trainer.world_size > 1 else None
        if problem is not None:
            log.error("rank %d: %s ended the fit; %s, so no checkpoint is written; %s", rank, name, problem,
                      self._on_disk())  # fmt: skip
            return False
        self._back_to_last_step(trainer)
        try:
            self._save_last_here(trainer) if trainer.world_size > 1 else self.save_last_now(trainer)
        except Exception as err:  # keep the original error as the one reported
            log.error("could not save %s after the failure: %s", self.last_path, err)
            return False
        self._log_saved(trainer, name)
        return False

    def _log_saved(self, trainer: pl.Trainer, name: str) -> None:
        log.warning(
            "%s on rank %d ended the fit: saved %s at step %d, the last completed step (resume with --ckpt_path last)",
            name,
            trainer.global_rank,
            self.last_path,
            trainer.global_step,
        )

    def _torn(self, trainer: pl.Trainer) -> str | None:
        """Where the failure struck, when the optimizer update of an unfinished step had begun changing its tensors."""
        if trainer.global_step != self.step_start.step:
            return None  # no step had begun, or the failure came after the step had finished
        changed, total = self.step_start.changed(trainer)
        if not changed:
            return None
        step = trainer.global_step + 1
        return (f"during the optimizer update of step {step}, after it had changed {changed} of its {total} weight "
                "and optimizer-state entries (the previous values exist nowhere in memory)")  # fmt: skip

    def _back_to_last_step(self, trainer: pl.Trainer) -> None:
        """The live state as at the end of the last completed step (buffers, batch counters)."""
        if trainer.global_step == self.step_start.step:
            self.step_start.put_back(trainer)
        else:
            _forget_unfinished_batch(trainer)

    def _save_last_here(self, trainer: pl.Trainer) -> None:
        """``last.ckpt`` from this rank's replica alone: what Lightning's save writes on rank 0, without its barrier."""
        self.last_model_path = str(self.last_path)
        checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
        trainer.strategy.checkpoint_io.save_checkpoint(checkpoint, self.last_path)
        self._last_global_step_saved = trainer.global_step

    def _save_part(self, trainer: pl.Trainer, folder: Path) -> dict:
        """This rank's files of a DeepSpeed checkpoint of the last completed step, written into ``folder`` without a
        collective (from the watcher thread on a rank that another rank's failure stopped): {"saved", "reason"}."""
        torn = self._torn(trainer)
        if torn is not None:
            return {"saved": False, "reason": f"rank {trainer.global_rank} was stopped {torn}"}
        before = self.step_start.changed(trainer)
        buffers = None
        if trainer.global_step == self.step_start.step:  # the live buffers may hold part of the unfinished step
            self.step_start.put_back_counters(trainer)
            buffers = self.step_start.saved_buffers()
        else:
            _forget_unfinished_batch(trainer)
        save_deepspeed_part(trainer, folder, buffers)
        if self.step_start.changed(trainer) != before:
            rank = trainer.global_rank
            return {"saved": False, "reason": f"rank {rank}'s optimizer state changed while it was written"}
        return {"saved": True}

    def _save_sharded(self, trainer: pl.Trainer, exception: BaseException) -> None:
        """Every rank writes its part into one temporary folder, which then replaces ``last.ckpt`` (the failed rank
        coordinates; see :class:`rsam.lit.resume.PeerFailures`)."""
        rank, name, last = trainer.global_rank, type(exception).__name__, self.last_path
        folder = temp_path(last)
        shutil.rmtree(folder, ignore_errors=True)
        notice = self.peers.post(_describe(exception), save={"folder": str(folder)})
        if notice is None or notice["rank"] != rank:  # no store, or another rank failed first: it coordinates
            if notice is not None:
                self.peers.take_part(notice)
            return
        try:
            mine = self._save_part(trainer, folder)
        except Exception as err:  # noqa: BLE001 - reported with the others' outcomes
            mine = {"saved": False, "reason": f"rank {rank}: {type(err).__name__}: {err}"}
        self.peers.done(mine)
        outcomes = self.peers.collect(self.peers.SAVE_TIMEOUT_S)
        missing = [f"rank {r} did not answer" for r, outcome in outcomes.items() if outcome is None]
        failed = [outcome.get("reason", f"rank {r} failed") for r, outcome in outcomes.items()
                  if outcome is not None and not outcome["saved"]]  # fmt: skip
        try:
            if missing or failed:
                why = "; ".join(missing + failed)
                log.error("rank %d: %s ended the fit; the ranks could not all write their part of the checkpoint "
                          "(%s), so none is written; %s", rank, name, why, self._on_disk())  # fmt: skip
                return
            (folder / "latest").write_text("checkpoint")  # Lightning's DeepSpeed tag
            replace_folder(folder, last)
            self.last_model_path, self._last_global_step_saved = str(last), trainer.global_step
            self._log_saved(trainer, name)
        except Exception as err:  # keep the original error as the one reported
            log.error("could not save %s after the failure: %s", last, err)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            self.peers.release()

    def _on_disk(self) -> str:
        path = self.last_path
        problem = checkpoint_problem(path)
        if problem == "not found":
            return f"there is no {path} yet (a resume starts fresh)"
        if problem is not None:
            return f"{path} cannot be read ({problem})"
        if path.is_dir():
            return f"the newest checkpoint on disk, {path}, stays the one to resume"
        step = torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"]
        return f"the newest checkpoint on disk, {path} at step {step}, stays the one to resume"

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self.interruptions.uninstall()
        self.peers.stop()


class StepStart:
    """The run's state where the current optimisation step began, to tell whether an exception left the last
    completed step intact, and to put back what the unfinished step changed before its optimizer update.

    - The persistent buffers (BatchNorm running statistics, which every forward pass changes; 4 MiB for the official
      configuration) are copied when the step's first forward pass reaches the network (a forward pre-hook on the
      LightningModule's children):
      after DDP has broadcast rank 0's buffers, before any BatchNorm layer runs. Another thread that needs them first
      (a rank's watcher, :meth:`saved_buffers`) copies them itself, under the same lock, so the forward pass waits.
    - The tensors the optimizer updates (its parameters; with DeepSpeed ZeRO the fp32 master partitions) and its
      state are not copied: their version counters, which every in-place change bumps, tell whether the update had
      begun (a new state entry counts as a change).
    - The batch counters at the step's first batch, so that an unfinished gradient-accumulation window restarts
      whole (the datamodule resumes after ``current.processed`` batches)."""

    def __init__(self):
        self.step: int | None = None
        self._buffers: dict[str, torch.Tensor] | None = None
        self._module: torch.nn.Module | None = None
        self._lock = threading.Lock()
        self._tensors: list[torch.Tensor] = []
        self._versions: list[int] = []
        self._numbers: list[float] = []
        self._processed = (0, 0)

    def watch(self, pl_module: pl.LightningModule) -> None:
        """Copy the buffers when the network's forward pass begins (once per step)."""
        self._module = pl_module
        for child in pl_module.children():
            child.register_forward_pre_hook(self._before_forward)

    def _before_forward(self, module: torch.nn.Module, args) -> None:
        self.saved_buffers()

    def record(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        with self._lock:
            self.step = trainer.global_step
            self._module, self._buffers = pl_module, None  # copied when the forward pass begins
        self._tensors, self._numbers = optimizer_tensors(trainer)
        self._versions = [tensor._version for tensor in self._tensors]
        progress = trainer.fit_loop.epoch_loop.batch_progress
        self._processed = (progress.total.processed, progress.current.processed)

    def saved_buffers(self) -> dict[str, torch.Tensor] | None:
        """The buffers as the step's forward pass found them (copied now if it has not begun); None outside a step."""
        with self._lock:
            if self._buffers is None and self.step is not None and self._module is not None:
                self._buffers = {name: value.detach().clone() for name, value in persistent_buffers(self._module)}
            return self._buffers

    def changed(self, trainer: pl.Trainer) -> tuple[int, int]:
        """(how many of the optimizer's tensors and numbers changed since the step began, how many it has now)."""
        now, numbers = optimizer_tensors(trainer)
        total = len(now) + len(numbers)
        if len(now) != len(self._tensors) or len(numbers) != len(self._numbers):
            return max(1, abs(total - len(self._tensors) - len(self._numbers))), total  # new state entries
        if any(a is not b for a, b in zip(now, self._tensors)):
            return sum(a is not b for a, b in zip(now, self._tensors)), total
        changed = sum(t._version != v for t, v in zip(self._tensors, self._versions))
        return changed + sum(a != b for a, b in zip(numbers, self._numbers)), total

    def put_back(self, trainer: pl.Trainer) -> None:
        """The buffers and batch counters as they were when the step began (call from the training thread)."""
        live = dict(persistent_buffers(trainer.lightning_module))
        with torch.no_grad():
            for name, saved in (self.saved_buffers() or {}).items():
                live[name].copy_(saved)
        self.put_back_counters(trainer)

    def put_back_counters(self, trainer: pl.Trainer) -> None:
        loop = trainer.fit_loop.epoch_loop
        for tracker, processed in zip((loop.batch_progress.total, loop.batch_progress.current), self._processed):
            tracker.ready = tracker.started = tracker.processed = processed
            tracker.completed = min(tracker.completed, processed)
        loop.automatic_optimization.optim_progress.reset_on_restart()


def persistent_buffers(module: torch.nn.Module):
    """(state_dict name, buffer) of every buffer a state_dict holds."""
    for prefix, sub in module.named_modules():
        for name, buffer in sub._buffers.items():
            if buffer is not None and name not in sub._non_persistent_buffers_set:
                yield (f"{prefix}.{name}" if prefix else name), buffer


def optimizer_tensors(trainer: pl.Trainer) -> tuple[list[torch.Tensor], list[float]]:
    """What the optimizers update in place: their parameters and state tensors (for DeepSpeed's ZeRO optimizer, the
    torch optimizer it wraps, whose parameters are the fp32 master partitions), and their numeric state that is not a
    tensor (DeepSpeed's CPU Adam counts its steps in Python ints). Every update changes a step counter before the
    weights (PyTorch's fused AdamW kernel writes the weights and moments without bumping their version counters)."""
    tensors: list[torch.Tensor] = []
    numbers: list[float] = []
    for optimizer in trainer.optimizers:
        optimizer = getattr(optimizer, "_optimizer", optimizer)  # a LightningOptimizer
        for torch_optimizer in (optimizer, getattr(optimizer, "optimizer", None)):
            if not isinstance(torch_optimizer, torch.optim.Optimizer):
                continue
            for group in torch_optimizer.param_groups:
                tensors.extend(group["params"])
                numbers.append(group.get("step", 0))
            for state in torch_optimizer.state.values():
                for value in state.values():
                    if isinstance(value, torch.Tensor):
                        tensors.append(value)
                    elif isinstance(value, (int, float)):
                        numbers.append(value)
    return tensors, numbers


def save_deepspeed_part(trainer: pl.Trainer, folder: Path, buffers: dict[str, torch.Tensor] | None) -> None:
    """This rank's files of a Lightning DeepSpeed checkpoint folder, as ``DeepSpeedEngine.save_checkpoint`` writes
    them (its model-states file when the rank writes one, its ZeRO partition of the optimizer state), without the
    engine's collectives (the barriers and the tag check), with ``buffers`` in place of the live buffers when given
    and Lightning's training state (loops, callbacks, schedulers) as the client state, as Lightning saves it."""
    import deepspeed

    strategy = trainer.strategy
    engine, tag = strategy.deepspeed_engine, "checkpoint"  # Lightning's tag
    exclude = strategy.exclude_frozen_parameters
    (folder / tag).mkdir(parents=True, exist_ok=True)
    client = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
    client = {key: value for key, value in client.items() if key not in ("state_dict", "optimizer_states")}
    if engine.save_non_zero_checkpoint:
        module = engine.module_state_dict(exclude_frozen_parameters=exclude)
        module.update({name: value for name, value in (buffers or {}).items() if name in module})
        if engine.zero_optimization_partition_weights():  # ZeRO-3: placeholders, as after the engine's release of
            for name, param in engine.module.named_parameters(remove_duplicate=False):  # gathered weights
                if hasattr(param, "ds_tensor") and name in module:
                    module[name] = torch.empty(0, dtype=param.dtype)
        frozen = engine.zero_optimization_partition_gradients() and not exclude
        state = engine._common_checkpoint_state(module, engine.zero_optimization(), frozen)
        state.update(client)
        _save_synced(state, engine._get_ckpt_name(str(folder), tag))
    if engine.save_zero_checkpoint:
        zero = {"optimizer_state_dict": engine.optimizer.state_dict(), "ds_config": engine.config,
                "ds_version": deepspeed.__version__}  # fmt: skip
        _save_synced(zero, engine._get_zero_ckpt_name(str(folder), tag))


def _is_deepspeed(trainer: pl.Trainer) -> bool:
    from lightning.pytorch.strategies import DeepSpeedStrategy

    return isinstance(trainer.strategy, DeepSpeedStrategy)


def _describe(exception: BaseException) -> str:
    return f"{type(exception).__name__}: {exception}"


def rank_local_save_problem(trainer: pl.Trainer) -> str | None:
    """Why one rank cannot write the run's checkpoint from its own state (None: it can, as with DDP)."""
    from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy

    strategy = trainer.strategy
    if isinstance(strategy, DeepSpeedStrategy):
        stage = int(strategy.config.get("zero_optimization", {}).get("stage", 0))
        what = {1: "the optimizer state", 2: "the optimizer state and gradients"}
        what = what.get(stage, "the weights, gradients and optimizer state")
        return f"DeepSpeed ZeRO stage {stage} partitions {what} over the ranks, and one rank cannot save alone"
    if not isinstance(strategy, DDPStrategy):
        return f"strategy {type(strategy).__name__} may shard its state over the ranks, and one rank cannot save alone"
    for optimizer in trainer.optimizers:
        if hasattr(getattr(optimizer, "_optimizer", optimizer), "consolidate_state_dict"):
            return "the optimizer state is sharded over the ranks, and one rank cannot save alone"
    return None


def _forget_unfinished_batch(trainer: pl.Trainer) -> None:
    """Make the loops' progress say "the last batch that finished its step", as a checkpoint saved at a step boundary
    does (the failed batch was fetched or started, but its optimisation step never ran)."""
    loop = trainer.fit_loop.epoch_loop
    for tracker in (loop.batch_progress.total, loop.batch_progress.current):
        if tracker.processed < tracker.started or tracker.started < tracker.ready:
            tracker.ready = tracker.started = tracker.processed
    loop.automatic_optimization.optim_progress.reset_on_restart()


# ---- one fit per run folder ------------------------------------------------------------------------------------
def _process_start(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    now = _process_start(pid)
    return started is None or now is None or now == started  # a reused pid started at another time


class RunLock:
    """``<run>/.rsam-fit.lock``: JSON with the holder's pid, host, process start time and Slurm job id."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.held = False

    def _mine(self) -> dict:
        pid = os.getpid()
        return {
            "pid": pid,
            "host": socket.gethostname(),
            "process_start": _process_start(pid),
            "slurm_job": os.environ.get("SLURM_JOB_ID"),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # unreadable: left half-written by a killed process

    def _stale(self, holder: dict) -> bool:
        me = self._mine()
        if not holder or (holder.get("slurm_job") and holder.get("slurm_job") == me["slurm_job"]):
            return True  # an unreadable lock, or this job before Slurm requeued it
        if holder.get("host") != me["host"]:
            return False  # another machine's process: cannot be checked from here
        return not _alive(int(holder.get("pid", -1)), holder.get("process_start"))

    def acquire(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / f"{LOCK_NAME}.guard", "w") as guard:  # one check-and-take at a time on this host
            fcntl.flock(guard, fcntl.LOCK_EX)
            holder = self._holder()
            if holder is not None:
                if not self._stale(holder):
                    raise RunFolderInUse(
                        f"run folder {self.folder} is in use by another fit (pid {holder.get('pid')} on host "
                        f"{holder.get('host')} since {holder.get('since')}); wait for it, or choose another "
                        f"trainer.default_root_dir (remove {self.path} only if that process is gone)"
                    )
                log.warning(
                    "taking over the stale lock %s (pid %s on host %s is gone)",
                    self.path,
                    holder.get("pid"),
                    holder.get("host"),
                )
            tmp = temp_path(self.path)
            tmp.write_text(json.dumps(self._mine()))
            os.replace(tmp, self.path)
        self.held = True

    def release(self) -> None:
        if self.held:
            holder = self._holder()
            if holder and holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False


class RunFolderLock(pl.Callback):
    """Global rank 0 takes the run folder's :class:`RunLock` when a fit starts and removes unfinished checkpoint
    writes; every rank learns the outcome (one broadcast), so a refused fit stops everywhere with the same line."""

    def __init__(self, run_dir: Path, checkpoint_dir: Path):
        self.lock = RunLock(run_dir)
        self.checkpoint_dir = checkpoint_dir

    def setup(self, trainer: pl.Trainer, pl_module, stage: str) -> None:
        if stage != "fit":
            return
        refused = None
        if trainer.is_global_zero:
            try:
                self.lock.acquire()
                remove_orphans(self.checkpoint_dir, self.lock.folder)
            except RunFolderInUse as err:
                refused = str(err)
        refused = trainer.strategy.broadcast(refused, src=0)
        if refused:
            raise RunFolderInUse(refused)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self.lock.release()


def _leave_run(trainer: pl.Trainer) -> None:
    """What a rank ended by another rank's failure does before it exits: flush the loggers, release the run folder."""
    for logger in trainer.loggers:
        try:
            logger.save()
        except Exception as err:  # noqa: BLE001 - leaving anyway
            log.debug("could not flush %s: %s", type(logger).__name__, err)
    release_run_lock(trainer)


def release_run_lock(trainer: pl.Trainer) -> None:
    """Release the run folder after a fit, however it ended (after Lightning's on_exception hooks have saved)."""
    for callback in trainer.callbacks:
        if isinstance(callback, RunFolderLock):
            callback.lock.release()
