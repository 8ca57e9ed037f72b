"""Where shards live and how they are fetched: local paths, ``file://``, ``http(s)://``, ``s3://``/``gs://``, ``pipe:``.

A dataset *location* is one entry of ``data.dirs``. Brace patterns expand into several locations
(``/data/part-{0..3}``, as ``webdataset``'s ``expand_urls``). A location is

- a local folder or ``file://`` URL: shards are read in place (never copied);
- an ``http(s)://``, ``s3://`` or ``gs://`` URL prefix: ``<prefix>/index.json`` and ``<prefix>/<shard>`` are
  opened with ``webdataset.gopen`` (``curl`` for HTTP; ``fsspec`` for object stores, registered here, which needs the
  optional ``s3fs``/``gcsfs`` extras). Credentials and endpoints come from the environment only
  (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ``GOOGLE_APPLICATION_CREDENTIALS``, ...);
- ``pipe:CMD`` where ``CMD`` holds ``{name}``: the command that writes one dataset file (``index.json`` or a shard)
  to stdout, e.g. ``pipe:aws s3 cp s3://bucket/rsam/{name} -``.

:class:`ShardCache` downloads remote shards once into ``data.cache_dir`` for random access (indexed mode): a
per-file ``flock`` makes concurrent ranks and workers wait for one download instead of racing, the file is written to
a temporary name in the cache folder and renamed into place after its size and sha256 match the index, and the least
recently used shards are deleted when the cache grows past its bound. :func:`verify_shards` is the start-up check.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import json
import logging
import os
import re
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

from tqdm.auto import tqdm
from webdataset.shardlists import expand_urls

from rsam.data.shards import DATASET_INDEX, check_dataset_index

log = logging.getLogger(__name__)
wds_gopen = importlib.import_module("webdataset.gopen")  # the module (the package re-exports a function of that name)

REMOTE_SCHEMES = ("http", "https", "s3", "gs", "gcs")
FSSPEC_SCHEMES = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs"}
VERIFY_MODES = ("none", "size", "sha256")
CHUNK = 1 << 20


class CorruptShardError(ValueError):
    """A shard or one of its samples cannot be used; the message names the shard URL (and the sample key).

    ``reason`` is the skip counter it falls under with ``data.on_error: skip``.
    """

    def __init__(self, message: str, reason: str = "bad_sample"):
        super().__init__(message)
        self.reason = reason

    def __str__(self) -> str:  # webdataset appends the stream and URL to an exception's args on its way up
        return str(self.args[0]) if self.args else ""


class ShardUnavailableError(CorruptShardError, FileNotFoundError):
    """A shard listed in the index cannot be opened or fetched (missing, deleted, HTTP 404, ...)."""

    def __init__(self, message: str):
        super().__init__(message, "shard_unavailable")


def _gopen_fsspec(url: str, mode: str = "rb", bufsize: int = 8192, **kw):
    scheme = urlparse(url).scheme
    try:
        import fsspec

        return fsspec.open(url, mode).open()
    except ImportError as err:
        package = FSSPEC_SCHEMES.get(scheme, scheme)
        raise ShardUnavailableError(
            f"{url}: reading {scheme}:// needs {package} (pip install 'rsam[{scheme}]'), "
            f"or use a pipe: location such as 'pipe:aws s3 cp {url.rsplit('/', 1)[0]}/{{name}} -'"
        ) from err


def register_schemes() -> None:
    """Let ``webdataset.gopen`` open object-store URLs through fsspec (it only knows files, pipes and curl)."""
    for scheme, package in FSSPEC_SCHEMES.items():
        if scheme == "gs" and wds_gopen.gopen_schemes.get("gs") is not _gopen_fsspec:
            try:
                __import__(package)
            except ImportError:
                continue  # keep webdataset's gsutil opener when gcsfs is absent
        wds_gopen.gopen_schemes[scheme] = _gopen_fsspec


register_schemes()


def is_local(url: str) -> bool:
    return not url.startswith("pipe:") and urlparse(url).scheme in ("", "file")


def local_path(url: str) -> str:
    return urlparse(url).path if url.startswith("file:") else url


def open_url(url: str):
    """A readable binary stream for any supported URL (``webdataset.gopen``)."""
    try:
        return wds_gopen.gopen(url, "rb")
    except FileNotFoundError as err:
        raise ShardUnavailableError(f"{url}: not found") from err


def _short(err: Exception) -> str:
    """webdataset's pipe errors carry the whole command line; keep the exit status."""
    found = re.search(r"exit (\d+)", str(err))
    return f"the download command exited with status {found.group(1)}" if found else str(err)


def read_url(url: str) -> bytes:
    """The whole content of ``url``; a failed download or command names the URL."""
    try:
        with open_url(url) as stream:
            data = stream.read()
    except ShardUnavailableError:
        raise
    except Exception as err:  # curl/pipe exit codes surface as IOError/ValueError, fsspec raises its own types
        raise ShardUnavailableError(f"{url}: cannot read: {_short(err)}") from err
    return data


