"""Official checkpoint layout: safe loading (no code execution), strict keys, inference, convert round trip."""

import argparse
import json
import os
import subprocess
import sys

import pytest
import torch

from rsam.checkpoint import CheckpointError, load_model, load_official_checkpoint, load_pretrained, save_pretrained
from rsam.checkpoint.golden import load_golden_config, load_golden_weights
from rsam.checkpoint.official import infer_config, normalize_official_keys


@pytest.fixture(scope="module")
def golden_state(reference_dir):
    return load_golden_weights(reference_dir / "tiny_weights.safetensors")


def official_layout(state, **args_overrides):
    """The dict train.py saves: model, optimizer, epoch, args (Namespace), lr_scheduler; saved from a DDP-less model."""
    args = argparse.Namespace(
        img_size=896, mha="", ck_bert="bert-base-uncased", fusion_drop=0.0, window12=True, lr=3e-5, **args_overrides
    )
    model = {
        **state,
        "text_encoder.pooler.dense.weight": torch.zeros(768, 768),
        "text_encoder.pooler.dense.bias": torch.zeros(768),
    }
    return {
        "model": model,
        "optimizer": {
            "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(4)}},
            "param_groups": [{"lr": 1e-5, "weight_decay": 0.01, "params": [0]}],
        },
        "epoch": 7,
        "args": args,
        "lr_scheduler": {"base_lrs": [3e-5], "last_epoch": 100, "_step_count": 101, "lr_lambdas": [None]},
    }


def test_official_layout_loads_safely_and_strictly(tmp_path, golden_state, reference_dir):
    path = tmp_path / "RemoteSAMv1.pth"
    torch.save(official_layout(golden_state), path)
    model, cfg, info = load_official_checkpoint(path)
    assert info == {"epoch": 7, "has_optimizer": True}
    # architecture inferred from shapes (+ head counts from args) equals the golden config
    assert cfg == load_golden_config(reference_dir / "tiny_config.json")
    for key, value in model.state_dict().items():
        assert torch.equal(value, golden_state[key]), key


def test_module_prefix_is_stripped(tmp_path, golden_state):
    ckpt = official_layout(golden_state)
    ckpt["model"] = {f"module.{k}": v for k, v in ckpt["model"].items()}
    torch.save(ckpt, tmp_path / "ddp.pth")
    model = load_official_checkpoint(tmp_path / "ddp.pth")[0]
    assert torch.equal(model.state_dict()["classifier.conv1_1.bias"], golden_state["classifier.conv1_1.bias"])


def test_wrong_keys_are_listed(tmp_path, golden_state):
    ckpt = official_layout(golden_state)
    del ckpt["model"]["backbone.cim.bn.running_mean"]
    ckpt["model"]["backbone.extra_head.weight"] = torch.zeros(3)
    torch.save(ckpt, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as err:
        load_official_checkpoint(tmp_path / "bad.pth")
    assert "backbone.cim.bn.running_mean" in str(err.value) and "backbone.extra_head.weight" in str(err.value)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused_and_runs_nothing(tmp_path, golden_state):
    marker = tmp_path / "pwned"
    ckpt = official_layout({"a": torch.zeros(1)})
    ckpt["args"] = _Exploit(marker)
    torch.save(ckpt, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        load_official_checkpoint(tmp_path / "evil.pth")
    assert not marker.exists()


def test_head_counts_from_args_and_explicit_config(golden_state):
    state = normalize_official_keys(official_layout(golden_state)["model"])
    cfg = infer_config(state, argparse.Namespace(mha="2-4-2-8", ck_bert="bert-base-uncased", img_size=896))
    assert cfg.pwam_heads == (2, 4, 2, 8) and cfg.text.num_heads == 12
    assert cfg.swin.depths == (2, 2, 1, 1) and cfg.swin.window_size == 12 and cfg.swin.mlp_ratio == 1.0
    assert cfg.swin.num_heads == (4, 8, 16, 32) and cfg.text.vocab_size == 1000 and cfg.text.num_layers == 2
    with pytest.raises(CheckpointError, match="ck_bert"):
        infer_config(state, argparse.Namespace(ck_bert="/my/bert", mha=""))


def test_convert_round_trip_identical_tensors_and_outputs(tmp_path, golden_state):
    torch.save(official_layout(golden_state), tmp_path / "official.pth")
    out = tmp_path / "converted"
    proc = subprocess.run(
        [sys.executable, "-m", "rsam.cli.main", "convert", str(tmp_path / "official.pth"), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["tensors"] == 695
    model = load_model(out)
    state = model.state_dict()
    assert set(state) == set(golden_state)
    for key, value in golden_state.items():
        assert torch.equal(state[key], value), key
    # outputs identical to a model that loaded the golden weights directly (small input, same stage-4 grid rule)
    reference = load_official_checkpoint(tmp_path / "official.pth")[0]
    images = torch.randn(1, 3, 896, 896)
    ids = torch.tensor([[101, 5, 9, 102] + [0] * 16])
    mask = (ids > 0).long()
    with torch.no_grad():
        assert torch.equal(model(images, ids, mask), reference(images, ids, mask))


def test_pretrained_folder_errors(tmp_path, golden_state, reference_dir):
    from rsam.models import build_model

    with pytest.raises(FileNotFoundError, match="model.safetensors not found"):
        load_pretrained(tmp_path)
    model = build_model(load_golden_config(reference_dir / "tiny_config.json"))
    model.load_state_dict(golden_state)
    save_pretrained(model, tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["swin"]["depths"] = [2, 2, 2, 1]
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="missing keys: backbone.layers.2.blocks.1"):
        load_pretrained(tmp_path / "m")
