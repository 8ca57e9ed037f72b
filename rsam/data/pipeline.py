"""Resumable, idempotent conversion of input jobs into a shard dataset.

A converter turns its inputs into an ordered list of :class:`Job` per split and a deterministic ``materialize``
function (job -> triplets). This module writes the triplets into fixed-size shards and keeps a small state file per
split (``_work/<split>.state.json``) that is updated atomically after each shard. The state records, for every
committed shard, its sha256 and the *cursor* (job index, triplet index within the job) where it ends, plus the
rejects and drop counters of the jobs completed before that cursor. A run that is interrupted and started again:

- deletes shard files and temporaries the state does not vouch for (a shard renamed into place just before a crash is
  rewritten identically),
- re-checks the committed shards' sha256 and continues from the last good cursor,

so the finished dataset has no duplicates and no gaps, and is byte-identical to an uninterrupted run. Running a
finished conversion again with the same inputs and options does nothing; with different ones it refuses unless
``overwrite`` is set. Counts reconcile per split: ``inputs == written + rejected`` (in the converter's unit).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import multiprocessing
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from rsam.data.records import SampleError, Triplet
from rsam.data.shards import (
    DATASET_INDEX,
    FORMAT_NAME,
    FORMAT_VERSION,
    add_sample,
    load_dataset_index,
    open_tar,
    sha256_file,
    shard_name,
    split_index_name,
    write_json_atomic,
    write_split_index,
)

log = logging.getLogger(__name__)

WORK_DIR = "_work"
ON_ERROR = ("raise", "skip")
SPLIT_NAME = re.compile(r"[A-Za-z0-9_]+")


@dataclass
class Job:
    """One unit of input (a ref sentence, an image, ...): ``name`` identifies it in errors and the rejects report."""

    name: str
    payload: Any = None


@dataclass
class JobOutput:
    """What one job produced: the triplets to write and counters of candidates dropped on purpose."""

    triplets: list[Triplet] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)


Materialize = Callable[[Job], JobOutput]


@dataclass
class DatasetSpec:
    """What a converter hands to :func:`convert`."""

    name: str
    converter: str
    unit: str  # what one job is, e.g. "sentence" or "image"
    splits: dict[str, Sequence[Job]] | Callable[[], dict[str, Sequence[Job]]]  # a callable is called only if needed
    materialize: Materialize
    fingerprint_inputs: dict  # everything that determines the output (options, input file stats)
    licences: list[dict] = field(default_factory=list)
    extra_files: dict[str, bytes] = field(default_factory=dict)  # e.g. LICENCES.md, copied next to the shards
    prepare: Callable[[], None] | None = None  # called before the jobs are listed, only if there is work to do


def fingerprint_of(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode("utf-8")).hexdigest()


class _SplitState:
    """The committed part of one split's conversion, persisted in ``_work/<split>.state.json``."""

    def __init__(self, path: Path, fingerprint: str):
        self.path = path
        self.fingerprint = fingerprint
        self.shards: list[dict] = []
        self.final: dict | None = None  # rejects and counters of the whole split, once it is complete

    @classmethod
    def load(cls, path: Path, fingerprint: str) -> _SplitState:
        state = cls(path, fingerprint)
        if path.is_file():
            saved = json.loads(path.read_text(encoding="utf-8"))
            if saved.get("fingerprint") == fingerprint:
                state.shards = saved["shards"]
                state.final = saved["final"]
            else:
                log.warning("%s: left by a run with other inputs/options; starting this split again", path)
        return state

    def save(self) -> None:
        write_json_atomic(self.path, {"fingerprint": self.fingerprint, "shards": self.shards, "final": self.final})

    @property
    def cursor(self) -> tuple[int, int]:
        return tuple(self.shards[-1]["cursor"]) if self.shards else (0, 0)

    @property
    def complete(self) -> bool:
        return self.final is not None

    def _last(self) -> dict:
        return self.final or (self.shards[-1] if self.shards else {"rejects": [], "dropped": {}})

    @property
    def rejects(self) -> list[dict]:
        return list(self._last()["rejects"])

    @property
    def dropped(self) -> Counter:
        return Counter(self._last()["dropped"])