class Location:
    """One dataset location; :meth:`url` gives the URL of a file of the dataset."""

    def __init__(self, spec: str):
        self.spec = str(spec)
        if self.spec.startswith("pipe:") and "{name}" not in self.spec:
            raise ValueError(f"{self.spec}: a pipe: location needs a {{name}} placeholder for the file name")

    def url(self, name: str) -> str:
        if self.spec.startswith("pipe:"):
            return self.spec.replace("{name}", name)
        if is_local(self.spec):
            return os.path.join(local_path(self.spec), name)
        return self.spec.rstrip("/") + "/" + name

    def __str__(self) -> str:
        return self.spec


def expand_locations(specs) -> list[Location]:
    """``data.dirs`` (one string or a list) with brace patterns expanded, in order."""
    specs = [specs] if isinstance(specs, (str, os.PathLike)) else list(specs)
    if not specs:
        raise ValueError("no dataset location given")
    out = []
    for spec in specs:
        spec = str(spec)
        out.extend(Location(s) for s in (expand_urls(spec) if "{" in spec and not spec.startswith("pipe:") else [spec]))
    return out


def load_index(location: Location) -> dict:
    url = location.url(DATASET_INDEX)
    if is_local(url) and not os.path.isfile(local_path(url)):
        raise FileNotFoundError(f"{url} not found: not a (complete) rsam shard dataset; build it with `rsam data ...`")
    try:
        index = json.loads(read_url(url).decode("utf-8"))
    except ShardUnavailableError as err:
        raise FileNotFoundError(f"{url}: no dataset index there ({err})") from err
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{url}: not a JSON dataset index: {err}") from err
    check_dataset_index(index, url)
    return index


def split_shards(location: Location, split: str) -> list[dict]:
    """``[{url, name, nsamples, filesize, sha256}]`` of one split of one location, in order."""
    index = load_index(location)
    splits = index["splits"]
    if split not in splits:
        raise ValueError(f"{location}: no split {split!r} (available: {', '.join(sorted(splits)) or 'none'})")
    return [dict(shard, url=location.url(shard["name"])) for shard in splits[split]["shards"]]


def gather_shards(locations, split: str) -> list[dict]:
    """The shards of ``split`` in every location of ``data.dirs``, in location order."""
    return [shard for location in expand_locations(locations) for shard in split_shards(location, split)]


# ---------------------------------------------------------------------------------------------------------- sizes


def remote_size(url: str) -> int | None:
    """The size in bytes of a remote file (HTTP ``HEAD``, object-store metadata); ``None`` for ``pipe:`` URLs."""
    scheme = urlparse(url).scheme
    if url.startswith("pipe:"):
        return None
    if scheme in ("http", "https"):
        request = urllib.request.Request(url, method="HEAD")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                length = response.headers.get("Content-Length")
        except OSError as err:  # URLError and HTTPError are OSErrors
            raise ShardUnavailableError(f"{url}: not reachable: {err}") from err
        return int(length) if length is not None else None
    try:
        import fsspec

        fs, path = fsspec.core.url_to_fs(url)
        return int(fs.size(path))
    except FileNotFoundError as err:
        raise ShardUnavailableError(f"{url}: not found") from err
    except ImportError as err:
        raise ShardUnavailableError(f"{url}: checking {scheme}:// needs {FSSPEC_SCHEMES.get(scheme)}") from err


def shard_size(url: str) -> int | None:
    if is_local(url):
        try:
            return os.stat(local_path(url)).st_size
        except FileNotFoundError as err:
            raise ShardUnavailableError(f"{url}: listed in the index but missing") from err
    return remote_size(url)


def sha256_url(url: str) -> tuple[str, int]:
    """(sha256, size) of the bytes at ``url``, streamed."""
    digest, size = hashlib.sha256(), 0
    try:
        with open_url(url) as stream:
            while block := stream.read(CHUNK):
                digest.update(block)
                size += len(block)
    except ShardUnavailableError:
        raise
    except Exception as err:
        raise ShardUnavailableError(f"{url}: cannot read: {_short(err)}") from err
    return digest.hexdigest(), size


def _check_one(shard: dict, mode: str) -> str | None:
    url = shard["url"]
    try:
        size = shard_size(url)
        if size is not None and size != shard["filesize"]:
            return f"{url}: {size} bytes, the index says {shard['filesize']}"
        if mode == "sha256":
            digest, size = sha256_url(url)
            if size != shard["filesize"]:
                return f"{url}: {size} bytes, the index says {shard['filesize']}"
            if digest != shard["sha256"]:
                return f"{url}: sha256 {digest[:12]}... differs from the index ({shard['sha256'][:12]}...)"
    except ShardUnavailableError as err:
        return str(err)
    return None


