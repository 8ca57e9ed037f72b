"""``--ckpt_path auto`` (what the sbatch scripts pass): a fresh start when there is no checkpoint yet, otherwise the
newest of ``<checkpoints>/last.ckpt`` and Lightning's Slurm requeue checkpoints ``<run>/hpc_ckpt_N.ckpt`` (files or
DeepSpeed checkpoint folders); ``last`` stays strict."""

from __future__ import annotations

import os

import pytest

from rsam.lit.build import resolve_ckpt_path
from rsam.recipes import load_recipe


@pytest.fixture
def recipe(tmp_path):
    return load_recipe("demo", [f"trainer.default_root_dir={tmp_path}"], check_files=False)


def _touch(path, mtime: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    os.utime(path, (mtime, mtime))


def test_auto_starts_fresh_without_a_checkpoint(recipe):
    assert resolve_ckpt_path(recipe, "auto") is None
    with pytest.raises(FileNotFoundError):
        resolve_ckpt_path(recipe, "last")  # an explicit `last` still has to exist


def test_auto_picks_the_newest_of_last_and_hpc(recipe, tmp_path):
    last = tmp_path / "checkpoints" / "last.ckpt"
    _touch(last, 1000)
    assert resolve_ckpt_path(recipe, "auto") == str(last)
    _touch(tmp_path / "hpc_ckpt_1.ckpt", 2000)
    _touch(tmp_path / "hpc_ckpt_2.ckpt", 3000)  # the second requeue
    assert resolve_ckpt_path(recipe, "auto") == str(tmp_path / "hpc_ckpt_2.ckpt")
    _touch(last, 4000)  # training went on after the restart and saved last.ckpt again
    assert resolve_ckpt_path(recipe, "auto") == str(last)


def test_auto_dates_a_deepspeed_folder_by_its_newest_file(recipe, tmp_path):
    folder = tmp_path / "checkpoints" / "last.ckpt"
    _touch(folder / "checkpoint" / "mp_rank_00_model_states.pt", 5000)
    os.utime(folder, (10, 10))  # files rewritten in place do not touch the folder's own time
    _touch(tmp_path / "hpc_ckpt_1.ckpt", 3000)
    assert resolve_ckpt_path(recipe, "auto") == str(folder)
