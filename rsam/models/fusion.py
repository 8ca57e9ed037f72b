"""Per-stage language fusion of the RemoteSAM backbone.

* ``PWAM`` — LAVT's pixel-word attention module: visual tokens query the words; padding words get ``+ (1e4·m − 1e4)``
  logits; similarity scaled by ``key_channels ** -0.5`` with key_channels = the full stage width (not per head).
* ``VariousReceptive`` — RMSIN's intra-scale branch: a re-parameterisable conv block on the channel-mean map gives a
  sigmoid spatial weight for the visual residual. (The official code assumes square maps; we use the true h, w.)
* ``tanh_gate`` — Linear(no bias)-ReLU-Linear(no bias)-Tanh, used for ``res_gate`` and ``visual_gate``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rsam.models.norms import BatchNorm2d, InstanceNorm1d

PAD_LOGIT = 1e4


def tanh_gate(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, dim, bias=False), nn.ReLU(), nn.Linear(dim, dim, bias=False), nn.Tanh())


class ImageLanguageAttention(nn.Module):
    """Official ``SpatialImageLanguageAttention`` (key names ``f_key``, ``f_query``, ``f_value``, ``W``)."""

    def __init__(self, v_channels: int, l_channels: int, key_channels: int, value_channels: int, num_heads: int):
        super().__init__()
        self.key_channels = key_channels
        self.value_channels = value_channels
        self.num_heads = num_heads
        self.f_key = nn.Sequential(nn.Conv1d(l_channels, key_channels, 1))
        self.f_query = nn.Sequential(nn.Conv1d(v_channels, key_channels, 1), InstanceNorm1d(key_channels))
        self.f_value = nn.Sequential(nn.Conv1d(l_channels, value_channels, 1))
        self.W = nn.Sequential(nn.Conv1d(value_channels, value_channels, 1), InstanceNorm1d(value_channels))

    def forward(self, x: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
        """x (B, HW, Cv); words (B, Cl, L); word_mask (B, L, 1) -> (B, HW, Cvalue)."""
        b, hw = x.shape[:2]
        heads = self.num_heads
        mask = word_mask.permute(0, 2, 1)  # (B, 1, L)
        query = self.f_query(x.permute(0, 2, 1)).permute(0, 2, 1)
        key = self.f_key(words) * mask
        value = self.f_value(words) * mask
        n_words = value.shape[-1]
        query = query.reshape(b, hw, heads, self.key_channels // heads).permute(0, 2, 1, 3)
        key = key.reshape(b, heads, self.key_channels // heads, n_words)
        value = value.reshape(b, heads, self.value_channels // heads, n_words)
        sim = (self.key_channels**-0.5) * torch.matmul(query, key)
        sim = sim + (PAD_LOGIT * mask.unsqueeze(1) - PAD_LOGIT)
        sim = F.softmax(sim, dim=-1)
        out = torch.matmul(sim, value.permute(0, 1, 3, 2))
        out = out.permute(0, 2, 1, 3).reshape(b, hw, self.value_channels)
        return self.W(out.permute(0, 2, 1)).permute(0, 2, 1)


class PWAM(nn.Module):
    def __init__(self, dim: int, l_channels: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.vis_project = nn.Sequential(nn.Conv1d(dim, dim, 1), nn.GELU(), nn.Dropout(dropout))
        self.image_lang_att = ImageLanguageAttention(dim, l_channels, dim, dim, num_heads)
        self.project_mm = nn.Sequential(nn.Conv1d(dim, dim, 1), nn.GELU(), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
        vis = self.vis_project(x.permute(0, 2, 1))
        lang = self.image_lang_att(x, words, word_mask).permute(0, 2, 1)
        return self.project_mm(vis * lang).permute(0, 2, 1)


def _conv_bn(kernel: int, channels: int = 1) -> nn.Sequential:
    seq = nn.Sequential()
    seq.add_module("conv", nn.Conv2d(channels, channels, kernel, padding=kernel // 2, bias=False))
    seq.add_module("bn", BatchNorm2d(channels))
    return seq


def _conv1x1_bn_conv3x3_bn(channels: int = 1) -> nn.Sequential:
    seq = nn.Sequential()
    seq.add_module("conv1", nn.Conv2d(channels, channels, 1, bias=False))
    seq.add_module("bn1", BatchNorm2d(channels))
    seq.add_module("conv2", nn.Conv2d(channels, channels, 3, padding=1, bias=False))
    seq.add_module("bn2", BatchNorm2d(channels))
    return seq


class RepBlock(nn.Module):
    """Two re-param style blocks: [1x1-BN-3x3-BN] + [1x1-BN] + BN(identity), ReLU between, sigmoid at the end."""

    def __init__(self, channels: int = 1):
        super().__init__()
        self.brb_3x3 = _conv1x1_bn_conv3x3_bn(channels)
        self.brb_1x1 = _conv_bn(1, channels)
        self.brb_identity = BatchNorm2d(channels)
        self.brb_3x3_2 = _conv1x1_bn_conv3x3_bn(channels)
        self.brb_1x1_2 = _conv_bn(1, channels)
        self.brb_identity_2 = BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.brb_1x1(x) + self.brb_3x3(x) + self.brb_identity(x))
        return torch.sigmoid(self.brb_1x1_2(x) + self.brb_3x3_2(x) + self.brb_identity_2(x))


class VariousReceptive(nn.Module):
    def __init__(self):
        super().__init__()
        self.repblock = RepBlock(1)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """x (B, h*w, C) -> x weighted by a spatial map computed from its channel mean."""
        b, n, c = x.shape
        grid = x.view(b, h, w, c).permute(0, 3, 1, 2)
        weight = self.repblock(grid.mean(dim=1, keepdim=True))
        return (grid * weight).reshape(b, c, n).permute(0, 2, 1)
