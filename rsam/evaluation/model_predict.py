"""A benchmark ``predict_fn`` from a RemoteSAM model (the model half of ``rsam test --benchmark``).

``model_predict_fn(predictor)`` returns ``predict_fn(image_uint8 (H, W, 3), prompts) -> float32 (N, h, w)``: all
prompts of an image run as one batch of forwards in chunks of ``predictor.chunk_size`` (the :class:`Predictor` does
the chunking and the official post-processing; the result equals the one-prompt loop). By default the maps stay at the
model resolution (896 x 896 for the official model), which is what the official evaluation scripts score and what the
evaluators in :mod:`rsam.evaluation.evaluators` expect for exact parity; ``at_model_size=False`` gives maps at the
image size instead (``Predictor.predict``).
"""

from __future__ import annotations

import numpy as np

from rsam.evaluation.evaluators import PredictFn
from rsam.predict import Predictor, postprocess
from rsam.preprocess import normalize, resize_image


def model_predict_fn(predictor: Predictor, *, at_model_size: bool = True) -> PredictFn:
    """Foreground probabilities (softmax channel 1) of every prompt, batched per image."""
    model_size = tuple(predictor.model.config.image_size)

    def predict(image: np.ndarray, prompts) -> np.ndarray:
        prompts = list(prompts)
        if not at_model_size:
            return np.stack([found.prob for found in predictor.predict(image, prompts)])
        tensor = normalize(resize_image(image, model_size))
        prob, _ = postprocess(predictor.logits(tensor, prompts), tuple(tensor.shape[-2:]))
        return prob.numpy()

    return predict