def _discard_unvouched_files(out_dir: Path, split: str, state: _SplitState) -> None:
    """Drop committed shards whose bytes changed, and any shard file or temporary the state does not list."""
    for position, shard in enumerate(state.shards):
        path = out_dir / shard["name"]
        if not path.is_file() or sha256_file(path) != shard["sha256"]:
            log.warning("%s: missing or changed since it was committed; resuming before it", path)
            state.shards = state.shards[:position]
            state.final = None
            break
    vouched = {shard["name"] for shard in state.shards}
    own = re.compile(rf"{re.escape(split)}-\d{{6}}\.tar(\.tmp)?")
    for path in sorted(out_dir.iterdir()):
        if own.fullmatch(path.name) and path.name not in vouched:
            log.info("removing uncommitted %s", path.name)
            path.unlink()


class _SplitWriter:
    """Streams encoded samples into ``<shard>.tar.tmp`` and commits full shards together with the state."""

    def __init__(self, out_dir: Path, split: str, shard_size: int, state: _SplitState):
        self.out_dir, self.split, self.shard_size, self.state = out_dir, split, shard_size, state
        self.tar = None
        self.count = 0
        self.kinds: Counter = Counter()

    def _tmp_path(self) -> Path:
        name = shard_name(self.split, len(self.state.shards))
        return self.out_dir / (name + ".tmp")

    def add(self, members: list[tuple[str, bytes]], kind: str) -> None:
        if self.tar is None:
            self.tar = open_tar(self._tmp_path())
        add_sample(self.tar, members)
        self.count += 1
        self.kinds[kind] += 1

    @property
    def full(self) -> bool:
        return self.count >= self.shard_size

    def commit(self, cursor: tuple[int, int], rejects: list[dict], dropped: Counter) -> None:
        if self.tar is None:
            return
        self.tar.close()
        tmp = self._tmp_path()
        final = tmp.with_name(tmp.name[: -len(".tmp")])
        entry = {
            "name": final.name,
            "nsamples": self.count,
            "filesize": tmp.stat().st_size,
            "sha256": sha256_file(tmp),
            "kinds": dict(sorted(self.kinds.items())),
            "cursor": list(cursor),
            "rejects": list(rejects),
            "dropped": dict(sorted(dropped.items())),
        }
        tmp.replace(final)
        self.state.shards.append(entry)
        self.state.save()
        self.tar, self.count, self.kinds = None, 0, Counter()

    def abandon(self) -> None:
        """Close an unfinished temporary shard (a later run deletes it)."""
        if self.tar is not None:
            self.tar.close()
            self.tar = None


def _encode_job(job: Job, materialize: Materialize) -> tuple[list[tuple[list[tuple[str, bytes]], str]], Counter]:
    """Materialize a job and encode all its samples (so a bad job is rejected before any of it is buffered)."""
    output = materialize(job)
    encoded = [(triplet.members(), triplet.record.get("kind", "")) for triplet in output.triplets]
    return encoded, Counter(output.dropped)


_POOL_TASK: tuple[Sequence[Job], Materialize] | None = None  # set before forking the worker pool


def _pool_encode(job_index: int):
    jobs, materialize = _POOL_TASK
    try:
        return _encode_job(jobs[job_index], materialize)
    except SampleError as err:
        return err


def _encoded_jobs(jobs: Sequence[Job], materialize: Materialize, start: int, workers: int) -> Iterator:
    """``(job index, (encoded samples, drops) or SampleError)`` in job order; ``workers`` > 1 uses forked processes."""
    if workers <= 1:
        for job_index in range(start, len(jobs)):
            try:
                yield job_index, _encode_job(jobs[job_index], materialize)
            except SampleError as err:
                yield job_index, err
        return
    global _POOL_TASK
    _POOL_TASK = (jobs, materialize)
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            yield from enumerate(pool.imap(_pool_encode, range(start, len(jobs)), chunksize=4), start=start)
    finally:
        _POOL_TASK = None


