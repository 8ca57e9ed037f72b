"""The one loader: every command that takes weights accepts a Lightning checkpoint of ``rsam fit`` and an official
``RemoteSAMv1.pth`` pickle (the same weights give the same outputs), and bad files give one line naming the file."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from helpers.benchmark_loop import write_refsegrs
from helpers.lit_runs import tiny_setup
from PIL import Image

from rsam.checkpoint import CheckpointError, load_model, open_model, save_pretrained
from rsam.checkpoint.loader import LIGHTNING, OFFICIAL, RSAM_FOLDER
from rsam.cli.main import main
from rsam.models import RemoteSAMConfig, SwinConfig, TextConfig, build_model

# BERT heads 12 and PWAM heads from args: what the official pickle's args tell (ck_bert=bert-base-uncased, mha)
CONFIG = RemoteSAMConfig(
    image_size=(64, 64),
    swin=SwinConfig(embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), window_size=4),
    text=TextConfig(hidden_size=24, num_layers=1, num_heads=12, intermediate_size=32, max_position_embeddings=32),
    pwam_heads=(1, 1, 2, 2),
)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """The same random network as a Lightning checkpoint (written by Lightning) and as an official pickle."""
    import lightning.pytorch as pl

    from rsam.lit.module import RemoteSAMModule

    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(3)
    network = build_model(CONFIG).eval()
    with torch.no_grad():
        network.classifier.conv1_1.weight.mul_(30)  # visible foreground differences between prompts
    module = RemoteSAMModule(CONFIG.to_dict())
    module.model.load_state_dict(network.state_dict())
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.strategy.connect(module)
    trainer.save_checkpoint(root / "fit.ckpt")
    official = {
        "model": {f"module.{k}": v for k, v in network.state_dict().items()},  # saved from the DDP wrapper
        "epoch": 39,
        "args": argparse.Namespace(img_size=64, mha="1-1-2-2", ck_bert="bert-base-uncased", fusion_drop=0.0),
    }
    torch.save(official, root / "RemoteSAMv1.pth")
    image = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(image).save(root / "scene.png")
    return {"network": network, "lightning": root / "fit.ckpt", "official": root / "RemoteSAMv1.pth", "root": root}


def cli(capsys, *argv) -> tuple[int, list[dict], str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines() if line.startswith("{")], err


def test_the_loader_recognises_each_format_by_content(weights, tmp_path):
    state = weights["network"].state_dict()
    for key, kind in (("lightning", LIGHTNING), ("official", OFFICIAL)):
        loaded = open_model(weights[key])
        assert loaded.kind == kind and loaded.model.config == CONFIG
        assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in state.items())
    renamed = tmp_path / "official_named.ckpt"  # the suffix does not decide: an official pickle named .ckpt
    renamed.write_bytes(weights["official"].read_bytes())
    assert open_model(renamed).kind == OFFICIAL
    save_pretrained(weights["network"], tmp_path / "folder")
    assert open_model(tmp_path / "folder").kind == RSAM_FOLDER
    assert open_model(tmp_path / "folder" / "model.safetensors").kind == RSAM_FOLDER


@pytest.mark.parametrize("source", ["lightning", "official"])
def test_every_command_that_takes_weights_accepts_both(weights, source, tmp_path, capsys, monkeypatch):
    path, root = weights[source], weights["root"]
    code, lines, err = cli(capsys, "segment", "--model", path, "--image", root / "scene.png", "--text", "the road",
                           "--text", "a red car", "--out", tmp_path / "seg")  # fmt: skip
    assert code == 0, err
    fractions = [line["foreground_fraction"] for line in lines if "expression" in line]
    reference = json.loads((root / "segment.json").read_text()) if (root / "segment.json").exists() else None
    if reference is None:
        (root / "segment.json").write_text(json.dumps(fractions))
    else:  # the second source gives exactly what the first gave
        assert fractions == reference
    for command in ("export", "convert"):
        code, lines, err = cli(capsys, command, path, "--out", tmp_path / command)
        assert code == 0, err
        exported = load_model(tmp_path / command)
        assert all(torch.equal(exported.state_dict()[k], v) for k, v in weights["network"].state_dict().items())
    data = write_refsegrs(tmp_path / "refsegrs")
    common = ["--out", tmp_path / "bench", "--limit", "2", "--accelerator", "cpu", "--num-workers", "0", "--no-wandb"]
    code, lines, err = cli(capsys, "test", "--benchmark", "refsegrs", "--data", data, "--model", path, *common)
    assert code == 0, err
    assert lines[-1]["metrics"]["samples"] == 2
    code, lines, err = cli(capsys, "test", "--benchmark", "refsegrs", "--data", data, "--ckpt", path, *common)
    assert code == 0 and "--ckpt is deprecated, use --model" in err
    recipe, run = tiny_setup(tmp_path / "tiny")
    for command in ("validate", "predict"):
        code, lines, err = cli(capsys, command, "--config", recipe, "--model", path, "--no-wandb")
        assert code == 0, err
    assert (run / "predictions").is_dir()


def test_bad_weights_give_one_line_naming_the_file(weights, tmp_path, capsys, monkeypatch):
    save_pretrained(weights["network"], tmp_path / "torn")
    file = tmp_path / "torn" / "model.safetensors"
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    code, _, err = cli(capsys, "segment", "--model", tmp_path / "torn", "--image", weights["root"] / "scene.png",
                       "--text", "x", "--out", tmp_path / "o")  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{file}: not a readable safetensors file" in err

    (tmp_path / "notes.txt").write_text("not a checkpoint")
    code, _, err = cli(capsys, "export", tmp_path / "notes.txt", "--out", tmp_path / "e")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "notes.txt: not a readable torch checkpoint" in err
    torch.save({"patch_embed.proj.weight": torch.zeros(8, 3, 4, 4), "layers.0.blocks.0.norm1.weight": torch.zeros(8)},
               tmp_path / "swin.pth")  # fmt: skip
    code, _, err = cli(capsys, "export", tmp_path / "swin.pth", "--out", tmp_path / "e")
    assert code == 2 and "swin.pth: not a RemoteSAM checkpoint" in err and "init.backbone" in err
    (tmp_path / "empty.ckpt").write_bytes(b"")
    code, _, err = cli(capsys, "export", tmp_path / "empty.ckpt", "--out", tmp_path / "e")
    assert code == 2 and "empty.ckpt: empty file" in err
    truncated = tmp_path / "torn.ckpt"
    truncated.write_bytes(weights["lightning"].read_bytes()[:5000])
    code, _, err = cli(capsys, "export", truncated, "--out", tmp_path / "e")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "torn.ckpt: not a readable torch checkpoint" in err
    (tmp_path / "random").mkdir()
    (tmp_path / "random" / "a.txt").write_text("")
    with pytest.raises(CheckpointError, match="neither an rsam model folder .* nor a DeepSpeed checkpoint"):
        load_model(tmp_path / "random")


def test_registered_names_resolve_to_converted_folders(weights, tmp_path, monkeypatch):
    monkeypatch.setenv("RSAM_MODELS_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="rsam convert RemoteSAMv1.pth --out"):
        load_model("remotesam-base")
    with pytest.raises(FileNotFoundError, match="not a registered model name: demo, remotesam-base"):
        load_model("remotesam-huge")
    save_pretrained(weights["network"], tmp_path / "demo")  # any converted folder under the name
    assert open_model("demo").kind == RSAM_FOLDER


def test_recipes_name_registered_models_and_init_sources():
    from rsam.models import model_config_by_name, official_config
    from rsam.recipes import RecipeError, load_recipe, model_config

    recipe = load_recipe("remotesam-270k", check_files=False)
    assert model_config(recipe) == official_config() == model_config_by_name("remotesam-base")
    assert recipe.init.backbone.endswith("swin_base_patch4_window12_384_22k.pth")
    assert recipe.init.text_encoder.endswith("bert-base-uncased")
    assert model_config(load_recipe("finetune", check_files=False)) == official_config()
    demo = load_recipe("demo", ["model=demo", "model.swin.drop_path_rate=0.2"], check_files=False)
    assert model_config(demo).swin.drop_path_rate == 0.2 and model_config(demo).swin.embed_dim == 32
    with pytest.raises(RecipeError, match="recipe key 'model': unknown model name 'remotesam-huge'"):
        load_recipe("demo", ["model=remotesam-huge"], check_files=False)
    with pytest.raises(RecipeError, match="'init.backbone'"):
        load_recipe("finetune", ["init.backbone=swin.pth"], check_files=False)
    with pytest.raises(RecipeError, match="recipe key 'init.backbone': /nonexistent/swin.pth does not exist"):
        load_recipe("demo", ["init.backbone=/nonexistent/swin.pth"])
