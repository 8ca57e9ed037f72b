"""Reading shard samples through ``wids`` (indexed, random access) and their raw members.

:class:`IndexedShards` is a map-style dataset over a split's shards: a ``wids.ShardListDataset`` over the shard list
of the index (the same ``{url, nsamples, filesize, sha256}`` entries as the split's wids descriptor), whose shards are
fetched by :class:`rsam.data.sources.ShardCache` (local shards in place, remote ones downloaded once) and opened as
``wids.IndexedTarSamples`` (an mmap'ed tar index). Indices ``>= len(dataset)`` are *padding* (used by the eval
sampler to even out ranks): they return a copy of sample ``index - len`` with ``valid=False``.

Bad data (``on_error``): ``raise`` stops with the shard URL and the sample key. ``skip`` drops the sample and counts it
per reason in the returned sample's ``skipped`` counter: a training slot is filled by the next readable sample of the
dataset (``index + 1``, ...), so batches stay full and the order stays a function of the index; an evaluation slot
becomes a ``valid=False`` placeholder, which metrics ignore like padding.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from collections import Counter
from collections.abc import Callable

import wids
from wids.wids import IndexedTarSamples, LRUShards

from rsam.data.records import IMAGE_SUFFIXES, MASK_SUFFIX, RECORD_SUFFIX, decode_mask_png
from rsam.data.sources import CorruptShardError, ShardCache, ShardUnavailableError

log = logging.getLogger(__name__)

ON_ERROR = ("raise", "skip")

__all__ = ["CorruptShardError", "ShardUnavailableError", "IndexedShards", "open_shard", "raw_members"]


def open_shard(
    path: str, url: str | None = None, nsamples: int | None = None, filesize: int | None = None
) -> IndexedTarSamples:
    """A local tar shard as ``wids.IndexedTarSamples``; a wrong size, corrupt header or sample count names it."""
    name = url or path
    try:
        size = os.stat(path).st_size
    except FileNotFoundError as err:
        raise ShardUnavailableError(f"{name}: listed in the index but missing") from err
    if filesize is not None and size != filesize:
        reason = "shard_truncated" if size < filesize else "shard_changed"
        raise CorruptShardError(f"{name}: {size} bytes, the index says {filesize}", reason)
    try:
        shard = IndexedTarSamples(path=path)
    except Exception as err:  # the mmap tar index raises struct/ValueError/UnicodeDecodeError on garbage headers
        raise CorruptShardError(f"{name}: corrupt tar header: {err}", "shard_truncated") from err
    if nsamples is not None and len(shard) != nsamples:
        shard.close()
        raise CorruptShardError(f"{name}: holds {len(shard)} samples, the index says {nsamples}", "shard_changed")
    return shard


def raw_members(sample: dict) -> dict:
    """A wids sample (``{".png": BytesIO, ...}``) as ``{"png": bytes, ..., "__key__", "__shard__"}``."""
    out = {}
    for name, value in sample.items():
        if name.startswith("__"):
            out[name] = value
        else:
            out[name.lstrip(".")] = value.getvalue() if isinstance(value, io.BytesIO) else value
    return out


def _unused_localname(url: str) -> str:
    return url  # fetching is done by _FetchingShards


def _no_miss_warning() -> None:
    return None


class _FetchingShards(LRUShards):
    """wids' per-process LRU of open shards, fetching through :class:`ShardCache` and checking sizes and counts."""

    def __init__(self, lru_size: int, cache: ShardCache, shards: list[dict]):
        super().__init__(lru_size)
        self.fetcher = cache
        self.by_url = {shard["url"]: shard for shard in shards}
        self.bad: dict[str, CorruptShardError] = {}  # remembered per process, so a bad shard is not re-read per sample

    def get_shard(self, url):
        if url in self.bad:
            raise self.bad[url]
        if url not in self.lru:
            shard = self.by_url[url]
            try:
                path = self.fetcher.fetch(shard)
                try:
                    opened = open_shard(path, url, shard["nsamples"], shard["filesize"])
                except ShardUnavailableError:  # evicted between fetch and open by another process: fetch again
                    opened = open_shard(self.fetcher.fetch(shard), url, shard["nsamples"], shard["filesize"])
            except CorruptShardError as err:
                self.bad[url] = err
                raise
            self.lru[url] = opened
            self.misses += 1
        self.accesses += 1
        return self.lru[url]


