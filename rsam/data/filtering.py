"""The image-text filter of the data engine: pluggable similarity scorers that drop weak triplets.

A scorer is any callable ``scorer(region: np.ndarray, text: str) -> float`` where ``region`` is the uint8 RGB crop
around the triplet's mask (its bounding box plus :data:`REGION_PAD` on each side). The paper filters with SigLIP2
similarity; no such weights ship with the allowed registries, so the project ships no model scorer: plug one in
with ``--scorer package.module:name`` (a callable, or a class instantiated without arguments) and
``--min-score``. Triplets scoring below the threshold are dropped and counted (``low_score``); one-to-zero triplets
(empty masks) are never scored.
"""

from __future__ import annotations

import importlib
import inspect as _inspect
from collections.abc import Callable

import numpy as np

Scorer = Callable[[np.ndarray, str], float]
REGION_PAD = 0.1


def load_scorer(spec: str) -> Scorer:
    """Resolve ``"package.module:name"`` to a scorer callable (classes are instantiated without arguments)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--scorer must look like 'package.module:name', got {spec!r}")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot load scorer {spec!r}: {err}") from err
    if _inspect.isclass(target):
        target = target()
    if not callable(target):
        raise ValueError(f"scorer {spec!r} is not callable")
    return target


def mask_region(rgb: np.ndarray, mask: np.ndarray, pad: float = REGION_PAD) -> np.ndarray:
    """The crop of ``rgb`` around ``mask``'s bounding box, padded by ``pad`` of the box size on each side."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return rgb
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    dx, dy = int(round((x1 - x0) * pad)), int(round((y1 - y0) * pad))
    height, width = mask.shape
    return rgb[max(0, y0 - dy) : min(height, y1 + dy), max(0, x0 - dx) : min(width, x1 + dx)]
