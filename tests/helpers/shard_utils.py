"""Small helpers shared by the data tests: read every sample of a dataset folder, environment for subprocesses."""

from __future__ import annotations

import os
from pathlib import Path

from rsam.data.reader import ShardReader

REPO = Path(__file__).resolve().parents[2]
HELPERS = Path(__file__).resolve().parent


def read_samples(folder: Path) -> dict[str, dict]:
    """``{key: {suffix: bytes}}`` of every sample in every ``*.tar`` of ``folder``, in shard order."""
    samples = {}
    for tar in sorted(Path(folder).glob("*.tar")):
        reader = ShardReader(str(tar))
        for position in range(len(reader)):
            sample = reader[position]
            samples[sample["__key__"]] = sample
        reader.close()
    return samples


def subprocess_env() -> dict[str, str]:
    """The current environment without rank/Slurm variables, with the repo importable and one thread per rank."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "LOCAL_RANK", "WORLD_SIZE"))}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return env
