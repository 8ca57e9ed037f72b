"""init.backbone: ImageNet Swin checkpoints (Microsoft release and timm layouts) load into RemoteSAM's trunk, proven
by equal outputs against timm's own Swin blocks (random weights, built offline); bad files are refused naming keys.
(init.text_encoder: tests/test_bert_init.py.)"""

from __future__ import annotations

import logging

import pytest
import torch
from helpers.swin_layouts import build_timm, microsoft_layout

from rsam.checkpoint import CheckpointError
from rsam.checkpoint.swin_pretrained import MICROSOFT, TIMM, load_swin_backbone, resize_bias_table
from rsam.models import RemoteSAMConfig, SwinConfig, TextConfig, build_model, official_config
from rsam.models.swin import shifted_window_mask

TINY_TEXT = TextConfig(
    vocab_size=64, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, max_position_embeddings=32
)
SMALL_SWIN = dict(embed_dim=48, depths=(2, 1, 3, 2), num_heads=(2, 3, 6, 12), window_size=6)


def rsam_for(swin: SwinConfig, image_size=(384, 384)):
    torch.manual_seed(1)
    return build_model(RemoteSAMConfig(image_size=image_size, swin=swin, text=TINY_TEXT)).eval()


@pytest.fixture(scope="module")
def swin_b(tmp_path_factory):
    """timm's swin_base_patch4_window12_384 with random weights, saved once in both layouts (~350 MB each), and one
    RemoteSAM with the official Swin-B trunk (a tiny text encoder: it plays no part here)."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("swin_b")
    model = build_timm("swin_base_patch4_window12_384")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    torch.save({"model": microsoft_layout(model)}, folder / "swin_base_patch4_window12_384_22k.pth")
    return model, folder, rsam_for(official_config().swin)


@pytest.fixture(scope="module")
def small_swin(tmp_path_factory):
    folder = tmp_path_factory.mktemp("swin_small")
    model = build_timm(**SMALL_SWIN)
    torch.save(model.state_dict(), folder / "timm.pth")
    torch.save({"model": microsoft_layout(model)}, folder / "microsoft.pth")
    return model, folder


def assert_swin_equal(timm_model, ours, window: int, tol: float = 1e-5):
    """Patch embedding, every stage's blocks (fed the same tensor, language fusion bypassed) and PatchMerging.

    Stages up to 256 wide get two windows a side (window partition order and all three shift regions along each
    axis); the wider ones, whose many blocks dominate the cost, one window (the shifted block still sees 4 regions)."""
    backbone = ours.backbone
    with torch.no_grad():
        image = torch.randn(1, 3, 8 * window, 8 * window)
        expected = timm_model.patch_embed(image)  # NHWC
        got = backbone.patch_embed(image).permute(0, 2, 3, 1)
        assert (got - expected).abs().max() <= tol
        for i, stage in enumerate(timm_model.layers):
            dim = stage.blocks[0].norm1.normalized_shape[0]
            side = 2 * window if dim <= 256 else window
            x = torch.randn(1, side, side, dim)
            expected = stage.blocks(x)
            mask = shifted_window_mask(side, side, window, window // 2)
            y = x.reshape(1, side * side, dim)
            for block in backbone.layers[i].blocks:
                y = block(y, side, side, mask)
            diff = (y.view_as(expected) - expected).abs().max()
            assert diff <= tol, f"stage {i}: max |diff| {diff}"
            if i + 1 < len(timm_model.layers):
                z = torch.randn(1, 2 * side, 2 * side, dim)
                expected = timm_model.layers[i + 1].downsample(z)
                got = backbone.layers[i].downsample(z.reshape(1, -1, dim), 2 * side, 2 * side)
                assert (got.view_as(expected) - expected).abs().max() <= tol, f"PatchMerging after stage {i}"


def test_swin_b_in_both_layouts_loads_with_equal_outputs(swin_b, caplog):
    timm_model, folder, ours = swin_b
    with caplog.at_level(logging.INFO):
        report = load_swin_backbone(ours, folder / "model.safetensors")
        report.log()
    assert report.layout == TIMM and not report.resized
    assert_swin_equal(timm_model, ours, window=12)
    assert len(report.loaded) == 325  # 329 timm tensors - final norm (2) - head (2)
    assert set(report.ignored.values()) == {"classification head", "final norm of the classifier"}
    assert {"backbone.layers.*.fusion", "backbone.cim", "classifier", "text_encoder"} <= set(report.left_at_init)
    assert "init.backbone" in caplog.text and "left at init" in caplog.text
    # the Microsoft layout of the same weights gives the same tensors (so the same outputs), whatever was there before
    proven = {k: v.clone() for k, v in ours.state_dict().items()}
    with torch.no_grad():
        for param in ours.backbone.parameters():
            param.add_(1.0)
    report = load_swin_backbone(ours, folder / "swin_base_patch4_window12_384_22k.pth")
    assert report.layout == MICROSOFT and len(report.loaded) == 325
    assert "derived buffer (recomputed from the window)" in report.ignored.values()
    for key in report.loaded:
        assert torch.equal(ours.state_dict()[key], proven[key]), key


def test_small_swin_of_other_depths_and_window(small_swin):
    timm_model, folder = small_swin
    ours = rsam_for(SwinConfig(**SMALL_SWIN), image_size=(192, 192))
    assert load_swin_backbone(ours, folder / "timm.pth").layout == TIMM
    assert_swin_equal(timm_model, ours, window=6)
    proven = {k: v.clone() for k, v in ours.state_dict().items()}
    fresh = rsam_for(SwinConfig(**SMALL_SWIN), image_size=(192, 192))
    report = load_swin_backbone(fresh, folder / "microsoft.pth")
    assert report.layout == MICROSOFT
    for key in report.loaded:
        assert torch.equal(fresh.state_dict()[key], proven[key]), key


@pytest.mark.parametrize("window", [8, 4])
def test_window_change_resizes_the_bias_tables_bicubically(small_swin, window):
    from timm.layers.pos_embed_rel import resize_rel_pos_bias_table_levit

    timm_model, folder = small_swin
    ours = rsam_for(SwinConfig(**{**SMALL_SWIN, "window_size": window}), image_size=(192, 192))
    report = load_swin_backbone(ours, folder / "microsoft.pth")
    tables = [k for k in ours.state_dict() if k.endswith("relative_position_bias_table")]
    assert sorted(report.resized) == sorted(tables) and len(tables) == sum(SMALL_SWIN["depths"])
    source = timm_model.layers[2].blocks[1].attn.relative_position_bias_table.detach()
    new_shape = ((2 * window - 1) ** 2, source.shape[1])
    reference = resize_rel_pos_bias_table_levit(source, new_shape, antialias=False)  # timm's mmcv/Swin rule
    loaded = ours.backbone.layers[2].blocks[1].attn.relative_position_bias_table.detach()
    assert torch.allclose(loaded, reference, atol=1e-6)
    assert torch.allclose(resize_bias_table(source, 6), source)  # same window: unchanged


def test_bad_swin_checkpoints_are_refused_naming_the_keys(small_swin, tmp_path):
    timm_model, _ = small_swin
    state = dict(timm_model.state_dict())
    ours = rsam_for(SwinConfig(**SMALL_SWIN), image_size=(192, 192))
    bands = {**state, "patch_embed.proj.weight": torch.zeros(48, 4, 4, 4)}
    torch.save(bands, tmp_path / "bands.pth")
    with pytest.raises(CheckpointError, match="4 input channels, the model takes 3"):
        load_swin_backbone(ours, tmp_path / "bands.pth")
    torch.save({**state, "layers.2.blocks.0.extra.weight": torch.zeros(3)}, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"keys the model does not have: backbone\.layers\.2\.blocks\.0\.extra"):
        load_swin_backbone(ours, tmp_path / "extra.pth")
    fewer = {k: v for k, v in state.items() if not k.startswith("layers.2.blocks.2.")}
    torch.save(fewer, tmp_path / "fewer.pth")
    with pytest.raises(CheckpointError, match=r"Swin tensors the checkpoint lacks: backbone\.layers\.2\.blocks\.2\."):
        load_swin_backbone(ours, tmp_path / "fewer.pth")
    heads = rsam_for(SwinConfig(**{**SMALL_SWIN, "num_heads": (1, 3, 6, 12)}), image_size=(192, 192))
    torch.save(state, tmp_path / "timm.pth")
    with pytest.raises(CheckpointError, match=r"shape mismatches: backbone\.layers\.0\.blocks\.0\.attn\."):
        load_swin_backbone(heads, tmp_path / "timm.pth")
    whole = {f"backbone.{k}": v for k, v in ours.backbone.state_dict().items()}
    torch.save({"model": whole}, tmp_path / "remotesam.pth")
    with pytest.raises(CheckpointError, match="use init.weights"):
        load_swin_backbone(ours, tmp_path / "remotesam.pth")
