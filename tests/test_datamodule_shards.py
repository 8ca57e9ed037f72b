"""The shard DataModule: batch contract, samplers, and exactly-once evaluation under 2-process Lightning DDP."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers.shard_utils import HELPERS, member_span, read_samples, subprocess_env
from PIL import Image

from datamodules.remotesam_shards import RemoteSAMShardDataModule
from rsam.data.reader import CorruptShardError
from rsam.data.records import decode_mask_png
from rsam.data.samplers import PaddedEvalSampler, ResampledShardSampler
from rsam.data.synthetic import write_synthetic_dataset
from rsam.preprocess import preprocess_image, resize_mask
from rsam.text import Tokenizer

HELPER = HELPERS / "ddp_shards_check.py"


@pytest.fixture(scope="module")
def uneven(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uneven")
    write_synthetic_dataset(folder, {"val": [5, 1, 7, 2], "train": [3, 4]}, image_size=24)
    return folder


def test_batch_matches_independent_preprocessing(uneven):
    datamodule = RemoteSAMShardDataModule(str(uneven), image_size=32, batch_size=4, num_workers=0)
    batch = next(iter(datamodule.val_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["input_ids"].shape == (4, 20) and batch["input_ids"].dtype == torch.int64
    assert batch["attention_mask"].dtype == torch.int64
    assert batch["mask"].shape == (4, 32, 32) and batch["mask"].dtype == torch.int64
    assert batch["valid"].tolist() == [True] * 4
    samples = read_samples(uneven)  # the standard library's tarfile, in shard order
    first_keys = [f"syn-{n:08d}" for n in range(7, 11)]  # train (7 samples) is written first; val starts at 7
    tokenizer = Tokenizer()
    for row in range(4):
        raw = samples[first_keys[row]]
        record = json.loads(raw["json"])
        assert batch["meta"][row]["key"] == raw["__key__"] and batch["meta"][row]["text"] == record["text"]
        expected_image = preprocess_image(Image.open(io.BytesIO(raw["png"])), 32)
        torch.testing.assert_close(batch["image"][row], expected_image, rtol=0, atol=0)
        expected_mask = resize_mask(decode_mask_png(raw["mask.png"]), 32).astype(np.int64)
        assert np.array_equal(batch["mask"][row].numpy(), expected_mask)
        ids, attention = tokenizer(record["text"])
        assert torch.equal(batch["input_ids"][row], ids[0]) and torch.equal(batch["attention_mask"][row], attention[0])


@pytest.mark.parametrize("sizes", [[5, 1, 7, 2], [1], [3, 3, 3], [10, 0, 1], [2, 9, 4, 4, 6]])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_eval_sampler_covers_every_sample_exactly_once(sizes, world):
    total = sum(sizes)
    per_rank = [list(PaddedEvalSampler(total, num_replicas=world, rank=r)) for r in range(world)]
    assert len({len(indices) for indices in per_rank}) == 1  # equal steps on every rank
    flat = [i for indices in per_rank for i in indices]
    real = [i for i in flat if i < total]
    assert sorted(real) == list(range(total))
    assert len(flat) - len(real) < world


def test_train_sampler_is_reproducible_equal_and_resampled():
    sizes = [5, 1, 7, 2]

    def draw(epoch, rank, seed=0):
        sampler = ResampledShardSampler(sizes, 40, seed=seed, num_replicas=2, rank=rank)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert draw(3, 0) == draw(3, 0)
    assert draw(3, 0) != draw(4, 0) and draw(3, 0) != draw(3, 1) and draw(3, 0) != draw(3, 0, seed=1)
    assert all(len(draw(e, r)) == 40 for e in range(3) for r in range(2))
    indices = draw(0, 0)
    assert min(indices) >= 0 and max(indices) < 15 and len(set(indices)) < len(indices)  # with replacement


def test_corrupt_image_member_is_named(tmp_path):
    folder = tmp_path / "syn"
    write_synthetic_dataset(folder, [3], image_size=16, split="val")
    shard = folder / "val-000000.tar"
    key = "syn-00000001"
    offset, size = member_span(shard, f"{key}.png")
    data = bytearray(shard.read_bytes())
    data[offset : offset + size] = b"\x00" * size
    shard.write_bytes(bytes(data))
    dataset = RemoteSAMShardDataModule(str(folder), image_size=16, num_workers=0).dataset("val")
    dataset[0]
    with pytest.raises(CorruptShardError, match=f"val-000000.tar:{key}: cannot decode image"):
        dataset[1]


def test_two_process_lightning_ddp_sees_every_eval_sample_once(uneven, tmp_path):
    out = tmp_path / "ddp"
    env = subprocess_env()
    result = subprocess.run(
        [sys.executable, str(HELPER), "lightning", str(out), str(uneven)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((out / f"lightning-rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    epochs = 2
    all_keys = {f"syn-{n:08d}" for n in range(7, 22)}  # train is written first: numbers 0-6
    for rank in ranks:
        assert len(rank["val"]) == epochs * 8  # ceil(15 / 2) per epoch on both ranks
    for epoch in range(epochs):
        seen = [tuple(item) for r in ranks for item in r["val"][epoch * 8 : (epoch + 1) * 8]]
        valid = [key for key, ok in seen if ok]
        assert sorted(valid) == sorted(all_keys)  # exactly once
        assert sum(1 for _, ok in seen if not ok) == 1  # one padding sample, flagged
    assert len(ranks[0]["train"]) == len(ranks[1]["train"]) == epochs * 2  # 6 samples per rank per epoch, batch 3
    assert ranks[0]["train"][:2] != ranks[0]["train"][2:]  # the epoch changes the order


def _recorder():
    """A LightningModule that records (epoch, batch_idx, sample keys) of every training batch."""
    import lightning.pytorch as pl

    class Recorder(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.seen = []

        def training_step(self, batch, batch_idx):
            self.seen.append((self.current_epoch, batch_idx, [m["key"] for m in batch["meta"]]))
            return (self.weight * batch["image"].mean()).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Recorder()


def test_resumed_run_sees_the_same_training_order(uneven, tmp_path):
    import lightning.pytorch as pl

    def fit(max_epochs, ckpt_path=None):
        datamodule = RemoteSAMShardDataModule(
            str(uneven), image_size=16, batch_size=3, num_workers=0, samples_per_rank=6, seed=5
        )
        model = _recorder()
        trainer = pl.Trainer(
            accelerator="cpu",
            devices=1,
            max_epochs=max_epochs,
            limit_val_batches=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=tmp_path,
        )
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        return [(epoch, keys) for epoch, _, keys in model.seen], trainer

    full, _ = fit(2)
    first, trainer = fit(1)
    trainer.save_checkpoint(tmp_path / "epoch1.ckpt")
    resumed, _ = fit(2, str(tmp_path / "epoch1.ckpt"))
    assert first == [item for item in full if item[0] == 0]
    assert resumed == [item for item in full if item[0] == 1]
    assert [keys for _, keys in first] != [keys for _, keys in resumed]


def test_mid_epoch_resume_continues_the_epoch_order(uneven, tmp_path):
    """Stopped after 1 of 3 batches of epoch 1, the resumed run sees exactly the batches the full run saw next."""
    import lightning.pytorch as pl

    class SaveAt(pl.Callback):  # a checkpoint written during training, as a periodic or preemption save is
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 4:
                trainer.save_checkpoint(tmp_path / "mid.ckpt")

    def fit(ckpt_path=None):
        datamodule = RemoteSAMShardDataModule(
            str(uneven), image_size=16, batch_size=2, num_workers=0, samples_per_rank=6, seed=11
        )
        model = _recorder()
        trainer = pl.Trainer(
            accelerator="cpu",
            devices=1,
            max_steps=9,
            limit_val_batches=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=tmp_path,
            callbacks=[SaveAt()],
        )
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        return model.seen

    full = fit()  # 3 epochs of 3 batches; saves after the first batch of epoch 1
    resumed = fit(str(tmp_path / "mid.ckpt"))
    assert [step[:2] for step in full[3:6]] == [(1, 0), (1, 1), (1, 2)]
    assert resumed == full[4:]
