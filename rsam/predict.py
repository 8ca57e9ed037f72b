"""Referring-segmentation inference: image + one or many expressions -> probability maps and masks.

Post-processing is the official one (``tasks/code/model.py::referring_seg``): at the model size, mask = argmax over
the two classes and prob = softmax[:, 1]; both are resized to the original image size with ``F.interpolate``'s
default ('nearest'). Many expressions on one image run as batched forwards of at most ``chunk_size`` prompts; the
results equal the one-by-one loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from rsam.models import RemoteSAM
from rsam.preprocess import ImageLike, normalize, resize_image, to_rgb_uint8
from rsam.text import UNK_ID, Tokenizer


@dataclass
class Prediction:
    expression: str
    prob: np.ndarray  # float32 (H, W) at the original size: softmax foreground probability
    mask: np.ndarray  # uint8 (H, W) at the original size: argmax (1 = referred object)


def postprocess(logits: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (B, 2, h, w) -> (prob (B, H, W) float32, mask (B, H, W) uint8) at ``size``, as the official code."""
    mask = logits.argmax(dim=1, keepdim=True).float()
    prob = torch.softmax(logits, dim=1)[:, 1:2].float()
    mask = F.interpolate(mask, size=size).squeeze(1).to(torch.uint8)
    prob = F.interpolate(prob, size=size).squeeze(1)
    return prob, mask


class Predictor:
    def __init__(
        self,
        model: RemoteSAM,
        tokenizer: Tokenizer | None = None,
        device: str | torch.device = "cpu",
        chunk_size: int = 4,
        unknown_out_of_vocab: bool = False,
    ):
        """``unknown_out_of_vocab``: map token ids the text encoder does not have to [UNK] (for golden test models
        with a reduced vocabulary); otherwise a tokenizer larger than the encoder's vocabulary is an error."""
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer or Tokenizer(max_tokens=model.config.max_tokens)
        self.vocab_limit = model.config.text.vocab_size
        if self.tokenizer.vocab_size > self.vocab_limit and not unknown_out_of_vocab:
            raise ValueError(
                f"the tokenizer has {self.tokenizer.vocab_size} ids but the model's text encoder only "
                f"{self.vocab_limit}; use a matching vocab (or unknown_out_of_vocab=True for test models)"
            )
        self.device = torch.device(device)
        self.chunk_size = chunk_size

    @torch.no_grad()
    def logits(self, image: torch.Tensor, expressions: Sequence[str]) -> torch.Tensor:
        """Normalised image (3, H, W) + N expressions -> logits (N, 2, H, W), in chunks of ``chunk_size``."""
        ids, mask = self.tokenizer(list(expressions))
        ids = torch.where(ids < self.vocab_limit, ids, torch.full_like(ids, UNK_ID))
        image = image.to(self.device)
        outs = []
        for start in range(0, len(expressions), self.chunk_size):
            chunk_ids = ids[start : start + self.chunk_size].to(self.device)
            chunk_mask = mask[start : start + self.chunk_size].to(self.device)
            batch = image.unsqueeze(0).expand(chunk_ids.shape[0], -1, -1, -1)
            outs.append(self.model(batch, chunk_ids, chunk_mask).float().cpu())
        return torch.cat(outs)

    def predict(
        self, image: ImageLike, expressions: str | Sequence[str], *, scale: float | None = None
    ) -> list[Prediction]:
        if isinstance(expressions, str):
            expressions = [expressions]
        expressions = list(expressions)
        if not expressions:
            raise ValueError("no expressions given")
        rgb = to_rgb_uint8(image, scale=scale)
        tensor = normalize(resize_image(rgb, self.model.config.image_size))
        probs, masks = postprocess(self.logits(tensor, expressions), rgb.shape[:2])
        return [Prediction(text, p.numpy(), m.numpy()) for text, p, m in zip(expressions, probs, masks)]
