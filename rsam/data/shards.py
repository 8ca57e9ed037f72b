"""Shard files and dataset index files (the on-disk format is documented in ``docs/shards.md``).

- Shards are plain POSIX (ustar) tar files written deterministically (members in a fixed order, mtime 0, uid/gid 0),
  so the same input always gives byte-identical shards and the same sha256.
- ``<split>.index.json`` per split is a ``wids`` dataset descriptor (``wids_version`` 1, ``shardlist`` of
  ``{url, nsamples, filesize, sha256}``, urls relative to the index file).
- ``index.json`` describes the whole dataset; it is written last, so its presence means the dataset is complete.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

FORMAT_NAME = "rsam-shards"
FORMAT_VERSION = 1
DATASET_INDEX = "index.json"
MAX_MEMBER_NAME = 100  # ustar name field; keys never contain "/" so there is no prefix field to spill into


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


def split_index_name(split: str) -> str:
    return f"{split}.index.json"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: Path, payload: object) -> None:
    """Write JSON to ``path`` through a temporary file and an atomic rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def open_tar(path: Path) -> tarfile.TarFile:
    """A new ustar file for writing samples with :func:`add_sample`."""
    return tarfile.open(path, "w", format=tarfile.USTAR_FORMAT)


def add_sample(tar: tarfile.TarFile, members: list[tuple[str, bytes]]) -> None:
    """Append one sample's members ``(name, bytes)`` deterministically (mtime 0, uid/gid 0, mode 644)."""
    for name, data in members:
        if len(name.encode("utf-8")) > MAX_MEMBER_NAME or "/" in name:
            raise ValueError(f"tar member name too long or nested: {name!r}")
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = 0
        info.mode = 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(data))


def write_tar(path: Path, samples: list[list[tuple[str, bytes]]]) -> None:
    """Write ``samples`` (each a list of ``(member name, bytes)``) as a deterministic ustar tar at ``path``."""
    with open_tar(path) as tar:
        for members in samples:
            add_sample(tar, members)


def write_split_index(out_dir: Path, dataset_name: str, split: str, shards: list[dict]) -> Path:
    """The ``wids`` descriptor of one split."""
    path = out_dir / split_index_name(split)
    shardlist = [
        {"url": s["name"], "nsamples": s["nsamples"], "filesize": s["filesize"], "sha256": s["sha256"]} for s in shards
    ]
    write_json_atomic(path, {"wids_version": 1, "name": f"{dataset_name}-{split}", "shardlist": shardlist})
    return path


def check_dataset_index(index: dict, where: str) -> None:
    """Refuse an ``index.json`` payload of another format or version (``where`` names it in the error)."""
    if not isinstance(index, dict) or index.get("format") != FORMAT_NAME:
        raise ValueError(f"{where}: not an rsam shard index (format {getattr(index, 'get', dict().get)('format')!r})")
    if index.get("version") != FORMAT_VERSION:
        raise ValueError(f"{where}: unsupported format version {index.get('version')!r} (expected {FORMAT_VERSION})")


def load_dataset_index(folder: str | os.PathLike) -> dict:
    """Read ``index.json`` of a local dataset folder; ``FileNotFoundError`` names an incomplete or missing dataset."""
    path = Path(folder) / DATASET_INDEX
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a (complete) rsam shard dataset; build it with `rsam data ...`")
    index = json.loads(path.read_text(encoding="utf-8"))
    check_dataset_index(index, str(path))
    return index


def split_shards(folder: str | os.PathLike, split: str) -> list[dict]:
    """``[{path, nsamples, sha256, ...}]`` of one split, in order; ``KeyError``-free error for unknown splits."""
    index = load_dataset_index(folder)
    splits = index["splits"]
    if split not in splits:
        raise ValueError(f"{folder}: no split {split!r} (available: {', '.join(sorted(splits)) or 'none'})")
    return [dict(shard, path=str(Path(folder) / shard["name"])) for shard in splits[split]["shards"]]
