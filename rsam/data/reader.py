"""Random access to shard samples (the read side of ``docs/shards.md``) and their decoding into tensors.

:class:`ShardReader` scans a tar's ustar headers once (checking each header checksum) and then reads members with
``seek``/``read``. :class:`ShardSamples` is a map-style dataset over the shards of one or more dataset folders;
indices ``>= len(dataset)`` are *padding* (used by the eval sampler to even out ranks): they return a copy of sample
``index - len`` with ``valid=False``. File handles are opened lazily per process, so the dataset can be used by
forked DataLoader workers.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import tarfile
from collections import OrderedDict
from typing import Callable

import numpy as np

from rsam.data.records import IMAGE_SUFFIXES, MASK_SUFFIX, RECORD_SUFFIX, decode_mask_png

log = logging.getLogger(__name__)

BLOCK = 512


class CorruptShardError(ValueError):
    """A shard or one of its samples cannot be read; the message names the shard (and the sample key)."""


def _parse_octal(field: bytes) -> int:
    text = field.replace(b"\0", b" ").strip()
    return int(text, 8) if text else 0


def _header_checksums(header: bytes) -> tuple[int, int]:
    """The unsigned and the (historic) signed-char header checksums; writers use either."""
    unsigned = sum(header[:148]) + 8 * 32 + sum(header[156:])
    signed = unsigned - 256 * sum(1 for byte in header[:148] + header[156:] if byte > 127)
    return unsigned, signed


def _scan_headers(handle, path: str) -> list[tuple[str, int, int]] | None:
    """``[(member name, data offset, size)]`` of a plain ustar file; ``None`` if it needs the full tarfile parser."""
    members, offset = [], 0
    while True:
        handle.seek(offset)
        header = handle.read(BLOCK)
        if len(header) < BLOCK or header == b"\0" * BLOCK:
            return members
        try:
            stored = _parse_octal(header[148:156])
            size = _parse_octal(header[124:136])
        except ValueError as err:
            raise CorruptShardError(f"{path}: corrupt tar header at byte {offset}") from err
        if stored not in _header_checksums(header):
            raise CorruptShardError(f"{path}: corrupt tar header at byte {offset} (checksum mismatch)")
        typeflag = header[156:157]
        if typeflag not in (b"0", b"\0", b"5"):
            return None  # long names, pax headers, links: let tarfile handle it
        prefix = header[345:500].rstrip(b"\0") if header[257:262] == b"ustar" else b""
        name = header[:100].rstrip(b"\0")
        full = (prefix + b"/" + name if prefix else name).decode("utf-8")
        if typeflag != b"5":
            members.append((full, offset + BLOCK, size))
        offset += BLOCK + (size + BLOCK - 1) // BLOCK * BLOCK


def _scan_tarfile(path: str) -> list[tuple[str, int, int]]:
    try:
        with tarfile.open(path, "r:") as tar:
            return [(m.name, m.offset_data, m.size) for m in tar.getmembers() if m.isfile()]
    except tarfile.TarError as err:
        raise CorruptShardError(f"{path}: unreadable tar: {err}") from err


def split_member_name(name: str) -> tuple[str, str]:
    """WebDataset convention: the key is the path up to the first dot of the base name, the suffix the rest."""
    directory, _, base = name.rpartition("/")
    stem, dot, suffix = base.partition(".")
    if not dot:
        return "", ""
    return (f"{directory}/{stem}" if directory else stem), suffix


class ShardReader:
    """The samples of one tar shard, by position: ``reader[i] -> {"__key__": key, suffix: bytes, ...}``."""

    def __init__(self, path: str):
        self.path = str(path)
        self.handle = open(self.path, "rb")
        members = _scan_headers(self.handle, self.path)
        if members is None:
            members = _scan_tarfile(self.path)
        self.samples: list[tuple[str, dict[str, tuple[int, int]]]] = []
        for name, offset, size in members:
            key, suffix = split_member_name(name)
            if not suffix:
                continue
            if not self.samples or self.samples[-1][0] != key:
                self.samples.append((key, {}))
            self.samples[-1][1][suffix] = (offset, size)

    def __len__(self) -> int:
        return len(self.samples)

    def key(self, index: int) -> str:
        return self.samples[index][0]

    def __getitem__(self, index: int) -> dict:
        key, members = self.samples[index]
        sample = {"__key__": key}
        for suffix, (offset, size) in members.items():
            self.handle.seek(offset)
            data = self.handle.read(size)
            if len(data) != size:
                raise CorruptShardError(f"{self.path}:{key}.{suffix}: truncated member")
            sample[suffix] = data
        return sample

    def close(self) -> None:
        self.handle.close()


class ShardSamples:
    """Map-style dataset over shards given as ``[{"path", "nsamples"}]``; ``transform`` maps raw samples."""

    def __init__(self, shards: list[dict], transform: Callable[[dict], dict] | None = None, max_open: int = 8):
        if not shards:
            raise ValueError("no shards given")
        self.paths = [str(shard["path"]) for shard in shards]
        self.sizes = [int(shard["nsamples"]) for shard in shards]
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64).tolist()
        self.transform = transform
        self.max_open = max_open
        self._readers: OrderedDict[int, ShardReader] = OrderedDict()
        self._pid = os.getpid()

    def __len__(self) -> int:
        return self.starts[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """(shard number, position in the shard) of a dataset index in ``[0, len)``."""
        shard = bisect.bisect_right(self.starts, index) - 1
        return shard, index - self.starts[shard]

    def _reader(self, shard: int) -> ShardReader:
        if os.getpid() != self._pid:  # forked into a worker: never share file offsets with the parent
            self._readers, self._pid = OrderedDict(), os.getpid()
        reader = self._readers.pop(shard, None)
        if reader is None:
            reader = ShardReader(self.paths[shard])
            if len(reader) != self.sizes[shard]:
                raise CorruptShardError(
                    f"{self.paths[shard]}: holds {len(reader)} samples, the index says {self.sizes[shard]}"
                )
            if len(self._readers) >= self.max_open:
                _, oldest = self._readers.popitem(last=False)
                oldest.close()
        self._readers[shard] = reader
        return reader

    def raw(self, index: int) -> dict:
        """The raw member bytes of sample ``index`` (no padding logic), plus ``__shard__``."""
        if not 0 <= index < len(self):
            raise IndexError(f"sample index {index} out of range [0, {len(self)})")
        shard, position = self.locate(index)
        sample = self._reader(shard)[position]
        sample["__shard__"] = self.paths[shard]
        return sample

    def __getitem__(self, index: int) -> dict:
        valid = index < len(self)
        sample = self.raw(int(index) if valid else int(index - len(self)) % len(self))
        sample["__index__"], sample["__valid__"] = int(index), valid
        return self.transform(sample) if self.transform else sample


def sample_record(sample: dict) -> dict:
    """The JSON record of a raw sample (errors name the shard and key)."""
    try:
        return json.loads(sample[RECORD_SUFFIX].decode("utf-8"))
    except (KeyError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptShardError(f"{sample.get('__shard__')}:{sample.get('__key__')}: bad or missing record") from err


def sample_image_bytes(sample: dict) -> tuple[str, bytes]:
    for suffix in IMAGE_SUFFIXES:
        if suffix in sample:
            return suffix, sample[suffix]
    raise CorruptShardError(f"{sample.get('__shard__')}:{sample.get('__key__')}: no image member")


def sample_mask(sample: dict) -> np.ndarray:
    try:
        return decode_mask_png(sample[MASK_SUFFIX])
    except Exception as err:  # PIL raises many types for corrupt data
        raise CorruptShardError(f"{sample.get('__shard__')}:{sample.get('__key__')}: bad or missing mask: {err}") from err
