"""Prediction writers: every rank writes the outputs of its own batches (``BasePredictionWriter``), so nothing
depends on gathering predictions on rank 0 and multi-device predicts lose nothing.

* :class:`SampleMaskWriter` (recipe-driven ``rsam predict``): ``NNNN_overlay.png`` and ``NNNN_mask.png`` per valid
  sample, NNNN = the sample's dataset index (unique across ranks), the first ``max_samples`` indices only.
* :class:`TilePartWriter` (GeoTIFF predict, :mod:`rsam.lit.geo`): one part file per tile (float16 probabilities and
  the valid mask), written under a temporary name and renamed, so an existing part is complete and a re-run skips it;
  each write is journalled per rank (``written.rank<R>.jsonl``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

log = logging.getLogger(__name__)


def atomic_save_npz(path: Path, **arrays) -> None:
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as handle:
        np.savez(handle, **arrays)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


class SampleMaskWriter(BasePredictionWriter):
    def __init__(self, out_dir: str | Path, max_samples: int | None = None):
        super().__init__(write_interval="batch")
        self.out_dir, self.max_samples = Path(out_dir), max_samples
        self.written = 0
        self.total = 0

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        from rsam.lit.panel import overlay_pair
        from rsam.visualize import save_png

        indices = list(batch_indices) if batch_indices is not None else [None] * len(batch["meta"])
        for i, index in enumerate(indices):
            if not bool(batch["valid"][i]):
                continue
            if index is None:  # a sampler Lightning cannot track: rank-local numbering, prefixed with the rank
                name = f"r{trainer.global_rank}_{self.written:04d}"
            else:
                if self.max_samples is not None and index >= self.max_samples:
                    continue
                name = f"{int(index):04d}"
            text = batch["meta"][i].get("text", "")
            save_png(overlay_pair(batch["image"][i], prediction["pred"][i], batch["mask"][i], text),
                     self.out_dir / f"{name}_overlay.png")  # fmt: skip
            save_png(prediction["pred"][i].cpu().numpy().astype(np.uint8) * 255, self.out_dir / f"{name}_mask.png")
            self.written += 1
            log.debug("rank %d wrote sample %s (%s)", trainer.global_rank, name, batch["meta"][i].get("key"))

    def on_predict_end(self, trainer, pl_module) -> None:
        count = torch.tensor(float(self.written), device=pl_module.device)
        self.total = int(trainer.strategy.reduce(count, reduce_op="sum").item())


class TilePartWriter(BasePredictionWriter):
    """Writes ``<parts>/<scene key>/<tile key>.npz`` for every predicted tile; ``on_finish(trainer)`` runs on rank 0
    after every rank has written (barrier), e.g. to assemble the scenes."""

    def __init__(self, parts_of, on_finish=None):
        super().__init__(write_interval="batch")
        self.parts_of = parts_of  # scene index -> parts folder
        self.on_finish = on_finish
        self.written = 0

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        rank = trainer.global_rank
        journals: dict[Path, list[str]] = {}
        for i, key in enumerate(batch["key"]):
            folder = self.parts_of(int(batch["scene"][i]))
            valid = batch["valid"][i].cpu().numpy()
            probs = prediction["probs"][i]
            arrays = {"valid": np.packbits(valid), "shape": np.asarray(valid.shape)}
            if bool(batch["has_data"][i]):
                arrays["probs"] = probs.cpu().numpy().astype(np.float16)
            atomic_save_npz(folder / f"{key}.npz", **arrays)
            journals.setdefault(folder, []).append(json.dumps({"tile": key, "rank": rank}))
            self.written += 1
        for folder, lines in journals.items():
            with open(folder / f"written.rank{rank}.jsonl", "a") as handle:
                handle.write("\n".join(lines) + "\n")

    def on_predict_end(self, trainer, pl_module) -> None:
        trainer.strategy.barrier("tile parts written")
        if trainer.is_global_zero and self.on_finish is not None:
            self.on_finish(trainer)
        trainer.strategy.barrier("scenes assembled")


def read_part(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(valid bool (h, w), probabilities float32 (P, h, w) or None) of a part written by :class:`TilePartWriter`."""
    with np.load(path) as part:
        shape = tuple(int(v) for v in part["shape"])
        valid = np.unpackbits(part["valid"])[: shape[0] * shape[1]].reshape(shape).astype(bool)
        probs = part["probs"].astype(np.float32) if "probs" in part else None
    return valid, probs
