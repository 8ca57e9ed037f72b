"""The official configuration has exactly the official state_dict; other configurations follow the derived rule."""

import json

import pytest
import torch

from rsam.models import RemoteSAMConfig, SwinConfig, TextConfig, build_model, official_config
from rsam.models.cim import attention_tokens


def test_official_state_dict_keys_shapes_dtypes_and_order(reference_dir):
    reference = json.loads((reference_dir / "remotesam_base_state_dict.json").read_text())
    with torch.device("meta"):  # shapes only: no 241 M-parameter allocation
        model = build_model(official_config())
    ours = [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()]
    theirs = [(e["key"], e["shape"], e["dtype"]) for e in reference["state_dict"]]
    assert len(ours) == reference["num_state_dict_entries"] == 1107
    assert ours == theirs
    assert sum(p.numel() for p in model.parameters()) == reference["total_parameters"] == 241_590_421
    assert len(list(model.parameters())) == reference["num_parameter_tensors"]
    assert len(list(model.buffers())) == reference["num_buffer_tensors"]


def test_relative_position_index_matches_official_values():
    model = build_model(
        RemoteSAMConfig(
            swin=SwinConfig(depths=(1, 1, 1, 1), window_size=3),
            text=TextConfig(num_layers=1, vocab_size=50, max_position_embeddings=20),
        )
    )
    index = model.backbone.layers[0].blocks[0].attn.relative_position_index
    # hand-computed for a 3x3 window: (dy + 2) * 5 + (dx + 2) between token i and token j
    coords = [(r, c) for r in range(3) for c in range(3)]
    expected = torch.tensor([[(yi - yj + 2) * 5 + (xi - xj + 2) for (yj, xj) in coords] for (yi, xi) in coords])
    assert torch.equal(index, expected)


@pytest.mark.parametrize(
    "image_size, grid, tokens",
    [
        ((896, 896), (28, 28), 1080),
        ((893, 895), (28, 28), 1080),
        ((448, 448), (14, 14), 196 + 49 + 25),
        ((512, 640), (16, 20), 320 + 8 * 10 + 6 * 7),
    ],
)
def test_cim_grid_rule(image_size, grid, tokens):
    cfg = RemoteSAMConfig(image_size=image_size)
    assert cfg.cim_grid == grid
    assert attention_tokens(grid) == tokens


def small_config(**kw) -> RemoteSAMConfig:
    defaults = dict(
        image_size=(64, 96),
        swin=SwinConfig(embed_dim=32, depths=(1, 2, 1, 1), num_heads=(1, 2, 4, 8), window_size=5, mlp_ratio=1.5),
        text=TextConfig(
            vocab_size=120, hidden_size=48, num_layers=1, num_heads=4, intermediate_size=64, max_position_embeddings=24
        ),
        pwam_heads=(2, 1, 4, 2),
    )
    defaults.update(kw)
    return RemoteSAMConfig(**defaults)


def test_small_non_square_configuration_runs_and_keeps_input_size():
    torch.manual_seed(0)
    model = build_model(small_config()).eval()
    images = torch.randn(2, 3, 64, 96)
    ids = torch.randint(1, 120, (2, 20))
    mask = torch.ones(2, 20, dtype=torch.int64)
    mask[1, 5:] = 0
    with torch.no_grad():
        logits = model(images, ids, mask)
    assert logits.shape == (2, 2, 64, 96)
    assert torch.isfinite(logits).all()
    # padding ids are ignored (the masked words get -1e4 logits in PWAM and -1e4 in BERT attention)
    ids2 = ids.clone()
    ids2[1, 5:] = 7
    with torch.no_grad():
        assert torch.allclose(model(images, ids2, mask)[1], logits[1], atol=1e-5)
    # an input whose stage-4 grid differs from the built one is refused with a clear message
    with pytest.raises(ValueError, match="stage-4 grid"):
        with torch.no_grad():
            model(torch.randn(1, 3, 128, 96), ids[:1], mask[:1])


def test_sizes_sharing_the_stage4_grid_are_accepted():
    model = build_model(small_config(image_size=(64, 64))).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 61, 63), torch.randint(1, 120, (1, 20)), torch.ones(1, 20, dtype=torch.int64))
    assert out.shape == (1, 2, 61, 63)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(pwam_heads=(3, 1, 1, 1)), "pwam_heads"),
        (dict(swin=SwinConfig(embed_dim=30)), "multiple of 4"),
        (dict(swin=SwinConfig(depths=(2, 2, 2))), "4 stages"),
        (dict(swin=SwinConfig(num_heads=(3, 8, 16, 32))), "num_heads"),
        (dict(text=TextConfig(hidden_size=100, num_heads=12)), "text.hidden_size"),
        (dict(max_tokens=600), "max_tokens"),
    ],
)
def test_impossible_configs_are_rejected_naming_the_key(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RemoteSAMConfig(**kwargs)


def test_config_round_trip_and_unknown_keys(tmp_path):
    cfg = small_config()
    cfg.save(tmp_path / "c.json")
    assert RemoteSAMConfig.load(tmp_path / "c.json") == cfg
    data = cfg.to_dict()
    data["swin"]["windw_size"] = 7
    with pytest.raises(ValueError, match="windw_size"):
        RemoteSAMConfig.from_dict(data)
