"""``python tests/helpers/fit_hooks.py RECORD_DIR PAUSE_AT_STEP rsam-fit-arguments...``: ``rsam fit`` with two test
callbacks added to the recipe's (the same script is what Lightning's launcher re-runs for the other ranks):

- every rank appends ``{"step", "keys"}`` of each training batch to ``RECORD_DIR/order-rank{R}.jsonl`` (the data order);
- when PAUSE_AT_STEP > 0, every rank stops after that optimisation step, writes ``RECORD_DIR/paused-rank{R}`` and waits
  (at most 120 s) for a SIGTERM, which the test sends to rank 0 from outside (Lightning forwards it to the other
  ranks). Every rank then sits in Python code, not inside a collective, when the signal arrives, so the stop is
  deterministic: the run stops after exactly that step. Under Slurm the signal may be SIGUSR1 (requeue): Slurm's
  SIGTERM that ends the requeued job releases the pause; a restarted job (SLURM_RESTART_COUNT > 0) does not pause.
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
        (self.folder / f"paused-rank{trainer.global_rank}").write_text(str(trainer.global_step))
        deadline = time.time() + 120
        while not trainer.received_sigterm and time.time() < deadline:
            time.sleep(0.05)


def main() -> int:
    folder, pause_at, argv = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    folder.mkdir(parents=True, exist_ok=True)
    import rsam.lit.build as build
    from rsam.cli.main import main as rsam_main

    original = build.build_callbacks

    def build_callbacks(recipe, use_wandb, fitting):
        extra = [RecordOrder(folder)] + ([PauseAt(folder, pause_at)] if pause_at > 0 else [])
        return original(recipe, use_wandb, fitting) + extra

    build.build_callbacks = build_callbacks
    return rsam_main(argv)


if __name__ == "__main__":
    sys.exit(main())