def write_split(
    out_dir: Path,
    split: str,
    jobs: Sequence[Job],
    materialize: Materialize,
    *,
    shard_size: int,
    fingerprint: str,
    on_error: str,
    workers: int = 1,
) -> dict:
    """Convert one split (resuming if a compatible state exists) and return its summary.

    ``workers`` > 1 materializes jobs in that many forked processes; the output is identical (job order is kept).
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if shard_size < 1:
        raise ValueError(f"shard size must be >= 1, got {shard_size}")
    if not SPLIT_NAME.fullmatch(split):
        raise ValueError(f"invalid split name {split!r}: letters, digits and '_' only")
    state = _SplitState.load(out_dir / WORK_DIR / f"{split}.state.json", fingerprint)
    _discard_unvouched_files(out_dir, split, state)
    if not state.complete:
        _convert_jobs(out_dir, split, jobs, materialize, shard_size, state, on_error, workers)
    rejects = state.rejects
    return {
        "inputs": len(jobs),
        "written": len(jobs) - len(rejects),
        "rejected": len(rejects),
        "samples": sum(shard["nsamples"] for shard in state.shards),
        "kinds": dict(sum((Counter(shard["kinds"]) for shard in state.shards), Counter())),
        "dropped": dict(state.dropped),
        "shards": [{k: shard[k] for k in ("name", "nsamples", "filesize", "sha256")} for shard in state.shards],
        "rejects": rejects,
    }


def _convert_jobs(
    out_dir: Path,
    split: str,
    jobs: Sequence[Job],
    materialize: Materialize,
    shard_size: int,
    state: _SplitState,
    on_error: str,
    workers: int,
) -> None:
    start_job, skip = state.cursor
    rejects, dropped = state.rejects, state.dropped
    if state.shards:
        log.info(
            "%s: resuming after %d committed shard(s), at input %d/%d", split, len(state.shards), start_job, len(jobs)
        )
    writer = _SplitWriter(out_dir, split, shard_size, state)
    try:
        _write_jobs(writer, split, jobs, materialize, start_job, skip, rejects, dropped, on_error, workers)
    finally:
        writer.abandon()
    state.final = {"rejects": list(rejects), "dropped": dict(sorted(dropped.items()))}
    state.save()


def _write_jobs(
    writer: _SplitWriter,
    split: str,
    jobs: Sequence[Job],
    materialize: Materialize,
    start_job: int,
    skip: int,
    rejects: list[dict],
    dropped: Counter,
    on_error: str,
    workers: int,
) -> None:
    with contextlib.closing(_encoded_jobs(jobs, materialize, start_job, workers)) as results:
        for job_index, result in tqdm(
            results, total=len(jobs) - start_job, desc=f"converting {split}", unit="input", leave=False
        ):
            _write_result(writer, split, jobs, job_index, result, skip, rejects, dropped, on_error)
            skip = 0
    writer.commit((len(jobs), 0), rejects, dropped)


def _write_result(
    writer: _SplitWriter,
    split: str,
    jobs: Sequence[Job],
    job_index: int,
    result,
    skip: int,
    rejects: list[dict],
    dropped: Counter,
    on_error: str,
) -> None:
    """Write one job's samples (from position ``skip``), committing shards as they fill; or record its reject."""
    if isinstance(result, SampleError):
        if on_error == "raise":
            raise result
        log.warning("rejected %s", result)
        rejects.append({"split": split, "input": jobs[job_index].name, "reason": str(result)})
        return
    encoded, job_dropped = result
    for position in range(skip, len(encoded)):
        members, kind = encoded[position]
        writer.add(members, kind)
        if writer.full and position + 1 < len(encoded):
            writer.commit((job_index, position + 1), rejects, dropped)
    dropped.update(job_dropped)
    if writer.full:
        writer.commit((job_index + 1, 0), rejects, dropped)


def _check_existing(out_dir: Path, fingerprint: str, overwrite: bool, replace_stale: bool) -> dict | None:
    """The finished index if ``out_dir`` already holds this exact conversion; clears or refuses other contents."""
    if (out_dir / DATASET_INDEX).is_file():
        index = load_dataset_index(out_dir)
        if index.get("fingerprint") == fingerprint and not overwrite:
            return index
        if replace_stale:
            log.info("%s was built from other inputs or options: rebuilding it", out_dir)
            overwrite = True
        if not overwrite:
            raise ValueError(
                f"{out_dir} already holds a dataset built from other inputs or options; "
                "pass --overwrite to replace it or choose another --out"
            )
    if overwrite and out_dir.exists():
        log.info("overwriting %s", out_dir)
        for path in out_dir.iterdir():
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    return None


