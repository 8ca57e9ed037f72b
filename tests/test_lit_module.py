"""LightningModule pieces: the poly schedule, the evaluation metrics' one-to-zero figures, weight initialisation."""

import pytest
import torch
from safetensors.torch import load_file

from rsam.checkpoint import save_pretrained
from rsam.lit.build import build_module
from rsam.lit.module import EvalMetrics, poly_factor
from rsam.recipes import load_recipe

TINY = [
    "model.image_size=[64,64]",
    "model.swin.embed_dim=8",
    "model.swin.depths=[1,1,1,1]",
    "model.swin.num_heads=[1,1,2,2]",
    "model.swin.window_size=4",
    "data.dirs=[unused]",
]


def test_poly_factor_is_the_official_per_step_decay():
    assert poly_factor(0, 100, 0.9) == 1.0
    assert poly_factor(50, 100, 0.9) == pytest.approx(0.5**0.9)
    assert poly_factor(100, 100, 0.9) == 0.0
    assert poly_factor(130, 100, 0.9) == 0.0  # past the end (e.g. max_time resumed): never negative


def test_eval_metrics_one_to_zero_figures_and_padding():
    metrics = EvalMetrics()
    pred = torch.zeros(4, 2, 5, dtype=torch.long)
    pred[1, 0, :2] = 1  # second one-to-zero prompt: 2 of 10 pixels
    pred[3] = 1  # padding sample, ignored
    target = torch.zeros_like(pred)
    target[2, 1, :] = 1
    pred[2, 1, :4] = 1  # a one-to-one sample: I = 4, U = 5
    valid = torch.tensor([True, True, True, False])
    metrics.update(pred, target, valid, ["one-to-zero", "one-to-zero", "one-to-one", "one-to-zero"])
    metrics.loss.update(torch.tensor([1.0, 2.0, 6.0]))
    values = metrics.compute()
    assert values["zero_fg_fraction"] == pytest.approx((0.0 + 0.2) / 2)
    assert values["zero_empty_rate"] == pytest.approx(0.5)
    assert values["oIoU"] == pytest.approx(4 / (5 + 2))  # the false positives of prompt 2 count in the union
    assert values["loss"] == pytest.approx(3.0)


def test_text_encoder_starts_from_the_minilm_weights():
    recipe = load_recipe("demo", TINY, check_files=False)
    module = build_module(recipe)
    from rsam.text import minilm_model_dir

    weights = load_file(str(minilm_model_dir() / "model.safetensors"))
    key = next(k for k in weights if k.endswith("encoder.layer.3.attention.self.query.weight"))
    assert torch.equal(module.model.text_encoder.encoder.layer[3].attention.self.query.weight, weights[key])
    # the demo's rule: layers 0-3 trained, embeddings and layers 4-5 frozen
    assert module.model.text_encoder.encoder.layer[3].attention.self.query.weight.requires_grad
    assert not module.model.text_encoder.encoder.layer[4].attention.self.query.weight.requires_grad
    assert not module.model.text_encoder.embeddings.word_embeddings.weight.requires_grad


def test_init_weights_loads_a_whole_exported_model(tmp_path):
    torch.manual_seed(1)
    source = build_module(load_recipe("demo", TINY + ["init.text_encoder=null"], check_files=False))
    save_pretrained(source.model, tmp_path / "model")
    torch.manual_seed(2)
    recipe = load_recipe(
        "demo", TINY + ["init.text_encoder=null", f"init.weights={tmp_path / 'model'}"], check_files=False
    )
    target = build_module(recipe)
    for (name, a), b in zip(source.model.state_dict().items(), target.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_init_weights_with_another_architecture_is_refused(tmp_path):
    source = build_module(load_recipe("demo", TINY + ["init.text_encoder=null"], check_files=False))
    save_pretrained(source.model, tmp_path / "model")
    recipe = load_recipe(
        "demo",
        TINY + ["init.text_encoder=null", "model.swin.embed_dim=16", f"init.weights={tmp_path / 'model'}"],
        check_files=False,
    )
    with pytest.raises(ValueError, match="architecture differs"):
        build_module(recipe)