def verify_shards(shards: list[dict], mode: str = "size", *, workers: int = 4, rank: int = 0, world: int = 1) -> None:
    """Check that every shard exists with its indexed size (``size``), and also its sha256 (``sha256``).

    Shards are checked by ``workers`` threads (hashing and HTTP release the GIL); with ``world`` > 1 each rank
    hashes every ``world``-th shard, so the dataset is read once in total. Raises one error listing the bad shards.
    """
    if mode not in VERIFY_MODES:
        raise ValueError(f"data.verify must be one of {VERIFY_MODES}, got {mode!r}")
    if mode == "none" or not shards:
        return
    mine = shards[rank::world] if mode == "sha256" else shards
    if any(shard["url"].startswith("pipe:") for shard in mine):
        log.info("pipe: shards cannot be size-checked before they are read; their sizes are checked when read")
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = pool.map(lambda shard: _check_one(shard, mode), mine)
        problems = [
            p
            for p in tqdm(
                results,
                total=len(mine),
                desc=f"verifying shards ({mode})",
                unit="shard",
                leave=False,
                disable=mode == "size" and len(mine) < 1000,
            )
            if p
        ]
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        missing = all("missing" in p or "not found" in p for p in problems)
        raise (ShardUnavailableError if missing else CorruptShardError)("; ".join(problems[:5]) + more)
    log.info("verified %d shard(s) (%s)", len(mine), mode)


# ---------------------------------------------------------------------------------------------------------- cache


def default_cache_dir() -> Path:
    return Path(os.environ.get("RSAM_CACHE_DIR") or Path.home() / ".cache" / "rsam" / "shards")


class ShardCache:
    """Local paths for shard URLs: local shards as they are, remote ones downloaded once into ``cache_dir``.

    ``limit_bytes`` bounds the cache: after a download, the least recently used cached shards are deleted until the
    total fits (a shard that is open elsewhere stays readable: its data lives until the last reader closes it).
    """

    def __init__(self, cache_dir: str | os.PathLike | None = None, limit_bytes: int | None = None):
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.limit_bytes = limit_bytes

    def local_name(self, url: str) -> Path:
        digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
        base = os.path.basename(urlparse(url).path) if not url.startswith("pipe:") else "pipe"
        return self.cache_dir / f"{digest}-{base}"

    def fetch(self, shard: dict) -> str:
        """The local path of ``shard`` (``{url, filesize, sha256}``), downloading it if needed."""
        url = shard["url"]
        if is_local(url):
            path = local_path(url)
            if not os.path.exists(path):
                raise ShardUnavailableError(f"{url}: listed in the index but missing")
            return path
        dest = self.local_name(url)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with open(str(dest) + ".lock", "a") as lock:  # never unlinked: a lock file that stays is race-free
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                if dest.is_file() and dest.stat().st_size == shard["filesize"]:
                    os.utime(dest)  # recency for the LRU bound
                    return str(dest)
                self._download(shard, dest)
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
        self._evict(keep=dest)
        return str(dest)

    def _download(self, shard: dict, dest: Path) -> None:
        url = shard["url"]
        tmp = dest.with_name(f"{dest.name}.{os.getpid()}.tmp")
        digest, size = hashlib.sha256(), 0
        try:
            with open_url(url) as stream, open(tmp, "wb") as out:
                while block := stream.read(CHUNK):
                    digest.update(block)
                    out.write(block)
                    size += len(block)
            if size != shard["filesize"]:
                raise CorruptShardError(
                    f"{url}: downloaded {size} bytes, the index says {shard['filesize']}",
                    "shard_truncated" if size < shard["filesize"] else "shard_changed",
                )
            if shard.get("sha256") and digest.hexdigest() != shard["sha256"]:
                raise CorruptShardError(f"{url}: sha256 of the download differs from the index", "shard_changed")
            os.replace(tmp, dest)
            log.debug("cached %s as %s", url, dest)
        except CorruptShardError:
            raise
        except Exception as err:
            raise ShardUnavailableError(f"{url}: download failed: {_short(err)}") from err
        finally:
            tmp.unlink(missing_ok=True)

    def _evict(self, keep: Path) -> None:
        if self.limit_bytes is None:
            return
        files = []
        for path in self.cache_dir.iterdir():
            if path.suffix in (".lock", ".tmp") or not path.is_file():
                continue
            stat = path.stat()
            files.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files, key=lambda item: item[0]):
            if total <= self.limit_bytes:
                break
            if path == keep:
                continue
            path.unlink(missing_ok=True)
            total -= size
            log.debug("cache bound %d bytes: evicted %s", self.limit_bytes, path.name)
        if total > self.limit_bytes:
            log.warning(
                "shard cache %s holds %d bytes, above its bound %d (one shard is larger than the bound?)",
                self.cache_dir,
                total,
                self.limit_bytes,
            )