def convert(
    spec: DatasetSpec,
    out_dir: str | Path,
    *,
    shard_size: int = 1000,
    on_error: str = "raise",
    overwrite: bool = False,
    replace_stale: bool = False,
    workers: int = 1,
) -> dict:
    """Write ``spec`` as a shard dataset in ``out_dir`` (resuming or skipping finished work) and return the report.

    The report (also written to ``report.json``) holds per split ``inputs``, ``written``, ``rejected`` (in the unit
    ``spec.unit``), ``samples``, per-kind counts and drop counters; every reject is listed in ``rejects.jsonl``.
    ``overwrite`` replaces whatever ``out_dir`` holds; ``replace_stale`` replaces a finished dataset built from other
    inputs or options (for folders owned by one command, such as the demo) instead of refusing.
    """
    out_dir = Path(out_dir)
    fingerprint = fingerprint_of(
        {"converter": spec.converter, "name": spec.name, "shard_size": shard_size, "inputs": spec.fingerprint_inputs}
    )
    existing = _check_existing(out_dir, fingerprint, overwrite, replace_stale)
    if existing is not None:
        log.info("%s is already complete (same inputs and options): nothing to do", out_dir)
        return json.loads((out_dir / "report.json").read_text(encoding="utf-8"))
    (out_dir / WORK_DIR).mkdir(parents=True, exist_ok=True)
    if spec.prepare is not None:
        spec.prepare()
    jobs = spec.splits() if callable(spec.splits) else spec.splits
    splits = {}
    for split in sorted(jobs):
        splits[split] = write_split(
            out_dir,
            split,
            jobs[split],
            spec.materialize,
            shard_size=shard_size,
            fingerprint=fingerprint,
            on_error=on_error,
            workers=workers,
        )
    return finalize(out_dir, spec, fingerprint, splits)


def finalize(out_dir: Path, spec: DatasetSpec, fingerprint: str, splits: dict[str, dict]) -> dict:
    """Write the report, rejects, wids indexes, extra files and, last, ``index.json``; drop the work folder.

    ``splits`` maps split names to :func:`write_split` summaries.
    """
    for name, data in spec.extra_files.items():
        (out_dir / name).write_bytes(data)
    with open(out_dir / "rejects.jsonl", "w", encoding="utf-8") as handle:
        for summary in splits.values():
            for reject in summary["rejects"]:
                handle.write(json.dumps(reject, ensure_ascii=False) + "\n")
    totals = Counter()
    for summary in splits.values():
        totals.update({key: summary[key] for key in ("inputs", "written", "rejected", "samples")})
    report = {
        "name": spec.name,
        "converter": spec.converter,
        "unit": spec.unit,
        **dict(totals),
        "reconciled": totals["inputs"] == totals["written"] + totals["rejected"],
        "splits": {
            split: {k: v for k, v in s.items() if k not in ("shards", "rejects")} for split, s in splits.items()
        },
    }
    write_json_atomic(out_dir / "report.json", report)
    index_splits = {}
    for split, summary in splits.items():
        write_split_index(out_dir, spec.name, split, summary["shards"])
        index_splits[split] = {
            "wids_index": split_index_name(split),
            "nsamples": summary["samples"],
            "kinds": summary["kinds"],
            "shards": summary["shards"],
        }
    index = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "name": spec.name,
        "converter": spec.converter,
        "fingerprint": fingerprint,
        "licences": spec.licences,
        "splits": index_splits,
    }
    write_json_atomic(out_dir / DATASET_INDEX, index)
    shutil.rmtree(out_dir / WORK_DIR, ignore_errors=True)
    log.info(
        "%s: %d samples in %d shard(s); %d %s(s) in, %d written, %d rejected",
        out_dir,
        report["samples"],
        sum(len(s["shards"]) for s in splits.values()),
        report["inputs"],
        spec.unit,
        report["written"],
        report["rejected"],
    )
    return report
