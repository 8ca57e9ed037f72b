"""wandb is on by default, offline: a fit writes an offline run holding the metrics and the overlay image panel."""

import json

import pytest
from helpers.lit_runs import rsam_cli, tiny_setup
from helpers.wandb_records import history
from PIL import Image


@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory, monkeypatch_module):
    root = tmp_path_factory.mktemp("wandb")
    recipe, run = tiny_setup(root)
    monkeypatch_module.delenv("WANDB_MODE", raising=False)  # offline must come from rsam, not the environment
    result, summary = rsam_cli("fit", "--config", str(recipe))
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((run / "wandb").glob("*-run-*"))
    assert len(runs) == 1
    return runs[0], summary


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_the_run_is_offline(wandb_run):
    folder, _ = wandb_run
    assert folder.name.startswith("offline-run-")


def test_metrics_are_in_the_run_file(wandb_run):
    folder, summary = wandb_run
    rows = history(next(folder.glob("run-*.wandb")))
    keys = set().union(*rows)
    assert {"train/loss_step", "train/lr", "val/loss", "val/oIoU", "val/mIoU", "val/Prec@0.5", "val/Prec@0.9"} <= keys
    val = [row["val/oIoU"] for row in rows if "val/oIoU" in row]
    assert len(val) == 2 and max(val) == pytest.approx(summary["best_score"], abs=1e-6)


def test_each_validation_logs_an_overlay_panel(wandb_run):
    folder, _ = wandb_run
    panels = [row for row in history(next(folder.glob("run-*.wandb"))) if "val/overlays/filenames" in row]
    assert len(panels) == 2  # one per validation epoch
    for panel in panels:
        assert panel["val/overlays/count"] == 2
        captions = panel["val/overlays/captions"]
        assert len(captions) == 2 and all(isinstance(c, str) and c for c in captions)
        for name in panel["val/overlays/filenames"]:
            with Image.open(folder / "files" / name) as image:
                # [prediction | 4 px gap | ground truth] of 64 x 64, plus an 18 px caption strip
                assert image.size == (64 + 4 + 64, 64 + 18)
    assert panels[0]["val/overlays/captions"] == panels[1]["val/overlays/captions"]  # fixed samples


def test_rsam_never_calls_wandb_login(tmp_path, monkeypatch):
    import wandb

    from rsam.lit.build import build_loggers
    from rsam.recipes import load_recipe

    def refuse(*args, **kwargs):
        raise AssertionError("wandb.login was called")

    monkeypatch.setattr(wandb, "login", refuse)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    recipe = load_recipe("demo", [f"trainer.default_root_dir={tmp_path}"], check_files=False)
    loggers = build_loggers(recipe, use_wandb=True)
    experiment = loggers[-1].experiment
    assert experiment.settings.mode in ("offline", "dryrun")
    json.dumps(dict(experiment.config))  # the resolved recipe is the run's config
    experiment.finish()
