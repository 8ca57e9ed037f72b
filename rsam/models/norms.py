"""Normalisation layers that always compute in float32, and the rule for keeping mixed precision honest.

Under ``torch.autocast`` (bf16 on CPU or CUDA) matmuls and convolutions run in bf16, but CPU autocast leaves
LayerNorm / BatchNorm / InstanceNorm / softmax in whatever dtype their input has, so a bf16 activation would be
normalised in bf16. These subclasses cast a low-precision input to float32 first (the statistics, the affine step
and the running-stat updates are float32) and return float32; the next matmul casts back to bf16 under autocast.
A layer whose own parameters are bf16/fp16 (a model converted to low precision, as DeepSpeed's bf16 mode does)
keeps its parent's behaviour.
In float32 (and float64) they are exactly their ``torch.nn`` parents, with the same parameter and buffer names, so
checkpoints and the fp32 outputs are unchanged.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

LOW_PRECISION = (torch.bfloat16, torch.float16)


def fp32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 if it is bf16/fp16, else unchanged (float64 stays float64)."""
    return x.float() if x.dtype in LOW_PRECISION else x


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype active for ``device``'s type, or None (also for devices without autocast, e.g. meta)."""
    kind = device.type
    if kind in ("cpu", "cuda") and torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return None


def autocast_off(device: torch.device):
    """A context that disables autocast for ``device``'s type (a no-op where there is none)."""
    if device.type in ("cpu", "cuda"):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def norm_input(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 for a norm layer with float32 state (or, stateless, under autocast); unchanged for a layer
    that is itself low precision (a model converted to bf16: its parent's rule)."""
    if x.dtype not in LOW_PRECISION:
        return x
    state = next((t for t in (*module.parameters(False), *module.buffers(False)) if t.is_floating_point()), None)
    if state is None:
        return fp32(x) if autocast_dtype(x.device) is not None else x
    return x if state.dtype in LOW_PRECISION else fp32(x)


class LayerNorm(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(norm_input(self, x))


class BatchNorm1d(nn.BatchNorm1d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(norm_input(self, x))


class BatchNorm2d(nn.BatchNorm2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(norm_input(self, x))


class InstanceNorm1d(nn.InstanceNorm1d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(norm_input(self, x))
