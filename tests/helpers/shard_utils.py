"""Small helpers shared by the data tests: read every sample of a dataset folder, environment for subprocesses."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HELPERS = Path(__file__).resolve().parent


def read_samples(folder: Path) -> dict[str, dict]:
    """``{key: {suffix: bytes}}`` of every sample in every ``*.tar`` of ``folder``, in shard order (read with the
    standard library's ``tarfile``, independently of the readers under test)."""
    samples = {}
    for tar in sorted(Path(folder).glob("*.tar")):
        with tarfile.open(tar) as handle:
            for member in handle.getmembers():
                key, _, suffix = member.name.partition(".")
                samples.setdefault(key, {"__key__": key})[suffix] = handle.extractfile(member).read()
    return samples


def member_span(tar_path: Path, name: str) -> tuple[int, int]:
    """(data offset, size) of member ``name`` in a tar file (standard library ``tarfile``)."""
    with tarfile.open(tar_path) as handle:
        member = handle.getmember(name)
        return member.offset_data, member.size


def subprocess_env() -> dict[str, str]:
    """The current environment without rank/Slurm variables, with the repo importable and one thread per rank."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "LOCAL_RANK", "WORLD_SIZE"))}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return env
