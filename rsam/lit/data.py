"""The datamodule a recipe asks for: :class:`datamodules.remotesam_shards.RemoteSAMShardDataModule`, optionally
keeping decoded samples in memory (``data.cache_decoded``) for small datasets such as the demo, where decoding and
resizing every image again each epoch would cost as much as the training step on two CPU cores."""

from __future__ import annotations

from omegaconf import DictConfig

from datamodules.remotesam_shards import RemoteSAMShardDataModule


class DecodedCache:
    """Memoises ``dataset[index]`` (a decoded sample) in the calling process."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.sizes = dataset.sizes
        self._samples: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if index not in self._samples:
            self._samples[index] = self.dataset[index]
        return self._samples[index]


class CachedShardDataModule(RemoteSAMShardDataModule):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._cached: dict[str, DecodedCache] = {}

    def dataset(self, split: str, *, train: bool = False):
        if split not in self._cached:
            self._cached[split] = DecodedCache(super().dataset(split, train=train))
        return self._cached[split]


def build_datamodule(recipe: DictConfig, **overrides) -> RemoteSAMShardDataModule:
    """The recipe's datamodule; ``overrides`` replace constructor arguments (e.g. ``test_split`` for predict)."""
    data = recipe.data
    klass = CachedShardDataModule if data.cache_decoded else RemoteSAMShardDataModule
    options = dict(
        image_size=tuple(recipe.model.image_size),
        batch_size=data.batch_size,
        num_workers=data.num_workers,
        samples_per_rank=data.samples_per_rank,
        seed=data.seed,
        train_split=data.train_split,
        val_split=data.val_split,
        test_split=data.test_split,
        vocab_file=data.vocab_file,
        mix_shards=data.mix_shards,
        mode=data.mode,
        cache_dir=data.cache_dir,
        cache_limit_gb=data.cache_limit_gb,
        on_error=data.on_error,
        max_skip_fraction=data.max_skip_fraction,
        verify=data.verify,
        shuffle_buffer=data.shuffle_buffer,
    )
    return klass(list(data.dirs), **{**options, **overrides})
