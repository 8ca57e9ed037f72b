"""Streaming training data (``data.mode: stream``): a ``webdataset`` pipeline for shards too big to cache.

Per rank and DataLoader worker, one epoch is::

    weighted shard draw with replacement      seeded from (seed, epoch, rank, worker); weights = samples per shard
    -> url_opener, tar_file_expander          webdataset's sequential tar reading from any gopen URL (file, http,
                                              s3, pipe:), errors through our handler
    -> loss accounting                        samples lost to unreadable or short shards, counted per reason
    -> group_by_keys                          members -> samples
    -> wds.shuffle(buffer)                    sample shuffle buffer, rng seeded from (seed, epoch, rank, worker)
    -> resume skip                            raw samples already consumed by a checkpointed run (not decoded)
    -> decode (in the worker)                 image, mask, tokens; bad samples dropped and counted, or raised
    -> .with_epoch(n)                         exactly n samples from this worker

Resampling replaces node and worker splitting: every (rank, worker) draws its own shards from its own seed, so no
rank waits for another and nothing depends on the shard count being a multiple of ``world x workers``. Each rank
yields ``batches_per_rank x batch_size`` samples per epoch (``samples_per_rank`` rounded up to whole batches), split
over its workers in whole batches, so every rank runs the same number of full batches (no DDP hang).

Resume: the stream of each (rank, worker) is a function of (seed, epoch), and the DataLoader takes batches from its
workers in a fixed round-robin order, so a run resumed after ``k`` batches of an epoch makes each worker skip the raw
samples of its share of those ``k`` batches (DataLoader worker 0 taking the role of the worker whose batch came next)
and then yields exactly the batches the uninterrupted run saw next. This
holds as long as the shards' bytes are unchanged and no sample was skipped for bad data before the checkpoint (a
skipped sample shifts the rest of that worker's epoch by one sample).
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import tarfile
from collections import Counter
from collections.abc import Callable
from functools import partial

import numpy as np
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info
from webdataset.tariterators import base_plus_ext, group_by_keys, tar_file_expander, url_opener

from rsam.data.reader import ON_ERROR
from rsam.data.sources import CorruptShardError, ShardUnavailableError

log = logging.getLogger(__name__)


def round_robin_consumed(worker_batches: list[int], done: int) -> tuple[list[int], int]:
    """After ``done`` batches of an epoch: how many batches each worker has delivered (the DataLoader takes them
    round-robin, exhausted workers leaving the cycle), and which worker delivers the next one."""
    workers = len(worker_batches)
    if done > sum(worker_batches):
        raise ValueError(f"{done} batches is more than the epoch's {sum(worker_batches)}")
    consumed, worker = [0] * workers, -1
    for _ in range(done):
        worker = next(
            w % workers
            for w in range(worker + 1, worker + 1 + workers)
            if consumed[w % workers] < worker_batches[w % workers]
        )
        consumed[worker] += 1
    following = [
        w % workers
        for w in range(worker + 1, worker + 1 + workers)
        if consumed[w % workers] < worker_batches[w % workers]
    ]
    return consumed, following[0] if following else 0


class _ShardDraw:
    """The first pipeline stage: an endless weighted draw of shard URLs, reproducible from its seed."""

    def __init__(self, urls: list[str], weights: list[int], seed: list[int]):
        self.urls, self.seed = urls, seed
        self.p = np.asarray(weights, dtype=np.float64) / float(sum(weights))

    def __call__(self):
        rng = np.random.default_rng(self.seed)
        while True:
            for index in rng.choice(len(self.urls), size=64, p=self.p):
                yield {"url": self.urls[int(index)]}


class _Losses:
    """Shard-level losses turned into per-sample counts: errors reported by webdataset's tar stages (through their
    ``handler``) and shards that end before their indexed sample count (a tar cut at a member boundary reads as a
    shorter, valid tar). ``track`` sits between ``tar_file_expander`` and ``group_by_keys``, where each shard visit
    ends with an end-of-shard marker."""

    def __init__(self, on_error: str, nsamples: dict[str, int], max_lost: int):
        self.on_error, self.nsamples, self.max_lost = on_error, nsamples, max_lost
        self.counts: Counter = Counter()  # lost samples not yet reported with a delivered sample
        self.lost = 0
        self.url, self.keys, self.last_key = None, 0, None  # the shard visit in progress

    def _lose(self, url: str, reason: str, message: str, lost: int, cause: Exception | None = None) -> None:
        if self.on_error == "raise":
            error = (
                ShardUnavailableError(message) if reason == "shard_unavailable" else CorruptShardError(message, reason)
            )
            raise error from cause
        log.warning("skipped %d sample(s) (%s): %s", lost, reason, message)
        self.add(reason, lost)

    def handler(self, exn: Exception) -> bool:
        """webdataset's exception handler: raise (naming the shard) or count the shard's unread samples."""
        if isinstance(exn, CorruptShardError):
            raise exn  # ours, raised by an inner stage's call of this handler: already names the shard
        url = next((a for a in reversed(exn.args) if isinstance(a, str) and a in self.nsamples), None)
        if url is None:  # raised while reading the members of the shard in progress (no URL in the arguments)
            if self.url is None:
                return True  # a follow-up error of a shard already accounted
            url = self.url
        read = self.keys if url == self.url else 0
        self.url = None
        opened = read > 0 or isinstance(exn, (tarfile.TarError, EOFError))
        reason = "shard_truncated" if opened else "shard_unavailable"
        what = "unreadable" if opened else "cannot open"
        detail = str(exn.args[0]).split(" @ <")[0] if exn.args else repr(exn)
        self._lose(url, reason, f"{url}: {what} shard: {detail}", max(0, self.nsamples.get(url, 0) - read), exn)
        return True

    def add(self, reason: str, count: int = 1) -> None:
        self.counts[reason] += count
        self.lost += count
        if self.lost > self.max_lost:
            raise CorruptShardError(
                f"{self.lost} samples lost to bad data in one worker's epoch, more than data.max_skip_fraction "
                f"allows ({self.max_lost}): {dict(self.counts)}",
                "bad_sample",
            )

    def track(self, src):
        for item in src:
            if not item:  # end of a shard visit
                if self.url is not None and self.keys < self.nsamples.get(self.url, 0):
                    expected = self.nsamples[self.url]
                    self._lose(
                        self.url,
                        "shard_truncated",
                        f"{self.url}: ended after {self.keys} of its {expected} samples (truncated)",
                        expected - self.keys,
                    )
                self.url = None
                yield item
                continue
            if item.get("__url__") != self.url:
                self.url, self.keys, self.last_key = item.get("__url__"), 0, None
            key = base_plus_ext(item["fname"])[0]
            if key != self.last_key:
                self.keys, self.last_key = self.keys + 1, key
            yield item

    def take(self) -> Counter:
        counts, self.counts = self.counts, Counter()
        return counts


def _skip(count: int):
    def stage(src):
        return itertools.islice(src, count, None)

    return stage


def _decode(transform: Callable[[dict], dict], losses: _Losses):
    def stage(src):
        for sample in src:
            sample = dict(sample, __shard__=sample.get("__url__"), __valid__=True)
            try:
                out = transform(sample)
            except CorruptShardError as err:
                if losses.on_error == "raise":
                    raise
                log.warning("skipped (%s): %s", err.reason, err)
                losses.add(err.reason)
                continue
            out["skipped"] = losses.take()
            yield out

    return stage


class StreamingShards(IterableDataset):
    """The training stream of one rank over shards ``[{url, nsamples, ...}]`` (see the module docstring)."""

    def __init__(
        self,
        shards: list[dict],
        transform: Callable[[dict], dict],
        *,
        samples_per_rank: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        shuffle_buffer: int = 1000,
        on_error: str = "raise",
        max_skip_fraction: float = 0.0,
    ):
        if not shards:
            raise ValueError("no training shards")
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.urls = [shard["url"] for shard in shards]
        self.weights = [int(shard["nsamples"]) for shard in shards]
        self.nsamples = dict(zip(self.urls, self.weights))
        self.transform, self.batch_size, self.seed = transform, int(batch_size), int(seed)
        self.rank, self.world, self.shuffle_buffer = int(rank), int(world), int(shuffle_buffer)
        self.on_error, self.max_skip_fraction = on_error, float(max_skip_fraction)
        self.batches_per_rank = max(1, math.ceil(samples_per_rank / self.batch_size))
        self.epoch = 0
        self._resume: tuple[int, int] | None = None

    def __len__(self) -> int:
        return self.batches_per_rank * self.batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def resume_within_epoch(self, epoch: int, batches_done: int) -> None:
        """Make the next pass over ``epoch`` skip its first ``batches_done`` batches."""
        if not 0 <= batches_done <= self.batches_per_rank:
            raise ValueError(f"batches_done {batches_done} is outside 0..{self.batches_per_rank}")
        self._resume = (int(epoch), int(batches_done)) if batches_done else None

    def worker_batches(self, workers: int) -> list[int]:
        base, extra = divmod(self.batches_per_rank, workers)
        return [base + (w < extra) for w in range(workers)]

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        batches = self.worker_batches(workers)
        skip = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            consumed, following = round_robin_consumed(batches, self._resume[1])
            # the DataLoader starts its cycle at worker 0 again: that worker plays the one whose batch came next
            worker = (worker + following) % workers
            skip = consumed[worker] * self.batch_size
        if info is None:
            self._resume = None  # in the main process the stream is iterated again next epoch
        count = batches[worker] * self.batch_size - skip
        if count <= 0:
            return iter(())
        seed = [self.seed, self.epoch, self.rank, worker]
        losses = _Losses(self.on_error, self.nsamples, int(self.max_skip_fraction * batches[worker] * self.batch_size))
        pipeline = wds.DataPipeline(
            _ShardDraw(self.urls, self.weights, seed),
            partial(url_opener, handler=losses.handler),
            partial(tar_file_expander, handler=losses.handler),
            losses.track,
            partial(group_by_keys, handler=losses.handler),
            wds.shuffle(
                self.shuffle_buffer,
                initial=min(self.shuffle_buffer, 100),
                rng=random.Random(int(np.random.SeedSequence(seed).generate_state(1)[0])),
            ),
            _skip(skip),
            _decode(self.transform, losses),
        ).with_epoch(count)
        return iter(pipeline)
