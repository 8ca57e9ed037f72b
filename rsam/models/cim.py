"""RMSIN's cross-scale interaction module (CIM), generalised from the official hard-wired 896² build.

All four stage maps are average-pooled to the stage-4 grid (h4, w4), concatenated, reduced to a quarter of the width,
passed through ``CIMBlock``\\ s and split back per scale, where a ``ScaleAwareGate`` merges them with the originals.
The attention sees the h4·w4 tokens plus those of a stride-2 (k3) and a stride-3 (k5) depthwise conv; its ``proj``
maps that token count back to h4·w4. At 896² that is Linear(1080 -> 784) on a 28x28 grid, as in the official code.

Layout quirks reproduced (they change numbers): ``(attn @ v).transpose(1, 2).reshape(B, -1, N)`` is a reshape, not a
permute, and so is ``v[:, :, :h4*w4].reshape(B, dh, h4, w4)``; ``Linear_BN`` applies BatchNorm1d on (B·N, C).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rsam.models.norms import BatchNorm1d, BatchNorm2d
from rsam.models.recompute import checkpointed, training_recompute


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def attention_tokens(grid: tuple[int, int]) -> int:
    """Tokens seen by the cross-scale attention for a stage-4 grid (1080 for 28x28)."""
    h, w = grid
    return h * w + conv_out(h, 3, 2, 1) * conv_out(w, 3, 2, 1) + conv_out(h, 5, 3, 2) * conv_out(w, 5, 3, 2)


class HardSigmoid(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x + 3) / 6


class LinearBN(nn.Sequential):
    def __init__(self, a: int, b: int):
        super().__init__()
        self.add_module("c", nn.Linear(a, b, bias=False))
        self.add_module("bn", BatchNorm1d(b))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c(x)
        return self.bn(y.flatten(0, 1)).reshape_as(y)


class Residual(nn.Module):
    def __init__(self, m: nn.Module):
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.m(x)


class ScaleAwareGate(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.local_embedding = nn.Conv2d(channels, channels, 1)
        self.bn1 = BatchNorm2d(channels)
        self.global_embedding = nn.Conv2d(channels, channels, 1)
        self.bn2 = BatchNorm2d(channels)
        self.global_act = nn.Conv2d(channels, channels, 1)
        self.bn3 = BatchNorm2d(channels)
        self.act = HardSigmoid()

    def forward(self, x_local: torch.Tensor, x_global: torch.Tensor) -> torch.Tensor:
        size = x_local.shape[-2:]
        local = self.bn1(self.local_embedding(x_local))
        glob = F.interpolate(self.bn2(self.global_embedding(x_global)), size=size, mode="bilinear", align_corners=False)
        gate = F.interpolate(
            self.act(self.bn3(self.global_act(x_global))), size=size, mode="bilinear", align_corners=False
        )
        return local * gate + glob


class Attention(nn.Module):
    def __init__(self, dim: int, grid: tuple[int, int], key_dim: int = 32, num_heads: int = 8, attn_ratio: int = 2):
        super().__init__()
        self.grid = grid
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.scale = key_dim**-0.5
        self.d = attn_ratio * key_dim
        self.dh = self.d * num_heads
        self.qkv = LinearBN(dim, self.dh + 2 * key_dim * num_heads)
        self.parallel_conv = nn.Sequential(nn.Hardswish(), nn.Conv2d(self.dh, self.dh, 3, padding=1, groups=self.dh))
        self.to_out = nn.Linear(self.dh, dim)
        self.proj = nn.Linear(attention_tokens(grid), grid[0] * grid[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        h, w = self.grid
        q, k, v = self.qkv(x).view(b, n, self.num_heads, -1).split([self.key_dim, self.key_dim, self.d], dim=3)
        q, k, v = q.permute(0, 2, 1, 3), k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)
        v_conv = self.parallel_conv(v[:, :, : h * w, :].reshape(b, self.dh, h, w)).flatten(2)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, -1, n)
        out = self.proj(out) + v_conv
        return self.to_out(out.permute(0, 2, 1))


class CrossScaleAttention(nn.Module):
    def __init__(self, dim: int, grid: tuple[int, int]):
        super().__init__()
        self.grid = grid
        self.bn1 = BatchNorm2d(dim)
        self.DWConv1 = nn.Sequential(nn.Conv2d(dim, dim, 3, stride=2, padding=1, groups=dim), BatchNorm2d(dim))
        self.DWConv2 = nn.Sequential(nn.Conv2d(dim, dim, 5, stride=3, padding=2, groups=dim), BatchNorm2d(dim))
        self.attention = Attention(dim, grid)
        self.bn4 = BatchNorm2d(dim)
        self.activate = nn.Hardswish()
        self.conv = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = self.bn1(x)
        b, c = x0.shape[:2]
        tokens = torch.cat([x0.flatten(2), self.DWConv1(x0).flatten(2), self.DWConv2(x0).flatten(2)], dim=2)
        out = self.attention(tokens.permute(0, 2, 1))
        out = out.permute(0, 2, 1).reshape(b, c, *self.grid)
        return self.conv(self.activate(self.bn4(out)))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.bn1 = BatchNorm2d(dim)
        self.conv1 = nn.Conv2d(dim, hidden, 1)
        self.bn2 = BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, padding=1, groups=dim)
        self.relu = nn.ReLU6()
        self.conv3 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.relu(self.conv2(self.bn2(self.conv1(self.bn1(x))))))


class IntraFeedForward(nn.Module):
    """A separate FFN on each scale's quarter-width channel group."""

    def __init__(self, channels: tuple[int, ...], mlp_ratio: int = 2):
        super().__init__()
        self.splits = [c // 4 for c in channels]
        for i, c in enumerate(self.splits, start=1):
            self.add_module(f"ff{i}", Residual(FeedForward(c, mlp_ratio * c)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = x.split(self.splits, dim=1)
        return torch.cat([getattr(self, f"ff{i}")(p) for i, p in enumerate(parts, start=1)], dim=1)


class CIMBlock(nn.Module):
    def __init__(self, dim: int, channels: tuple[int, ...], grid: tuple[int, int], mlp_ratio: int = 2):
        super().__init__()
        self.csa1 = Residual(CrossScaleAttention(dim, grid))
        self.intra_ff = Residual(IntraFeedForward(channels, mlp_ratio))
        self.csa2 = Residual(CrossScaleAttention(dim, grid))
        self.ff = Residual(FeedForward(dim, dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ff(self.csa2(self.intra_ff(self.csa1(x))))


class CIM(nn.Module):
    def __init__(self, channels: tuple[int, ...], grid: tuple[int, int], num_layers: int = 1):
        super().__init__()
        dim = sum(channels)
        hidden = dim // 4
        self.channels = list(channels)
        self.grid = tuple(grid)
        self.down_channel = nn.Conv2d(dim, hidden, 1)
        self.up_channel = nn.Conv2d(hidden, dim, 1)
        self.block = nn.ModuleList([CIMBlock(hidden, channels, self.grid) for _ in range(num_layers)])
        self.bn = BatchNorm2d(hidden)
        self.fusion = nn.ModuleList([ScaleAwareGate(c) for c in channels])

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        grid = tuple(features[-1].shape[-2:])
        if grid != self.grid:
            raise ValueError(
                f"stage-4 grid {grid} differs from the {self.grid} this model was built for; "
                "build the model with an image_size that gives this grid"
            )
        out = torch.cat([F.adaptive_avg_pool2d(f, grid) for f in features], dim=1)
        out = self.down_channel(out)
        # in training, the blocks (on the small stage-4 grid) and the scale-aware gates (1x1 convs, BatchNorm and
        # upsampling at each stage's resolution) are recompute regions: cheap FLOPs, large maps
        recompute = training_recompute(self, out)
        for block in self.block:
            out = checkpointed(block, out) if recompute else block(out)
        out = self.up_channel(self.bn(out))
        parts = zip(self.fusion, features, out.split(self.channels, dim=1))
        return [checkpointed(gate, f, g) if recompute else gate(f, g) for gate, f, g in parts]
