"""Distributed checks of the shard samplers, run as a subprocess by the tests (never under pytest itself).

    python ddp_shards_check.py lightning OUT DATA_DIR [MODE]  # Lightning DDP (2 CPU processes), MODE indexed|stream
    torchrun --nproc_per_node 2 ddp_shards_check.py plain OUT DATA_DIR TRAIN_PER_RANK [MORE LOCATIONS ...]

Each rank writes ``OUT/<mode>-rank<r>.json`` with what it saw; the test checks the union.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from pathlib import Path

import torch


def key_and_valid(sample: dict) -> tuple[str, bool]:
    return sample["__key__"], bool(sample["__valid__"])


def as_list(batch: list) -> list:
    return batch


def run_plain(out: Path, locations: list[str], train_per_rank: int) -> None:
    """For each location (a folder or URL of the same dataset), one eval pass and one training epoch; each rank
    writes ``plain-rank<r>.json`` holding one report per location."""
    import torch.distributed as dist
    from torch.utils.data import DataLoader

    from rsam.data.reader import IndexedShards
    from rsam.data.samplers import PaddedEvalSampler, ResampledShardSampler
    from rsam.data.sources import ShardCache, gather_shards

    dist.init_process_group("gloo", timeout=timedelta(seconds=300))
    rank, world = dist.get_rank(), dist.get_world_size()
    cache = ShardCache(out / "cache")  # shared by both ranks and their workers
    reports = []
    for location in locations:
        dataset = IndexedShards(gather_shards(location, "val"), transform=key_and_valid, cache=cache)
        loader = DataLoader(
            dataset, batch_size=512, sampler=PaddedEvalSampler(len(dataset)), num_workers=2, collate_fn=as_list
        )
        valid_keys, padding = [], 0
        for batch in loader:
            for key, valid in batch:
                if valid:
                    valid_keys.append(key)
                else:
                    padding += 1
        train = ResampledShardSampler(dataset.sizes, train_per_rank, seed=7)
        train.set_epoch(1)
        train_loader = DataLoader(dataset, batch_size=512, sampler=train, num_workers=2, collate_fn=as_list)
        train_keys = [key for batch in train_loader for key, _ in batch]
        counts = [None] * world
        dist.all_gather_object(counts, {"valid": len(valid_keys), "padding": padding, "train": len(train_keys)})
        reports.append(
            {
                "location": location,
                "rank": rank,
                "world": world,
                "valid_keys": valid_keys,
                "padding": padding,
                "all_counts": counts,
                "train_count": len(train_keys),
                "train_head": train_keys[:50],
            }
        )
    (out / f"plain-rank{rank}.json").write_text(json.dumps(reports))
    dist.destroy_process_group()


def run_lightning(out: Path, data_dir: str, mode: str = "indexed") -> None:
    import lightning.pytorch as pl
    from lightning.pytorch.strategies import DDPStrategy

    from datamodules.remotesam_shards import RemoteSAMShardDataModule

    class Recorder(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.seen = {"val": [], "train": []}

        def training_step(self, batch, batch_idx):
            self.seen["train"].append([m["key"] for m in batch["meta"]])
            return (self.weight * batch["image"].mean()).sum()

        def validation_step(self, batch, batch_idx):
            assert batch["image"].shape[1:] == (3, 32, 32) and batch["mask"].dtype == torch.int64
            assert batch["input_ids"].shape[1] == 20
            for meta, valid in zip(batch["meta"], batch["valid"].tolist()):
                self.seen["val"].append([meta["key"], valid])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def on_fit_end(self):
            (out / f"lightning-rank{self.global_rank}.json").write_text(
                json.dumps({"rank": self.global_rank, "world": self.trainer.world_size, **self.seen})
            )

    datamodule = RemoteSAMShardDataModule(
        data_dir,
        image_size=32,
        batch_size=3,
        num_workers=2,
        samples_per_rank=6,
        seed=3,
        mode=mode,
        cache_dir=str(out / "cache"),
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=DDPStrategy(timeout=timedelta(seconds=120)),
        max_epochs=2,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Recorder(), datamodule=datamodule)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    mode, out_dir, data = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if mode == "plain":
        run_plain(out_dir, [data, *sys.argv[5:]], int(sys.argv[4]))
    else:
        run_lightning(out_dir, data, *sys.argv[4:5])
