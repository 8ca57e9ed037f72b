"""``python tests/helpers/fit_hooks.py RECORD_DIR PAUSE_AT_STEP rsam-fit-arguments...``: ``rsam fit`` with test
callbacks added to the recipe's (the same script is what Lightning's launcher re-runs for the other ranks):

- every rank appends ``{"step", "keys"}`` of each training batch to ``RECORD_DIR/order-rank{R}.jsonl`` (the data order)
  and writes its pid to ``RECORD_DIR/pid-rank{R}`` and its layout (ranks, cluster environment, MASTER_ADDR/PORT, Slurm
  node) to ``RECORD_DIR/env-rank{R}.json``;
- when PAUSE_AT_STEP > 0, every rank stops after that optimisation step, writes ``RECORD_DIR/paused-rank{R}`` and waits
  (at most 120 s) until a stop signal reaches any rank (a rank that got one writes ``RECORD_DIR/released``) or the
  test writes ``RECORD_DIR/released`` itself. Every rank then sits in Python code, not inside a collective, when the
  signal arrives, so the stop is deterministic: the run stops after exactly that step. Under Slurm the signal may be
  SIGUSR1 (requeue); a restarted job (SLURM_RESTART_COUNT > 0) does not pause.
- ``RSAM_TEST_FAIL_AT=K``: the training step after step K raises ValueError (a bad sample, as the data would), on
  every rank or, with ``RSAM_TEST_FAIL_RANK=R``, on global rank R only;
- ``RSAM_TEST_FAIL_IN_UPDATE=K``: the optimizer update after step K raises ValueError once the torch optimizer has
  changed the weights (mid-update: the weights hold step K+1, the counters step K), on ``RSAM_TEST_FAIL_RANK`` or all;
- ``RSAM_TEST_FAIL_BEFORE_UPDATE=K``: in the step after step K, ``on_before_optimizer_step`` raises ValueError (after
  the forward pass, which changed the BatchNorm statistics, and the backward pass; before the weights change);
- ``RSAM_TEST_STALL_WRITE=K``: the write of ``last.ckpt`` at step K stops after its temporary file is written (before
  the rename), writes ``RECORD_DIR/stalled`` and sleeps, so that the test can kill the process mid-write.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import lightning.pytorch as pl

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


class RecordOrder(pl.Callback):
    def __init__(self, folder: Path):
        self.folder = folder

    def setup(self, trainer, pl_module, stage):
        rank = trainer.global_rank
        (self.folder / f"pid-rank{rank}").write_text(str(os.getpid()))
        names = ("MASTER_ADDR", "MASTER_PORT", "SLURMD_NODENAME", "SLURM_PROCID", "SLURM_NODEID", "SLURM_RESTART_COUNT")
        layout = {
            "global_rank": rank,
            "node_rank": trainer.node_rank,
            "local_rank": trainer.local_rank,
            "world_size": trainer.world_size,
            "cluster": type(getattr(trainer.strategy, "cluster_environment", None)).__name__,
            **{name: os.environ.get(name) for name in names},
        }
        (self.folder / f"env-rank{rank}.json").write_text(json.dumps(layout))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        line = {"step": trainer.global_step, "keys": [meta["key"] for meta in batch["meta"]]}
        with open(self.folder / f"order-rank{trainer.global_rank}.jsonl", "a") as out:
            out.write(json.dumps(line) + "\n")


class PauseAt(pl.Callback):
    def __init__(self, folder: Path, step: int):
        self.folder, self.step = folder, step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step != self.step or int(os.environ.get("SLURM_RESTART_COUNT", "0")) > 0:
            return  # a requeued Slurm job runs through
        (interruptions,) = [c.interruptions for c in trainer.callbacks if hasattr(c, "interruptions")]
        released = self.folder / "released"
        (self.folder / f"paused-rank{trainer.global_rank}").write_text(str(trainer.global_step))
        deadline = time.time() + 120
        while not released.exists() and time.time() < deadline:
            if interruptions.received:
                released.write_text(str(trainer.global_rank))
            time.sleep(0.05)


def _failing_rank(rank: int) -> bool:
    return os.environ.get("RSAM_TEST_FAIL_RANK", str(rank)) == str(rank)


class FailInUpdate(pl.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.global_step != self.step or not _failing_rank(trainer.global_rank):
            return

        def fail(torch_optimizer, args, kwargs):
            raise ValueError(f"rank {trainer.global_rank}: failure inside the optimizer update (test failure)")

        getattr(optimizer, "_optimizer", optimizer).register_step_post_hook(fail)


class FailBeforeUpdate(pl.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.global_step == self.step and _failing_rank(trainer.global_rank):
            raise ValueError(f"rank {trainer.global_rank}: gradient check before the optimizer update (test failure)")


def _fail_at(step: int) -> None:
    from rsam.lit.module import RemoteSAMModule

    original = RemoteSAMModule.training_step

    def training_step(self, batch, batch_idx):
        if self.global_step == step and _failing_rank(self.global_rank):
            raise ValueError(f"sample {batch['meta'][0]['key']}: mask 10x10 differs from its image (test failure)")
        return original(self, batch, batch_idx)

    RemoteSAMModule.training_step = training_step


def _stall_write(step: int, folder: Path) -> None:
    import rsam.lit.checkpointing as checkpointing

    real_save = checkpointing.torch.save

    def save(obj, handle, *args, **kwargs):
        real_save(obj, handle, *args, **kwargs)
        name = getattr(handle, "name", "")
        if isinstance(obj, dict) and obj.get("global_step") == step and ".last.ckpt" in str(name):
            handle.flush()
            (folder / "stalled").write_text(str(name))
            time.sleep(120)

    checkpointing.torch.save = save


def main() -> int:
    folder, pause_at, argv = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    folder.mkdir(parents=True, exist_ok=True)
    import rsam.lit.build as build
    from rsam.cli.main import main as rsam_main

    original = build.build_callbacks

    def build_callbacks(recipe, use_wandb, fitting):
        extra = [RecordOrder(folder)] + ([PauseAt(folder, pause_at)] if pause_at > 0 else [])
        if os.environ.get("RSAM_TEST_FAIL_IN_UPDATE"):
            extra.append(FailInUpdate(int(os.environ["RSAM_TEST_FAIL_IN_UPDATE"])))
        if os.environ.get("RSAM_TEST_FAIL_BEFORE_UPDATE"):
            extra.append(FailBeforeUpdate(int(os.environ["RSAM_TEST_FAIL_BEFORE_UPDATE"])))
        return original(recipe, use_wandb, fitting) + extra

    build.build_callbacks = build_callbacks
    if os.environ.get("RSAM_TEST_FAIL_AT"):
        _fail_at(int(os.environ["RSAM_TEST_FAIL_AT"]))
    if os.environ.get("RSAM_TEST_STALL_WRITE"):
        _stall_write(int(os.environ["RSAM_TEST_STALL_WRITE"]), folder)
    return rsam_main(argv)


if __name__ == "__main__":
    sys.exit(main())
