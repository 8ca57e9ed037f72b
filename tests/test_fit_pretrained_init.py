"""A 2-process CPU DDP fit (the real CLI in a subprocess) that starts from an ImageNet Swin checkpoint, once in the
timm layout and once in the Microsoft layout, plus a Hugging Face BERT folder: the first log lines say what was
initialised from where, and the checkpoint written after the run still holds the files' weights (frozen text layers
exactly; the Swin trunk to within the few tiny optimiser steps)."""

from __future__ import annotations

import pytest
import torch
from helpers.lit_runs import rsam_cli
from helpers.swin_layouts import build_timm, microsoft_layout
from safetensors.torch import save_file

from rsam.data.synthetic import write_synthetic_dataset

SWIN = dict(embed_dim=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8), window_size=7)  # the demo model's trunk
RECIPE = """
name: pretrained-init
seed: 5
model: demo
data: {{dirs: ["{data}"], batch_size: 2, num_workers: 0, samples_per_rank: 4, test_split: val}}
optim: {{lr: 1.0e-9, trained_text_layers: 1}}
trainer: {{accelerator: cpu, devices: 2, strategy: ddp, max_steps: 2, log_every_n_steps: 1, num_sanity_val_steps: 0,
          limit_val_batches: 0, enable_progress_bar: false, default_root_dir: "{run}"}}
"""
TEXT = ["model.image_size=[64,64]", "model.text.hidden_size=32", "model.text.num_layers=2", "model.text.num_heads=2",
        "model.text.intermediate_size=64", "model.text.max_position_embeddings=32"]  # fmt: skip


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    import transformers

    root = tmp_path_factory.mktemp("init")
    swin = build_timm(**SWIN)
    save_file({k: v.contiguous() for k, v in swin.state_dict().items()}, str(root / "swin_timm.safetensors"))
    torch.save({"model": microsoft_layout(swin)}, root / "swin_microsoft.pth")
    torch.manual_seed(6)
    bert = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                   max_position_embeddings=32)  # fmt: skip
    transformers.BertModel(bert).save_pretrained(root / "bert")
    write_synthetic_dataset(root / "data", {"train": [8], "val": [2]}, image_size=24)
    return root, swin.state_dict()


@pytest.mark.parametrize(
    "layout, file", [("timm >= 0.9", "swin_timm.safetensors"), ("Microsoft", "swin_microsoft.pth")]
)
def test_two_process_fit_starts_from_swin_and_bert(sources, layout, file, tmp_path):
    from safetensors.torch import load_file

    root, swin = sources
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(data=root / "data", run=tmp_path / "run"))
    init = [f"init.backbone={root / file}", f"init.text_encoder={root / 'bert'}"]
    result, summary = rsam_cli("fit", "--config", str(recipe), "--no-wandb", *TEXT, *init, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    assert summary["step"] == 2
    log = result.stderr
    assert f"init.backbone {root / file} ({layout}" in log and "left at init" in log
    assert f"init.text_encoder: 37 tensors from {root / 'bert' / 'model.safetensors'}" in log
    assert log.index("init.backbone") < log.index("init.text_encoder") < log.index("poly schedule")
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    state = state["state_dict"]
    bert = load_file(str(root / "bert" / "model.safetensors"))
    frozen = [k for k in bert if k.startswith(("embeddings.word", "encoder.layer.1."))]  # not trained (1 of 2 layers)
    assert frozen and all(torch.equal(state[f"model.text_encoder.{k}"], bert[k]) for k in frozen)
    for key in ("blocks.0.attn.qkv.weight", "blocks.0.attn.relative_position_bias_table", "blocks.0.mlp.fc2.weight"):
        got = state[f"model.backbone.layers.2.{key}"]
        assert torch.allclose(got, swin[f"layers.2.{key}"], atol=1e-6), key
    merged = state["model.backbone.layers.0.downsample.reduction.weight"]  # timm: the start of stage 1
    assert torch.allclose(merged, swin["layers.1.downsample.reduction.weight"], atol=1e-6)
