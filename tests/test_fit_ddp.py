"""Metrics are synchronised across ranks: a 2-process CPU DDP validation (5 samples: rank 1 gets a padding sample)
gives the single-process figures. Runs the real CLI in subprocesses (the in-process ddp launcher is unsafe in
pytest)."""

import pytest
from helpers.lit_runs import rsam_cli, tiny_setup


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    return tiny_setup(tmp_path_factory.mktemp("ddp"))[0]


def validate(recipe, *overrides):
    result, summary = rsam_cli("validate", "--config", str(recipe), "--no-wandb", *overrides, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return summary["metrics"]


def test_two_rank_validation_equals_one_rank(recipe):
    single = validate(recipe)
    double = validate(recipe, "trainer.devices=2", "trainer.strategy=ddp")
    for name in ("val/oIoU", "val/mIoU", "val/Prec@0.5", "val/loss"):
        assert double[name] == pytest.approx(single[name], rel=1e-5, abs=1e-7), name


def test_two_rank_fit_completes_with_the_upstream_unused_parameters(recipe, tmp_path):
    result, summary = rsam_cli(
        "fit",
        "--config",
        str(recipe),
        "--no-wandb",
        "trainer.devices=2",
        "trainer.strategy=ddp",
        f"trainer.default_root_dir={tmp_path}",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert summary["step"] == 4 and (tmp_path / "checkpoints" / "last.ckpt").is_file()