class IndexedShards:
    """Map-style dataset over shards ``[{url, nsamples, filesize, sha256}]``; ``transform`` maps raw samples.

    ``substitute`` (training) fills a skipped slot with the next readable sample; otherwise (evaluation) a skipped
    slot is ``transform.placeholder(key)`` with ``valid=False``. Shards are opened lazily in each process, so the
    dataset can be used by forked DataLoader workers.
    """

    def __init__(
        self,
        shards: list[dict],
        transform: Callable[[dict], dict] | None = None,
        *,
        cache: ShardCache | None = None,
        on_error: str = "raise",
        substitute: bool = False,
        lru_size: int = 8,
    ):
        if not shards:
            raise ValueError("no shards given")
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.shards = [dict(shard) for shard in shards]
        self.sizes = [int(shard["nsamples"]) for shard in self.shards]
        self.transform, self.on_error, self.substitute = transform, on_error, substitute
        shardlist = [{"url": s["url"], "nsamples": s["nsamples"], "filesize": s.get("filesize")} for s in self.shards]
        with contextlib.redirect_stderr(io.StringIO()) as banner:  # wids prints a summary line on construction
            self.wids = wids.ShardListDataset(shardlist, transformations=[], localname=_unused_localname)
        log.debug("wids: %s", banner.getvalue().strip())
        self.wids.check_cache_misses = _no_miss_warning  # our LRU is sized by the sampler's shard mixing
        self.wids.cache = _FetchingShards(lru_size, cache or ShardCache(), self.shards)

    def __len__(self) -> int:
        return int(self.wids.total_length)

    def raw(self, index: int) -> dict:
        """The raw member bytes of sample ``index`` (no padding logic), plus ``__key__`` and ``__shard__``."""
        if not 0 <= index < len(self):
            raise IndexError(f"sample index {index} out of range [0, {len(self)})")
        try:
            return raw_members(self.wids[int(index)])
        except CorruptShardError:
            raise
        except Exception as err:  # a member past the end of a damaged shard, etc.
            shard, position, desc = self.wids.get_shard(int(index))
            raise CorruptShardError(f"{desc['url']}: sample {position} unreadable: {err}", "shard_truncated") from err

    def _one(self, index: int, valid: bool) -> dict:
        sample = self.raw(index)
        sample["__index__"], sample["__valid__"] = int(index), valid
        return self.transform(sample) if self.transform else sample

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        total = len(self)
        valid = index < total
        target = index if valid else (index - total) % total
        skipped: Counter = Counter()
        for attempt in range(total if self.substitute else 1):
            position = (target + attempt) % total
            try:
                sample = self._one(position, valid)
            except CorruptShardError as err:
                if self.on_error == "raise":
                    raise
                if valid:  # a padding copy of a bad sample is not a second bad sample
                    skipped[err.reason] += 1
                log.warning("skipped (%s): %s", err.reason, err)
                continue
            if isinstance(sample, dict):
                sample["skipped"] = skipped
            return sample
        if self.substitute:
            raise CorruptShardError(f"every one of the {total} samples is unreadable", "bad_sample")
        placeholder = self.transform.placeholder(f"skipped-{index}") if self.transform else {"__valid__": False}
        placeholder["skipped"] = skipped
        return placeholder


def _named(sample: dict) -> str:
    return f"{sample.get('__shard__')}:{sample.get('__key__')}"


def sample_record(sample: dict) -> dict:
    """The JSON record of a raw sample (errors name the shard and key)."""
    try:
        return json.loads(sample[RECORD_SUFFIX].decode("utf-8"))
    except (KeyError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptShardError(f"{_named(sample)}: bad or missing record", "bad_record") from err


def sample_image_bytes(sample: dict) -> tuple[str, bytes]:
    for suffix in IMAGE_SUFFIXES:
        if suffix in sample:
            return suffix, sample[suffix]
    raise CorruptShardError(f"{_named(sample)}: no image member", "bad_image")


def sample_mask(sample: dict):
    try:
        return decode_mask_png(sample[MASK_SUFFIX])
    except Exception as err:  # PIL raises many types for corrupt data
        raise CorruptShardError(f"{_named(sample)}: bad or missing mask: {err}", "bad_mask") from err
