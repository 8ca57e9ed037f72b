"""Multi-label and scene (multi-class) classification from pooled class probability maps.

Official rules (``RemoteSAM.multi_label_cls`` / ``multi_class_cls``, spec §3.6-3.7):

* multi-label: ``score = f * GMP + (1 - f) * GAP`` with ``f = MLC_balance_factor = 0.5``; a class is present iff
  ``score > 0.5``. ``f`` weights the **max** in the code; the paper's Eq. 3 puts its lambda on the mean
  (``lambda = 1 - f``) — identical at 0.5.
* scene: ``score = 1.0 * GMP + 0 * GAP`` (``MCC_balance_factor = 1``); the prediction is the argmax (ties go to the
  first class). The wrapper's ``None`` for a best score < 0.5 is not used by the eval script (MCC.py scores the
  argmax), so it is not applied here either.

GMP/GAP are taken on the maps as given; the official code pools at the model resolution (896 x 896), before any
resize, so pass model-size maps for exact parity.
"""

from __future__ import annotations

import numpy as np

from rsam.tasks.maps import pooled_scores

MLC_MAX_WEIGHT = 0.5
MCC_MAX_WEIGHT = 1.0
MLC_THRESHOLD = 0.5


def balanced_scores(probs, max_weight: float) -> np.ndarray:
    """``max_weight * GMP + (1 - max_weight) * GAP`` per map, float32 as in the official wrapper."""
    if not 0.0 <= max_weight <= 1.0:
        raise ValueError(f"max_weight must be in [0, 1], got {max_weight}")
    gmp, gap = pooled_scores(probs)
    return (np.float32(max_weight) * gmp + np.float32(1.0 - max_weight) * gap).astype(np.float32)


def multi_label_scores(probs, max_weight: float = MLC_MAX_WEIGHT) -> np.ndarray:
    """Per-class multi-label scores (official weighting: ``max_weight`` on the max)."""
    return balanced_scores(probs, max_weight)


def multi_label_predict(probs, max_weight: float = MLC_MAX_WEIGHT, threshold: float = MLC_THRESHOLD) -> np.ndarray:
    """Boolean presence per class: ``score > threshold`` (strict, as ``if score > 0.5``)."""
    return multi_label_scores(probs, max_weight) > threshold


def scene_scores(probs, max_weight: float = MCC_MAX_WEIGHT) -> np.ndarray:
    """Per-class scene scores (official: pure max pooling)."""
    return balanced_scores(probs, max_weight)


def scene_predict(probs, max_weight: float = MCC_MAX_WEIGHT) -> int:
    """Index of the predicted scene class: argmax of the scores, first class on ties."""
    return int(np.argmax(scene_scores(probs, max_weight)))
