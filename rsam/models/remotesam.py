"""RemoteSAM = RMSIN (Liu et al., CVPR 2024) trained on RemoteSAM-270K (Yao et al., ACM MM 2025).

``RemoteSAM(images, input_ids, attention_mask) -> logits (B, 2, H, W)``: a BERT text encoder, a Swin backbone with
per-stage language fusion (PWAM), an intra-scale branch and tanh gates, the cross-scale interaction module, and the
adaptive-rotated-conv decoder. ``state_dict()`` uses the official key names (``backbone.*``, ``classifier.*``,
``text_encoder.*``), so the official checkpoint loads with strict key matching.

Each stage sends its *PWAM output* (normalised by ``norm{i}``) to the CIM/decoder, while the trunk continues as
``x + res_gate(x_res)·x_res + visual_gate(v_res)·v_res`` through PatchMerging, as in LAVT/RMSIN.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from rsam.models.bert import BertTextEncoder
from rsam.models.cim import CIM
from rsam.models.config import RemoteSAMConfig
from rsam.models.decoder import SimpleDecoding
from rsam.models.fusion import PWAM, VariousReceptive, tanh_gate
from rsam.models.norms import LayerNorm
from rsam.models.recompute import checkpointed, training_recompute
from rsam.models.swin import PatchEmbed, PatchMerging, SwinBlock, shifted_window_mask


class ImageStem(NamedTuple):
    """Tokens after the first stage's Swin blocks, (B, h*w, C), and their grid."""

    tokens: torch.Tensor
    h: int
    w: int


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

    def run_blocks(self, x: torch.Tensor, h: int, w: int, checkpoint_each: bool = False) -> torch.Tensor:
        """The Swin blocks (text-independent); ``checkpoint_each``: each block is an activation-checkpointing
        region (only its input is kept)."""
        hp = -(-h // self.window) * self.window
        wp = -(-w // self.window) * self.window
        mask = shifted_window_mask(hp, wp, self.window, self.shift, device=x.device, dtype=x.dtype)
        for block in self.blocks:
            x = checkpointed(block, x, h, w, mask) if checkpoint_each else block(x, h, w, mask)
        return x

    def fuse(self, x: torch.Tensor, h: int, w: int, words: torch.Tensor, word_mask: torch.Tensor):
        """PWAM + intra-scale branch + gates + PatchMerging on the blocks' output ``x`` (which may be a batch-1
        tensor expanded over the prompts) -> (PWAM output (B, h*w, C), trunk for the next stage, its h, its w).

        In training the fusion and gates are a recompute region (:mod:`rsam.models.recompute`): their 1x1 convs and
        linears are cheap, their full-resolution activations are not (≈ 0.7 GB at 896², batch 1)."""
        if training_recompute(self, x):
            x_res, x = checkpointed(self, x, h, w, words, word_mask, call=self._fuse_trunk)
        else:
            x_res, x = self._fuse_trunk(x, h, w, words, word_mask)
        if self.downsample is None:
            return x_res, x, h, w
        return x_res, self.downsample(x, h, w), (h + 1) // 2, (w + 1) // 2

    def _fuse_trunk(self, x: torch.Tensor, h: int, w: int, words: torch.Tensor, word_mask: torch.Tensor):
        v_res = self.visual_residual(x, h, w)
        x_res = self.fusion(x, words, word_mask)
        return x_res, x + self.res_gate(x_res) * x_res + self.visual_gate(v_res) * v_res

    def forward(self, x: torch.Tensor, h: int, w: int, words: torch.Tensor, word_mask: torch.Tensor):
        """-> (PWAM output (B, h*w, C), trunk for the next stage, its h, its w)."""
        return self.fuse(self.run_blocks(x, h, w), h, w, words, word_mask)


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
            self.add_module(f"norm{i}", LayerNorm(dim, eps=sw.layer_norm_eps))
        self.cim = CIM(dims, cfg.cim_grid, cfg.cim_layers)
        self.activation_checkpointing = False

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

    def stem(self, images: torch.Tensor) -> ImageStem:
        """The text-independent start: patch embedding and the first stage's Swin blocks."""
        x = self.patch_embed(images)
        h, w = x.shape[-2:]
        return ImageStem(self.layers[0].run_blocks(x.flatten(2).transpose(1, 2), h, w), h, w)

    def _stage_output(self, i: int, x_res: torch.Tensor, h: int, w: int) -> torch.Tensor:
        out = getattr(self, f"norm{i}")(x_res)
        return out.view(-1, h, w, self.num_features[i]).permute(0, 3, 1, 2).contiguous()

    def forward_stem(self, stem: ImageStem, words: torch.Tensor, word_mask: torch.Tensor) -> list[torch.Tensor]:
        """The rest of the backbone from a :meth:`stem`; a batch-1 stem is broadcast over the ``words`` batch."""
        x, h, w = stem
        if x.shape[0] != words.shape[0]:
            x = x.expand(words.shape[0], -1, -1)
        x_res, x, h_next, w_next = self.layers[0].fuse(x, h, w, words, word_mask)
        outs = [self._stage_output(0, x_res, h, w)]
        h, w = h_next, w_next
        for i, layer in enumerate(self.layers[1:], start=1):
            x_res, x, h_next, w_next = layer(x, h, w, words, word_mask)
            outs.append(self._stage_output(i, x_res, h, w))
            h, w = h_next, w_next
        return self.cim(outs)

    def forward(self, images: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor) -> list[torch.Tensor]:
        if not self.activation_checkpointing or not (self.training and torch.is_grad_enabled()):
            return self.forward_stem(self.stem(images), words, word_mask)
        x = self.patch_embed(images)
        h, w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        outs = []
        for i, layer in enumerate(self.layers):  # per Swin block; the fusion is a recompute region already
            x_res, x, h_next, w_next = layer.fuse(
                layer.run_blocks(x, h, w, checkpoint_each=True), h, w, words, word_mask
            )
            outs.append(self._stage_output(i, x_res, h, w))
            h, w = h_next, w_next
        return checkpointed(self.cim, outs)


class RemoteSAM(nn.Module):
    """``activation_checkpointing``: in training, recompute each Swin block, the CIM and each decoder level in the
    backward pass instead of keeping their activations (same gradients, less memory, more time). A runtime switch,
    not part of the architecture (:class:`RemoteSAMConfig`)."""

    def __init__(self, cfg: RemoteSAMConfig, *, activation_checkpointing: bool = False):
        super().__init__()
        self.config = cfg
        self.backbone = MultiModalSwin(cfg)
        self.backbone.reset_parameters()
        self.classifier = SimpleDecoding(cfg.stage_dims[-1], cfg.num_classes)
        self.text_encoder = BertTextEncoder(cfg.text)
        self.activation_checkpointing = activation_checkpointing

    @property
    def activation_checkpointing(self) -> bool:
        return self.backbone.activation_checkpointing

    @activation_checkpointing.setter
    def activation_checkpointing(self, value: bool) -> None:
        self.backbone.activation_checkpointing = bool(value)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(input_ids, attention_mask)

    def _words(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        words = self.encode_text(input_ids, attention_mask).permute(0, 2, 1)
        return words, attention_mask.unsqueeze(-1).to(words.dtype)

    def _decode(self, features: list[torch.Tensor], size) -> torch.Tensor:
        c1, c2, c3, c4 = features
        checkpoint_levels = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        logits = self.classifier(c4, c3, c2, c1, checkpoint_levels=checkpoint_levels)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)

    def image_stem(self, images: torch.Tensor) -> ImageStem:
        """The prompt-independent part of a forward (patch embedding, the first stage's Swin blocks): compute it
        once per image and pass it to :meth:`forward_stem` for any number of prompts."""
        _check_images(images)
        return self.backbone.stem(images)

    def forward_stem(
        self, stem: ImageStem, input_ids: torch.Tensor, attention_mask: torch.Tensor, size: tuple[int, int]
    ) -> torch.Tensor:
        """Logits (B, 2, *size) for B prompts from an :meth:`image_stem` of one image (or of B images)."""
        _check_text(input_ids, attention_mask, None)
        words, word_mask = self._words(input_ids, attention_mask)
        return self._decode(self.backbone.forward_stem(stem, words, word_mask), size)

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        _check_images(images)
        _check_text(input_ids, attention_mask, images.shape[0])
        words, word_mask = self._words(input_ids, attention_mask)
        return self._decode(self.backbone(images, words, word_mask), images.shape[-2:])


def _check_images(images: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")


def _check_text(input_ids: torch.Tensor, attention_mask: torch.Tensor, batch: int | None) -> None:
    if input_ids.ndim != 2 or input_ids.shape != attention_mask.shape or batch not in (None, input_ids.shape[0]):
        expected = f" with B = {batch} images" if batch is not None else ""
        raise ValueError(
            f"input_ids {tuple(input_ids.shape)} / attention_mask {tuple(attention_mask.shape)} must both be "
            f"(B, L){expected}"
        )


def build_model(cfg: RemoteSAMConfig | None = None, *, activation_checkpointing: bool = False) -> RemoteSAM:
    """Factory: the official configuration when ``cfg`` is None."""
    return RemoteSAM(cfg or RemoteSAMConfig(), activation_checkpointing=activation_checkpointing)
