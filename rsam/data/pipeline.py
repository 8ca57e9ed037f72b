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

import hashlib
import json
import logging
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm.auto import tqdm

from rsam.data.records import SampleError, Triplet
from rsam.data.shards import (
    DATASET_INDEX,
    FORMAT_NAME,
    FORMAT_VERSION,
    load_dataset_index,
    sha256_file,
    shard_name,
    split_index_name,
    write_json_atomic,
    write_split_index,
    write_tar,
)

log = logging.getLogger(__name__)

WORK_DIR = "_work"
ON_ERROR = ("raise", "skip")


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
    splits: dict[str, Sequence[Job]]
    materialize: Materialize
    fingerprint_inputs: dict  # everything that determines the output (options, input file stats)
    licences: list[dict] = field(default_factory=list)
    extra_files: dict[str, bytes] = field(default_factory=dict)  # e.g. LICENCES.md, copied next to the shards


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
    def load(cls, path: Path, fingerprint: str) -> "_SplitState":
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
        write_json_atomic(
            self.path, {"fingerprint": self.fingerprint, "shards": self.shards, "final": self.final}
        )

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
    for path in sorted(out_dir.glob(f"{split}-*.tar*")):
        if path.name not in vouched:
            log.info("removing uncommitted %s", path.name)
            path.unlink()


class _SplitWriter:
    """Buffers encoded samples and commits full shards together with the state."""

    def __init__(self, out_dir: Path, split: str, shard_size: int, state: _SplitState):
        self.out_dir, self.split, self.shard_size, self.state = out_dir, split, shard_size, state
        self.buffer: list[list[tuple[str, bytes]]] = []
        self.kinds: Counter = Counter()

    def add(self, members: list[tuple[str, bytes]], kind: str) -> None:
        self.buffer.append(members)
        self.kinds[kind] += 1

    @property
    def full(self) -> bool:
        return len(self.buffer) >= self.shard_size

    def commit(self, cursor: tuple[int, int], rejects: list[dict], dropped: Counter) -> None:
        if not self.buffer:
            return
        name = shard_name(self.split, len(self.state.shards))
        final = self.out_dir / name
        tmp = final.with_name(name + ".tmp")
        write_tar(tmp, self.buffer)
        entry = {
            "name": name,
            "nsamples": len(self.buffer),
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
        self.buffer, self.kinds = [], Counter()


def _encode_job(job: Job, materialize: Materialize) -> tuple[list[tuple[list[tuple[str, bytes]], str]], Counter]:
    """Materialize a job and encode all its samples (so a bad job is rejected before any of it is buffered)."""
    output = materialize(job)
    encoded = [(triplet.members(), triplet.record.get("kind", "")) for triplet in output.triplets]
    return encoded, Counter(output.dropped)


def write_split(
    out_dir: Path,
    split: str,
    jobs: Sequence[Job],
    materialize: Materialize,
    *,
    shard_size: int,
    fingerprint: str,
    on_error: str,
) -> dict:
    """Convert one split (resuming if a compatible state exists) and return its summary."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if shard_size < 1:
        raise ValueError(f"shard size must be >= 1, got {shard_size}")
    state = _SplitState.load(out_dir / WORK_DIR / f"{split}.state.json", fingerprint)
    _discard_unvouched_files(out_dir, split, state)
    if not state.complete:
        _convert_jobs(out_dir, split, jobs, materialize, shard_size, state, on_error)
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
) -> None:
    start_job, skip = state.cursor
    rejects, dropped = state.rejects, state.dropped
    if state.shards:
        log.info("%s: resuming after %d committed shard(s), at input %d/%d", split, len(state.shards), start_job, len(jobs))
    writer = _SplitWriter(out_dir, split, shard_size, state)
    for job_index in tqdm(range(start_job, len(jobs)), desc=f"converting {split}", unit="input", leave=False):
        job = jobs[job_index]
        try:
            encoded, job_dropped = _encode_job(job, materialize)
        except SampleError as err:
            if on_error == "raise":
                raise
            log.warning("rejected %s", err)
            rejects.append({"split": split, "input": job.name, "reason": str(err)})
            skip = 0
            continue
        for position in range(skip, len(encoded)):
            members, kind = encoded[position]
            writer.add(members, kind)
            if writer.full and position + 1 < len(encoded):
                writer.commit((job_index, position + 1), rejects, dropped)
        skip = 0
        dropped.update(job_dropped)
        if writer.full:
            writer.commit((job_index + 1, 0), rejects, dropped)
    writer.commit((len(jobs), 0), rejects, dropped)
    state.final = {"rejects": list(rejects), "dropped": dict(sorted(dropped.items()))}
    state.save()


def _check_existing(out_dir: Path, fingerprint: str, overwrite: bool) -> dict | None:
    """The finished index if ``out_dir`` already holds this exact conversion; clears or refuses other contents."""
    if (out_dir / DATASET_INDEX).is_file():
        index = load_dataset_index(out_dir)
        if index.get("fingerprint") == fingerprint and not overwrite:
            return index
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


def convert(spec: DatasetSpec, out_dir: str | Path, *, shard_size: int = 1000, on_error: str = "raise",
            overwrite: bool = False) -> dict:
    """Write ``spec`` as a shard dataset in ``out_dir`` (resuming or skipping finished work) and return the report.

    The report (also written to ``report.json``) holds per split ``inputs``, ``written``, ``rejected`` (in the unit
    ``spec.unit``), ``samples``, per-kind counts and drop counters; every reject is listed in ``rejects.jsonl``.
    """
    out_dir = Path(out_dir)
    fingerprint = fingerprint_of(
        {"converter": spec.converter, "name": spec.name, "shard_size": shard_size, "inputs": spec.fingerprint_inputs}
    )
    existing = _check_existing(out_dir, fingerprint, overwrite)
    if existing is not None:
        log.info("%s is already complete (same inputs and options): nothing to do", out_dir)
        return json.loads((out_dir / "report.json").read_text(encoding="utf-8"))
    (out_dir / WORK_DIR).mkdir(parents=True, exist_ok=True)
    splits = {}
    for split in sorted(spec.splits):
        splits[split] = write_split(
            out_dir, split, spec.splits[split], spec.materialize,
            shard_size=shard_size, fingerprint=fingerprint, on_error=on_error,
        )
    return _finalize(out_dir, spec, fingerprint, splits)


def _finalize(out_dir: Path, spec: DatasetSpec, fingerprint: str, splits: dict[str, dict]) -> dict:
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
        "splits": {split: {k: v for k, v in s.items() if k not in ("shards", "rejects")} for split, s in splits.items()},
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
        out_dir, report["samples"], sum(len(s["shards"]) for s in splits.values()),
        report["inputs"], spec.unit, report["written"], report["rejected"],
    )
    return report
