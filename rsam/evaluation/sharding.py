"""Each rank's share of a benchmark, as a torch ``IterableDataset`` (plain PyTorch, no Lightning).

Rank ``r`` of ``world`` takes the samples whose position in the reader is ``r (mod world)`` — the same split as
``run_benchmark(..., shard=(r, world))`` — so the shares are disjoint and cover the benchmark. Shares are padded with
``None`` items to the same length (``ceil(n / world)``) so every rank runs the same number of steps; padding carries
no sample and is never scored. Within a rank, DataLoader workers take every ``num_workers``-th item.
Images are decoded in the workers; readers are iterated lazily (targets are decoded as samples come).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from rsam.evaluation.samples import Reader, Sample

Item = tuple[Sample, np.ndarray] | None  # None = padding


def benchmark_size(reader: Reader, limit: int | None = None) -> int:
    """Number of samples evaluated: the reader's length, or its first ``limit`` samples."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of samples, got {limit}")
    return len(reader) if limit is None else min(len(reader), limit)


class RankShare(IterableDataset):
    """Yields ``(sample, image_uint8)`` for this rank's samples, then ``None`` padding up to ``len(self)``."""

    def __init__(self, reader: Reader, rank: int = 0, world: int = 1, limit: int | None = None):
        if not 0 <= rank < world:
            raise ValueError(f"rank must be in [0, {world}), got {rank}")
        self.reader, self.rank, self.world = reader, rank, world
        self.total = benchmark_size(reader, limit)
        self.per_rank = math.ceil(self.total / world)

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self) -> Iterator[Item]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        position = 0
        for index, sample in enumerate(itertools.islice(self.reader, self.total)):
            if index % self.world != self.rank:
                continue
            if position % workers == worker:
                yield sample, sample.load_image()
            position += 1
        for pad in range(position, self.per_rank):
            if pad % workers == worker:
                yield None


def collate_items(items: list[Item]) -> list[Item]:
    """Keep a batch as the list of items (images differ in size; prompts are batched per image by the model)."""
    return list(items)
