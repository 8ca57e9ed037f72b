"""A short real fit through the CLI: checkpoints (best by val oIoU + last), the poly schedule, test and export."""

import csv

import pytest
import torch
from helpers.lit_runs import rsam_cli, tiny_setup

from rsam.checkpoint import load_pretrained
from rsam.lit.build import load_module
from rsam.predict import Predictor


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("fit")
    recipe, run = tiny_setup(root)
    result, summary = rsam_cli("fit", "--config", str(recipe), "--no-wandb")
    assert result.returncode == 0, result.stderr[-3000:]
    return recipe, run, summary


def logged(run, column):
    with open(next(run.glob("csv/version_*/metrics.csv"))) as handle:
        return [(int(row["step"]), float(row[column])) for row in csv.DictReader(handle) if row.get(column)]


def test_summary_and_checkpoints(fitted):
    _, run, summary = fitted
    assert summary["command"] == "fit" and summary["step"] == 4
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert summary["last"].endswith("last.ckpt")
    assert not (run / "wandb").exists()  # --no-wandb


def test_best_checkpoint_is_the_max_val_oiou(fitted):
    _, run, summary = fitted
    val = logged(run, "val/oIoU")
    assert len(val) == 2  # one validation per epoch of 2 steps
    assert summary["best_score"] == pytest.approx(max(v for _, v in val), abs=1e-6)
    best = torch.load(summary["best"], map_location="cpu", weights_only=True)
    assert best["global_step"] == [s for s, v in val if v == max(v for _, v in val)][0] + 1


def test_lr_follows_the_poly_schedule_per_step(fitted):
    _, run, _ = fitted
    lrs = logged(run, "train/lr")
    assert [s for s, _ in lrs] == [0, 1, 2, 3]
    for step, lr in lrs:  # the lr used by optimisation step k is lr0 * (1 - k / 4) ** 0.9
        assert lr == pytest.approx(1e-3 * (1 - step / 4) ** 0.9, rel=1e-6)


def test_test_command_reproduces_the_best_score(fitted):
    recipe, _, summary = fitted
    result, test = rsam_cli("test", "--config", str(recipe), "--ckpt_path", "best", "--no-wandb")
    assert result.returncode == 0, result.stderr[-3000:]
    assert test["metrics"]["test/oIoU"] == pytest.approx(summary["best_score"], abs=1e-6)


def test_export_loads_in_the_predictor_with_identical_logits(fitted, tmp_path):
    _, run, _ = fitted
    ckpt = run / "checkpoints" / "last.ckpt"
    result, exported = rsam_cli("export", str(ckpt), "--out", str(tmp_path / "model"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert {p.name for p in (tmp_path / "model").iterdir()} >= {"model.safetensors", "config.json"}
    model = load_pretrained(tmp_path / "model")
    module = load_module(ckpt).eval()
    images = torch.randn(2, 3, 64, 64)
    ids = torch.randint(1000, 2000, (2, 20))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        assert torch.equal(model(images, ids, mask), module(images, ids, mask))
    prediction = Predictor(model).predict(torch.rand(48, 40, 3).mul(255).byte().numpy(), "tree in the image")[0]
    assert tuple(prediction.mask.shape[-2:]) == (48, 40)


def test_predict_writes_overlays_and_masks(fitted, tmp_path):
    recipe, _, _ = fitted
    out = tmp_path / "pred"
    result, summary = rsam_cli(
        "predict",
        "--config",
        str(recipe),
        "--ckpt_path",
        "last",
        "--no-wandb",
        "predict.max_samples=3",
        f"predict.out_dir={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert summary["written"] == 3 and summary["split"] == "val"
    assert sorted(p.name for p in out.iterdir()) == [
        f"{i:04d}_{kind}.png" for i in range(3) for kind in ("mask", "overlay")
    ]


def test_resume_from_last_continues_the_step_count(fitted, tmp_path):
    recipe, run, _ = fitted
    last = run / "checkpoints" / "last.ckpt"
    result, summary = rsam_cli(
        "fit",
        "--config",
        str(recipe),
        "--ckpt_path",
        str(last),
        "--no-wandb",
        "trainer.max_steps=6",
        f"trainer.default_root_dir={tmp_path / 'run'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert summary["step"] == 6  # 4 restored + 2 new optimisation steps
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6


def test_throughput_and_peak_memory_are_logged(fitted):
    """rsam.lit.throughput.TrainingThroughput: Lightning's ThroughputMonitor rates with measured FLOPs."""
    from rsam.lit.throughput import model_flops
    from rsam.recipes import load_recipe, model_config

    recipe, run, _ = fitted
    samples = logged(run, "train|device|samples_per_sec")
    flops = logged(run, "train|device|flops_per_sec")
    assert samples and flops and logged(run, "train|device|mfu")
    assert all(value > 0 for _, value in samples + flops)
    # FLOPs/s = samples/s x FLOPs per sample of a training step (the batch size is fixed)
    config = model_config(load_recipe(str(recipe), check_files=False))
    batch = load_recipe(str(recipe), check_files=False).data.batch_size
    per_batch = model_flops(config, batch, training=True, loss_fn=torch.nn.functional.cross_entropy)
    step, rate = flops[-1]
    assert rate == pytest.approx(dict(samples)[step] / batch * per_batch, rel=0.05)
    memory = logged(run, "train|peak_memory_mib")
    assert memory and all(value > 100 for _, value in memory)
