"""Distributed samplers over shard datasets (subclasses of ``DistributedSampler``, so Lightning keeps them as is).

- :class:`ResampledShardSampler` (training): each rank draws shards with replacement (weighted by their sample
  counts), ``mix_shards`` at a time, and yields the drawn shards' samples in a shuffled order, until exactly
  ``samples_per_rank`` indices. Everything is a function of (seed, epoch, rank), so a resumed run repeats the
  same order; every rank yields the same count, so DDP collectives stay in step. ``resume_within_epoch`` makes
  the next pass over a given epoch skip the samples a checkpointed run already consumed (exact mid-epoch resume;
  ``len`` stays the full count so the trainer's batch bookkeeping is unchanged).
- :class:`PaddedEvalSampler` (validation/test): rank ``r`` gets the contiguous block ``[r*m, (r+1)*m)`` of
  ``m = ceil(N / world)`` indices; positions ``>= N`` are padding indices (``N + j``), which the dataset returns as
  ``valid=False`` copies. Every sample is seen exactly once across ranks for any shard layout, at most
  ``world - 1`` padding samples are added, and metrics skip them through the ``valid`` flag.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import DistributedSampler


def world_and_rank(num_replicas: int | None = None, rank: int | None = None) -> tuple[int, int]:
    """Explicit values, else ``torch.distributed`` if initialised, else ``WORLD_SIZE``/``RANK``, else (1, 0)."""
    if num_replicas is not None and rank is not None:
        return int(num_replicas), int(rank)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))


class _ShardSampler(DistributedSampler):
    def __init__(self, total: int, num_replicas: int | None, rank: int | None, seed: int, shuffle: bool):
        world, rank = world_and_rank(num_replicas, rank)
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} out of range for world size {world}")
        super().__init__(range(total), num_replicas=world, rank=rank, shuffle=shuffle, seed=seed)


class ResampledShardSampler(_ShardSampler):
    def __init__(
        self,
        shard_sizes: Sequence[int],
        samples_per_rank: int,
        *,
        seed: int = 0,
        mix_shards: int = 4,
        num_replicas: int | None = None,
        rank: int | None = None,
    ):
        sizes = [int(size) for size in shard_sizes]
        if not sizes or sum(sizes) == 0:
            raise ValueError("no training samples")
        if samples_per_rank < 1:
            raise ValueError(f"samples_per_rank must be >= 1, got {samples_per_rank}")
        super().__init__(sum(sizes), num_replicas, rank, seed, shuffle=True)
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        self.num_samples = self.total_size = int(samples_per_rank)
        self.mix_shards = max(1, int(mix_shards))
        self._resume: tuple[int, int] | None = None

    def resume_within_epoch(self, epoch: int, consumed: int) -> None:
        """Skip the first ``consumed`` indices of ``epoch``'s order, once (the rest of that epoch is unchanged)."""
        if not 0 <= consumed <= self.num_samples:
            raise ValueError(f"consumed {consumed} is outside 0..{self.num_samples}")
        self._resume = (int(epoch), int(consumed)) if consumed else None

    def __iter__(self) -> Iterator[int]:
        order = self._order()
        if self._resume is not None and self._resume[0] == self.epoch:
            order = order[self._resume[1] :]
        self._resume = None
        return iter(order)

    def _order(self) -> list[int]:
        rng = np.random.default_rng([self.seed, self.epoch, self.rank])
        weights = self.sizes / self.sizes.sum()
        order: list[int] = []
        while len(order) < self.num_samples:
            drawn = rng.choice(len(self.sizes), size=self.mix_shards, p=weights)
            block = np.concatenate([self.starts[s] + np.arange(self.sizes[s]) for s in drawn])
            order.extend(rng.permutation(block).tolist())
        return order[: self.num_samples]

    def __len__(self) -> int:
        return self.num_samples


class PaddedEvalSampler(_ShardSampler):
    def __init__(self, total: int, *, num_replicas: int | None = None, rank: int | None = None):
        if total < 1:
            raise ValueError("no evaluation samples")
        super().__init__(total, num_replicas, rank, seed=0, shuffle=False)
        self.total = int(total)
        self.num_samples = math.ceil(self.total / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def __iter__(self) -> Iterator[int]:
        start = self.rank * self.num_samples
        # positions >= total are padding indices, flagged invalid by the dataset
        yield from range(start, start + self.num_samples)

    def __len__(self) -> int:
        return self.num_samples
