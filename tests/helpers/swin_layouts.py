"""timm Swin models with random weights and the Microsoft release layout of their state_dict (for init tests)."""

from __future__ import annotations

import re

import timm
import torch


def microsoft_layout(timm_model) -> dict[str, torch.Tensor]:
    """The inverse of timm's ``checkpoint_filter_fn``: PatchMerging back to the end of the previous stage, ``head.fc``
    -> ``head``, and the buffers the Microsoft release saves (``relative_position_index`` of every block, ``attn_mask``
    of every shifted block whose stage is larger than a window)."""
    from timm.models.swin_transformer import get_relative_position_index

    out = {}
    for key, value in timm_model.state_dict().items():
        key = re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", key)
        out[key.replace("head.fc.", "head.")] = value.clone()
    for i, stage in enumerate(timm_model.layers):
        for j, block in enumerate(stage.blocks):
            window = block.window_size[0]
            out[f"layers.{i}.blocks.{j}.attn.relative_position_index"] = get_relative_position_index(window, window)
            resolution = block.input_resolution[0]
            if j % 2 and resolution > window:
                grid = torch.zeros(1, resolution, resolution, 1)
                out[f"layers.{i}.blocks.{j}.attn_mask"] = block.get_attn_mask(grid)
    return out


def build_timm(name: str | None = None, **kwargs):
    torch.manual_seed(0)
    options = dict(pretrained=False, always_partition=True, dynamic_img_size=True)
    if name is None:
        from timm.models.swin_transformer import SwinTransformer

        model = SwinTransformer(img_size=96, num_classes=10, always_partition=True, dynamic_img_size=True, **kwargs)
    else:
        model = timm.create_model(name, **options)
    with torch.no_grad():  # timm zero-inits biases and norms; random values make the comparison meaningful
        for param in model.parameters():
            if param.ndim == 1:
                param.add_(torch.randn_like(param) * 0.05)
    return model.eval()
