"""``--ckpt_path auto`` (what the sbatch scripts pass): a fresh start when there is no checkpoint yet, otherwise the
newest readable of ``<checkpoints>/last.ckpt``, ``best-*.ckpt`` and Lightning's Slurm requeue checkpoints
``<run>/hpc_ckpt_N.ckpt`` (files or DeepSpeed checkpoint folders); ``last`` stays strict."""

from __future__ import annotations

import os

import pytest
import torch

from rsam.lit.build import resolve_ckpt_path
from rsam.recipes import load_recipe


@pytest.fixture
def recipe(tmp_path):
    return load_recipe("demo", [f"trainer.default_root_dir={tmp_path}"], check_files=False)


def _checkpoint(path, mtime: float, step: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step, "state_dict": {"w": torch.zeros(2)}}, path)
    os.utime(path, (mtime, mtime))


def test_auto_starts_fresh_without_a_checkpoint(recipe):
    assert resolve_ckpt_path(recipe, "auto") is None
    with pytest.raises(FileNotFoundError):
        resolve_ckpt_path(recipe, "last")  # an explicit `last` still has to exist


def test_auto_picks_the_newest_of_last_best_and_hpc(recipe, tmp_path):
    last = tmp_path / "checkpoints" / "last.ckpt"
    _checkpoint(last, 1000)
    assert resolve_ckpt_path(recipe, "auto") == str(last)
    _checkpoint(tmp_path / "hpc_ckpt_1.ckpt", 2000)
    _checkpoint(tmp_path / "hpc_ckpt_2.ckpt", 3000)  # the second requeue
    assert resolve_ckpt_path(recipe, "auto") == str(tmp_path / "hpc_ckpt_2.ckpt")
    _checkpoint(last, 4000)  # training went on after the restart and saved last.ckpt again
    assert resolve_ckpt_path(recipe, "auto") == str(last)
    best = tmp_path / "checkpoints" / "best-epoch003-step000040.ckpt"
    _checkpoint(best, 5000)  # e.g. last.ckpt's rewrite failed on a full disk after best-* was saved
    assert resolve_ckpt_path(recipe, "auto") == str(best)


def test_auto_dates_a_deepspeed_folder_by_its_newest_file(recipe, tmp_path):
    folder = tmp_path / "checkpoints" / "last.ckpt"
    _checkpoint(folder / "checkpoint" / "mp_rank_00_model_states.pt", 5000)
    os.utime(folder, (10, 10))  # files rewritten in place do not touch the folder's own time
    _checkpoint(tmp_path / "hpc_ckpt_1.ckpt", 3000)
    assert resolve_ckpt_path(recipe, "auto") == str(folder)
    (folder / "checkpoint" / "mp_rank_00_model_states.pt").write_bytes(b"PK\x03\x04 torn")
    assert resolve_ckpt_path(recipe, "auto") == str(tmp_path / "hpc_ckpt_1.ckpt")  # a torn folder is skipped
