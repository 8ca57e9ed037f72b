"""The recipe-driven ``rsam predict`` writes through the per-rank prediction writer: with 2 processes every valid
sample of the split is written exactly once (none lost on rank 1), named by its index in the split."""

from __future__ import annotations

from helpers.lit_runs import rsam_cli, tiny_setup


def test_two_process_recipe_predict_writes_every_sample_once(tmp_path):
    recipe, _ = tiny_setup(tmp_path)  # 5 validation samples: rank 1 gets a padding item that must not be written
    out = tmp_path / "pred"
    result, summary = rsam_cli(
        "predict", "--config", str(recipe), "--no-wandb", "trainer.devices=2", "trainer.strategy=ddp",
        f"predict.out_dir={out}", timeout=400,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert summary["written"] == 5 and summary["split"] == "val"
    assert sorted(p.name for p in out.iterdir()) == [
        f"{i:04d}_{kind}.png" for i in range(5) for kind in ("mask", "overlay")
    ]
