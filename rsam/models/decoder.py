"""RMSIN's top-down decoder with adaptive rotated convolutions (ARC, Pu et al., ICCV 2023).

``SimpleDecoding``: three steps (c4↑ ⊕ c3, ↑ ⊕ c2, ↑ ⊕ c1), each concat -> 3x3 conv -> BN -> ReLU -> ARC 3x3 -> BN ->
ReLU; upsampling is bilinear with ``align_corners=True``; a final 1x1 conv gives 2-class logits at stage-1 size.

An ARC layer predicts per sample a gate α = sigmoid(fc) and an angle θ = softsign(fc) · 40° from
depthwise conv -> LayerNorm -> ReLU -> global average pool, rotates its 3x3 kernel by θ with a fixed 9x9 bilinear
interpolation matrix (a different matrix for θ ≥ 0 and θ < 0), scales it by α and convolves each sample with its own
kernel. Module names keep the official misspelling ``rounting_func`` so checkpoints load unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rsam.models.norms import BatchNorm2d, LayerNorm
from rsam.models.recompute import checkpointed, training_recompute

ROTATION_RANGE_DEG = 40.0

# 9x9 interpolation matrices that rotate a flattened 3x3 kernel (row-major taps 0..8) by θ.
# Each entry names a function of x = cos θ, y = sin θ (a = x - y, b = x·y, c = x + y); "0"/"1" are constants.
_POSITIVE = (
    ("a", "1-a", "0", "0", "0", "0", "0", "0", "0"),
    ("0", "x-b", "b", "0", "1-c+b", "y-b", "0", "0", "0"),
    ("0", "0", "a", "0", "0", "1-a", "0", "0", "0"),
    ("b", "y-b", "0", "x-b", "1-c+b", "0", "0", "0", "0"),
    ("0", "0", "0", "0", "1", "0", "0", "0", "0"),
    ("0", "0", "0", "0", "1-c+b", "x-b", "0", "y-b", "b"),
    ("0", "0", "0", "1-a", "0", "0", "a", "0", "0"),
    ("0", "0", "0", "y-b", "1-c+b", "0", "b", "x-b", "0"),
    ("0", "0", "0", "0", "0", "0", "0", "1-a", "a"),
)
_NEGATIVE = (
    ("c", "0", "0", "1-c", "0", "0", "0", "0", "0"),
    ("-b", "x+b", "0", "b-y", "1-a-b", "0", "0", "0", "0"),
    ("0", "1-c", "c", "0", "0", "0", "0", "0", "0"),
    ("0", "0", "0", "x+b", "1-a-b", "0", "-b", "b-y", "0"),
    ("0", "0", "0", "0", "1", "0", "0", "0", "0"),
    ("0", "b-y", "-b", "0", "1-a-b", "x+b", "0", "0", "0"),
    ("0", "0", "0", "0", "0", "0", "c", "1-c", "0"),
    ("0", "0", "0", "0", "1-a-b", "b-y", "0", "x+b", "-b"),
    ("0", "0", "0", "0", "0", "1-c", "0", "0", "c"),
)


def _terms(theta: torch.Tensor) -> dict[str, torch.Tensor]:
    x, y = torch.cos(theta), torch.sin(theta)
    a, b, c = x - y, x * y, x + y
    zero, one = torch.zeros_like(x), torch.ones_like(x)
    return {
        "0": zero,
        "1": one,
        "a": a,
        "1-a": 1 - a,
        "b": b,
        "-b": -b,
        "c": c,
        "1-c": 1 - c,
        "x-b": x - b,
        "y-b": y - b,
        "1-c+b": 1 - c + b,
        "x+b": x + b,
        "b-y": b - y,
        "1-a-b": 1 - a - b,
    }


def _build(table, terms) -> torch.Tensor:
    return torch.stack([torch.stack([terms[name] for name in row], dim=-1) for row in table], dim=-2)


def rotation_matrix(theta: torch.Tensor) -> torch.Tensor:
    """θ of any shape -> (*shape, 9, 9) kernel-rotation matrices (rows: output taps, columns: input taps)."""
    terms = _terms(theta)
    positive = (theta >= 0)[..., None, None]
    return torch.where(positive, _build(_POSITIVE, terms), _build(_NEGATIVE, terms))


def rotate_kernels(weight: torch.Tensor, alpha: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """weight (n, Cout, Cin, 3, 3), alpha/theta (B, n) -> per-sample kernels (B·Cout, Cin, 3, 3).

    kernel_b = Σ_k α_bk · R(θ_bk) · weight_k, applied on the flattened 3x3 taps.
    """
    n, cout, cin, kh, kw = weight.shape
    if (kh, kw) != (3, 3):
        raise ValueError(f"adaptive rotated conv supports 3x3 kernels only, got {kh}x{kw}")
    batch = theta.shape[0]
    rot = rotation_matrix(theta) * alpha[..., None, None]  # (B, n, 9, 9)
    rot = rot.permute(0, 2, 1, 3).reshape(batch * 9, n * 9)
    flat = weight.permute(0, 3, 4, 1, 2).reshape(n * 9, cout * cin)
    out = torch.mm(rot, flat).view(batch, 3, 3, cout, cin)
    return out.permute(0, 3, 4, 1, 2).reshape(batch * cout, cin, 3, 3)


class LayerNormProxy(nn.Module):
    """LayerNorm over channels of a (B, C, H, W) map."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class RoutingFunction(nn.Module):
    def __init__(
        self,
        channels: int,
        kernel_number: int = 1,
        dropout: float = 0.2,
        rotation_range_deg: float = ROTATION_RANGE_DEG,
    ):
        super().__init__()
        self.dwc = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.norm = LayerNormProxy(channels)
        self.dropout1 = nn.Dropout(dropout)
        self.fc_alpha = nn.Linear(channels, kernel_number, bias=True)
        self.dropout2 = nn.Dropout(dropout)
        self.fc_theta = nn.Linear(channels, kernel_number, bias=False)
        self.proportion = rotation_range_deg / 180.0 * math.pi
        for weight in (self.dwc.weight, self.fc_alpha.weight, self.fc_theta.weight):
            nn.init.trunc_normal_(weight, std=0.02)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (alpha, theta), each (B, kernel_number); theta in radians."""
        # a recompute region in training: the depthwise conv, norm and ReLU maps (3 x C x H x W) only feed a mean
        pooled = checkpointed(self, x, call=self._pooled) if training_recompute(self, x) else self._pooled(x)
        alpha = torch.sigmoid(self.fc_alpha(self.dropout1(pooled)))
        theta = F.softsign(self.fc_theta(self.dropout2(pooled))) * self.proportion
        return alpha, theta

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.dwc(x))).mean(dim=(2, 3))


class AdaptiveRotatedConv2d(nn.Module):
    def __init__(self, channels_in: int, channels_out: int, kernel_number: int = 1):
        super().__init__()
        self.channels_out = channels_out
        self.weight = nn.Parameter(torch.empty(kernel_number, channels_out, channels_in, 3, 3))
        self.rounting_func = RoutingFunction(channels_in, kernel_number)
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha, theta = self.rounting_func(x)
        kernels = rotate_kernels(self.weight, alpha, theta)
        batch, cin, h, w = x.shape
        if batch == 1:
            return F.conv2d(x, kernels, padding=1)
        out = F.conv2d(x.reshape(1, batch * cin, h, w), kernels, padding=1, groups=batch)
        return out.reshape(batch, self.channels_out, h, w)


def _upsample_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    if x.shape[-2:] == ref.shape[-2:]:
        return x
    # Official: scale_factor=2 when smaller; with align_corners=True that equals resizing to the skip's size.
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=True)


class SimpleDecoding(nn.Module):
    def __init__(self, c4_dims: int, num_classes: int = 2, factor: int = 2):
        super().__init__()
        hidden = c4_dims // factor
        c3, c2, c1 = c4_dims // factor, c4_dims // factor**2, c4_dims // factor**3
        for level, skip_in in ((4, c4_dims + c3), (3, hidden + c2), (2, hidden + c1)):
            self.add_module(f"conv1_{level}", nn.Conv2d(skip_in, hidden, 3, padding=1, bias=False))
            self.add_module(f"conv2_{level}", AdaptiveRotatedConv2d(hidden, hidden))
            self.add_module(f"bn1_{level}", BatchNorm2d(hidden))
            self.add_module(f"bn2_{level}", BatchNorm2d(hidden))
        self.conv1_1 = nn.Conv2d(hidden, num_classes, 1)

    def _conv1(self, level: int, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return getattr(self, f"conv1_{level}")(torch.cat([_upsample_to(x, skip), skip], dim=1))

    def _step(self, level: int, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if training_recompute(self, x, skip):
            # the upsampled, concatenated conv input (the widest map at each level) is rebuilt in backward from
            # the small map and the skip; the recomputation stops before the conv itself (rsam.models.recompute)
            conv = getattr(self, f"conv1_{level}")
            x = checkpointed(conv, x, skip, call=lambda a, b: self._conv1(level, a, b))
        else:
            x = self._conv1(level, x, skip)
        x = F.relu(getattr(self, f"bn1_{level}")(x))
        return F.relu(getattr(self, f"bn2_{level}")(getattr(self, f"conv2_{level}")(x)))

    def forward(
        self, c4: torch.Tensor, c3: torch.Tensor, c2: torch.Tensor, c1: torch.Tensor, checkpoint_levels: bool = False
    ) -> torch.Tensor:
        """``checkpoint_levels``: each level is an activation-checkpointing region (model.activation_checkpointing)."""
        x = c4
        for level, skip in ((4, c3), (3, c2), (2, c1)):
            if checkpoint_levels:
                x = checkpointed(self, x, skip, call=lambda a, b, level=level: self._step(level, a, b))
            else:
                x = self._step(level, x, skip)
        return self.conv1_1(x)
