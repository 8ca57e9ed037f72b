"""RemoteSAM = RMSIN (Liu et al., CVPR 2024) trained on RemoteSAM-270K (Yao et al., ACM MM 2025).

``RemoteSAM(images, input_ids, attention_mask) -> logits (B, 2, H, W)``: a BERT text encoder, a Swin backbone with
per-stage language fusion (PWAM), an intra-scale branch and tanh gates, the cross-scale interaction module, and the
adaptive-rotated-conv decoder. ``state_dict()`` uses the official key names (``backbone.*``, ``classifier.*``,
``text_encoder.*``), so the official checkpoint loads with strict key matching.

Each stage sends its *PWAM output* (normalised by ``norm{i}``) to the CIM/decoder, while the trunk continues as
``x + res_gate(x_res)·x_res + visual_gate(v_res)·v_res`` through PatchMerging, as in LAVT/RMSIN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rsam.models.bert import BertTextEncoder
from rsam.models.cim import CIM
from rsam.models.config import RemoteSAMConfig
from rsam.models.decoder import SimpleDecoding
from rsam.models.fusion import PWAM, VariousReceptive, tanh_gate
from rsam.models.swin import PatchEmbed, PatchMerging, SwinBlock, shifted_window_mask


class MultiModalStage(nn.Module):
    """Official ``MMBasicLayer``: Swin blocks, then PWAM + intra-scale branch, gated residual, PatchMerging."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window: int,
        mlp_ratio: float,
        qkv_bias: bool,
        drop_path: list[float],
        eps: float,
        l_channels: int,
        fusion_heads: int,
        fusion_drop: float,
        downsample: bool,
    ):
        super().__init__()
        self.window = window
        self.shift = window // 2
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio, qkv_bias, drop_path[i], eps)
            for i in range(depth)
        )
        self.fusion = PWAM(dim, l_channels, fusion_heads, fusion_drop)
        self.res_gate = tanh_gate(dim)
        self.visual_residual = VariousReceptive()
        self.visual_gate = tanh_gate(dim)
        self.downsample = PatchMerging(dim, eps) if downsample else None

    def forward(self, x: torch.Tensor, h: int, w: int, words: torch.Tensor, word_mask: torch.Tensor):
        """-> (PWAM output (B, h*w, C), trunk for the next stage, its h, its w)."""
        hp = -(-h // self.window) * self.window
        wp = -(-w // self.window) * self.window
        mask = shifted_window_mask(hp, wp, self.window, self.shift, device=x.device).to(x.dtype)
        for block in self.blocks:
            x = block(x, h, w, mask)
        v_res = self.visual_residual(x, h, w)
        x_res = self.fusion(x, words, word_mask)
        x = x + self.res_gate(x_res) * x_res + self.visual_gate(v_res) * v_res
        if self.downsample is None:
            return x_res, x, h, w
        return x_res, self.downsample(x, h, w), (h + 1) // 2, (w + 1) // 2


class MultiModalSwin(nn.Module):
    def __init__(self, cfg: RemoteSAMConfig):
        super().__init__()
        sw = cfg.swin
        dims = cfg.stage_dims
        self.num_features = dims
        self.patch_embed = PatchEmbed(sw.patch_size, sw.embed_dim, sw.layer_norm_eps)
        rates = torch.linspace(0, sw.drop_path_rate, sum(sw.depths), device="cpu").tolist()
        self.layers = nn.ModuleList()
        start = 0
        for i, depth in enumerate(sw.depths):
            self.layers.append(
                MultiModalStage(
                    dims[i],
                    depth,
                    sw.num_heads[i],
                    sw.window_size,
                    sw.mlp_ratio,
                    sw.qkv_bias,
                    rates[start : start + depth],
                    sw.layer_norm_eps,
                    cfg.text.hidden_size,
                    cfg.pwam_heads[i],
                    cfg.fusion_drop,
                    downsample=i < len(sw.depths) - 1,
                )
            )
            start += depth
        for i, dim in enumerate(dims):
            self.add_module(f"norm{i}", nn.LayerNorm(dim, eps=sw.layer_norm_eps))
        self.cim = CIM(dims, cfg.cim_grid, cfg.cim_layers)

    def reset_parameters(self) -> None:
        """The official backbone init: trunc-normal(0.02) linear weights, zero biases, unit LayerNorms."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(images)
        h, w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        outs = []
        for i, layer in enumerate(self.layers):
            x_res, x, h_next, w_next = layer(x, h, w, words, word_mask)
            out = getattr(self, f"norm{i}")(x_res)
            outs.append(out.view(-1, h, w, self.num_features[i]).permute(0, 3, 1, 2).contiguous())
            h, w = h_next, w_next
        return self.cim(outs)


class RemoteSAM(nn.Module):
    def __init__(self, cfg: RemoteSAMConfig):
        super().__init__()
        self.config = cfg
        self.backbone = MultiModalSwin(cfg)
        self.backbone.reset_parameters()
        self.classifier = SimpleDecoding(cfg.stage_dims[-1], cfg.num_classes)
        self.text_encoder = BertTextEncoder(cfg.text)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(input_ids, attention_mask)

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        if input_ids.shape != attention_mask.shape or input_ids.shape[0] != images.shape[0]:
            raise ValueError(
                f"input_ids {tuple(input_ids.shape)} / attention_mask {tuple(attention_mask.shape)} must both be "
                f"(B, L) with B = {images.shape[0]} images"
            )
        size = images.shape[-2:]
        words = self.encode_text(input_ids, attention_mask).permute(0, 2, 1)
        word_mask = attention_mask.unsqueeze(-1).to(words.dtype)
        c1, c2, c3, c4 = self.backbone(images, words, word_mask)
        logits = self.classifier(c4, c3, c2, c1)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)


def build_model(cfg: RemoteSAMConfig | None = None) -> RemoteSAM:
    """Factory: the official configuration when ``cfg`` is None."""
    return RemoteSAM(cfg or RemoteSAMConfig())
