"""Parameter groups against the official rule (train.py of RemoteSAM) applied to the official state_dict key list."""

import json

import pytest
import torch

from rsam.lit.param_groups import (
    FROZEN,
    GROUP_BACKBONE_DECAY,
    GROUP_BACKBONE_NO_DECAY,
    GROUP_CLASSIFIER,
    GROUP_TEXT,
    official_param_groups,
    parameter_group,
)
from rsam.models import RemoteSAMConfig, SwinConfig, TextConfig, build_model


@pytest.fixture(scope="module")
def official_params(reference_dir):
    data = json.loads((reference_dir / "remotesam_base_state_dict.json").read_text())
    return {entry["key"]: entry["numel"] for entry in data["state_dict"] if entry["kind"] == "parameter"}


def official_rule(names):
    """A transcription of train.py:257-283 (model 'lavt_one'), written against names, independent of rsam."""
    groups = {"no_decay": [], "decay": [], "classifier": [], "bert": []}
    for name in names:
        if name.startswith("backbone."):
            inner = name[len("backbone.") :]  # single_model.backbone.named_parameters()
            if "norm" in inner or "absolute_pos_embed" in inner or "relative_position_bias_table" in inner:
                groups["no_decay"].append(name)
            else:
                groups["decay"].append(name)
        elif name.startswith("classifier."):
            groups["classifier"].append(name)
    for i in range(10):  # single_model.text_encoder.encoder.layer[i] for i in range(10)
        groups["bert"] += [n for n in names if n.startswith(f"text_encoder.encoder.layer.{i}.")]
    return groups


def test_groups_match_the_official_rule_on_the_official_keys(official_params):
    names = list(official_params)
    expected = official_rule(names)
    ours = {
        g: [n for n in names if parameter_group(n) == g]
        for g in (GROUP_BACKBONE_NO_DECAY, GROUP_BACKBONE_DECAY, GROUP_CLASSIFIER, GROUP_TEXT, FROZEN)
    }
    assert ours[GROUP_BACKBONE_NO_DECAY] == expected["no_decay"]
    assert ours[GROUP_BACKBONE_DECAY] == expected["decay"]
    assert ours[GROUP_CLASSIFIER] == expected["classifier"]
    assert sorted(ours[GROUP_TEXT]) == sorted(expected["bert"])
    optimised = set().union(*map(set, expected.values()))
    assert ours[FROZEN] == [n for n in names if n not in optimised]


def test_frozen_parameters_are_the_text_embeddings_and_layers_10_11(official_params):
    frozen = [n for n in official_params if parameter_group(n) == FROZEN]
    assert {n.split(".")[1] for n in frozen} == {"embeddings", "encoder"}
    assert {n.split(".")[3] for n in frozen if ".layer." in n} == {"10", "11"}
    # optimised parameters: 241,590,421 - embeddings 23,837,184 - 2 x 7,087,872 (one BERT-base layer)
    assert sum(v for n, v in official_params.items() if parameter_group(n) != FROZEN) == 203_577_493


@pytest.mark.parametrize(
    "name, group",
    [
        ("backbone.norm0.weight", GROUP_BACKBONE_NO_DECAY),
        ("backbone.layers.2.blocks.17.attn.relative_position_bias_table", GROUP_BACKBONE_NO_DECAY),
        ("backbone.layers.0.downsample.norm.bias", GROUP_BACKBONE_NO_DECAY),
        ("backbone.layers.0.blocks.0.attn.qkv.weight", GROUP_BACKBONE_DECAY),
        ("backbone.cim.bn.weight", GROUP_BACKBONE_DECAY),  # 'bn' is not 'norm': the official rule decays it
        ("classifier.conv2_1.rounting_func.norm.norm.weight", GROUP_CLASSIFIER),  # classifier norms are decayed
        ("text_encoder.encoder.layer.9.output.LayerNorm.weight", GROUP_TEXT),
        ("text_encoder.encoder.layer.10.output.dense.weight", FROZEN),
        ("text_encoder.embeddings.word_embeddings.weight", FROZEN),
    ],
)
def test_examples(name, group):
    assert parameter_group(name) == group


def test_unknown_parameter_is_rejected():
    with pytest.raises(ValueError, match="adapter.weight"):
        parameter_group("adapter.weight")


def tiny_model():
    cfg = RemoteSAMConfig(
        image_size=(64, 64),
        swin=SwinConfig(embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), window_size=4, drop_path_rate=0.0),
        text=TextConfig(
            vocab_size=100, hidden_size=16, num_layers=3, num_heads=2, intermediate_size=32, max_position_embeddings=32
        ),
    )
    return build_model(cfg)


def test_optimizer_steps_exactly_the_grouped_parameters_with_their_decay():
    torch.manual_seed(0)
    model = tiny_model()
    groups = official_param_groups(model, trained_text_layers=2)
    optimizer = torch.optim.AdamW(groups.optimizer_groups(weight_decay=0.5), lr=1e-2)
    decays = {g["name"]: g["weight_decay"] for g in optimizer.param_groups}
    assert decays == {GROUP_BACKBONE_NO_DECAY: 0.0, GROUP_BACKBONE_DECAY: 0.5, GROUP_CLASSIFIER: 0.5, GROUP_TEXT: 0.5}
    grouped = {id(p) for g in optimizer.param_groups for p in g["params"]}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert grouped == trainable  # nothing optimised twice, nothing trainable left out
    assert groups.frozen and all(
        n.startswith(("text_encoder.embeddings", "text_encoder.encoder.layer.2.")) for n in groups.frozen
    )

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    images = torch.randn(2, 3, 64, 64)
    ids = torch.randint(1, 100, (2, 6))
    logits = model(images, ids, torch.ones_like(ids))
    logits.square().mean().backward()
    optimizer.step()
    after = dict(model.named_parameters())
    assert torch.equal(
        before["text_encoder.embeddings.word_embeddings.weight"],
        after["text_encoder.embeddings.word_embeddings.weight"],
    )
    assert torch.equal(
        before["text_encoder.encoder.layer.2.output.dense.weight"],
        after["text_encoder.encoder.layer.2.output.dense.weight"],
    )
    assert not torch.equal(
        before["text_encoder.encoder.layer.0.output.dense.weight"],
        after["text_encoder.encoder.layer.0.output.dense.weight"],
    )
