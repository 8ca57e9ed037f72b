"""Recomputation in the backward pass: full activation checkpointing and the cheap selective kind.

:func:`checkpointed` runs a module (or one of its methods) under PyTorch's non-reentrant activation checkpointing
(``torch.utils.checkpoint``): the region keeps only its inputs, and its saved tensors are recomputed when the
backward needs them. Recomputation stops as soon as they all exist again (PyTorch's early stop), so a region that
ends with a convolution or a matmul recomputes what feeds it, never the expensive op itself. Two uses:

- ``model.activation_checkpointing`` (off by default): whole Swin stages, the CIM and the decoder.
- :func:`training_recompute` regions, always on in training: parts whose activations are large and whose FLOPs
  are small (the per-stage language fusion and gates, the CIM blocks and scale-aware gates, the decoder's
  rotated-conv routing, the bilinear upsampling and concatenation in front of each decoder convolution), and the
  Swin MLP branch (:func:`rsam.models.swin.norm_mlp`, a custom function of the same kind).

Gradients are those of the plain forward (the RNG state is restored, so dropout draws the same masks), and
BatchNorm running statistics are restored after a recomputation, so they are updated once per step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint


def checkpointed(module: nn.Module, *args, call: Callable | None = None):
    """``(call or module)(*args)`` under non-reentrant activation checkpointing; ``module`` owns the BatchNorms
    whose running statistics are restored after the recomputation."""
    run_once = call or module
    norms = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.training and m.track_running_stats]
    calls = 0

    def run(*inputs):
        nonlocal calls
        calls += 1
        if calls == 1 or not norms:
            return run_once(*inputs)
        saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms]
        try:  # the recomputation may stop early (by an exception) once it has what the backward needs
            return run_once(*inputs)
        finally:
            with torch.no_grad():
                for m, (mean, var, count) in zip(norms, saved):
                    m.running_mean.copy_(mean)
                    m.running_var.copy_(var)
                    m.num_batches_tracked.copy_(count)

    return checkpoint(run, *args, use_reentrant=False, preserve_rng_state=True)


def training_recompute(module: nn.Module, *args: torch.Tensor) -> bool:
    """True where a selective recompute region applies: ``module`` in training mode, autograd recording, and a
    floating-point input that needs a gradient."""
    return (
        module.training
        and torch.is_grad_enabled()
        and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args)
    )
