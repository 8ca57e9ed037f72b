"""Referring-segmentation inference: image + one or many expressions -> probability maps and masks.

Post-processing is the official one (``tasks/code/model.py::referring_seg``): at the model size, mask = argmax over
the two classes and prob = softmax[:, 1]; both are resized to the original image size with ``F.interpolate``'s
default ('nearest').

Many expressions on one image (``Predictor.predict(image, [e1, e2, ...])``):

- the image is decoded, resized and normalised once, and tokenization runs once for all expressions;
- the prompt-independent part of the network (patch embedding and the first stage's Swin blocks,
  :meth:`RemoteSAM.image_stem`) runs once per image; the rest runs in batches of prompts;
- the batch size (``chunk_size="auto"``, the default) is chosen by measurement on this machine: batches of 1, 2, 4,
  ... prompts are timed on the first image and the size with the best time per prompt is kept (on a CPU that is
  often 1; on a GPU larger batches win); an integer fixes it;
- only model-size maps are kept per expression; :class:`Prediction` upsamples ``prob``/``mask`` to the original size
  when they are read, so memory does not grow with the number of prompts by full-size copies.

``precision="bf16"`` runs the network under bf16 autocast (matmuls and convolutions in bf16; norms, softmax and the
post-processing in float32; see :mod:`rsam.models.norms`). On a CPU without bf16 instructions it is emulated and
slower than fp32, and the Predictor says so once (:mod:`rsam.hardware`).

Plain images above ``max_pixels`` (100 MP by default) are refused with one line pointing to the tiled GeoTIFF path:
a plain image is decoded whole, and that is not the way to process a large scene.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from rsam.hardware import warn_if_bf16_is_emulated
from rsam.models import RemoteSAM
from rsam.preprocess import ImageLike, normalize, resize_image, to_rgb_uint8
from rsam.text import UNK_ID, Tokenizer

log = logging.getLogger(__name__)

MAX_PLAIN_IMAGE_PIXELS = 100_000_000
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
AUTO = "auto"
AUTO_MAX_CHUNK = 32
AUTO_MIN_GAIN = 0.05  # a larger batch must be this much faster per prompt to be tried further


class ImageTooLarge(ValueError):
    """A plain image too large to decode whole; large scenes go through the tiled GeoTIFF path."""


def _too_large(name: str, width: int | None, height: int | None, limit: int) -> ImageTooLarge:
    size = f"{width}x{height} ({width * height / 1e6:.0f} MP)" if width else "larger than PIL's decompression limit"
    return ImageTooLarge(
        f"{name}: {size} is above the {limit / 1e6:.0f} MP limit for a plain image (it would be decoded whole in "
        "memory); segment a large scene tiled from a GeoTIFF instead: `rsam segment SCENE.tif --tile ...`"
    )


def check_plain_image(image: ImageLike, max_pixels: int = MAX_PLAIN_IMAGE_PIXELS, name: str | None = None) -> None:
    """Refuse (:class:`ImageTooLarge`) an image above ``max_pixels``; a file is checked from its header only,
    before anything is decoded (PIL's ``DecompressionBombError`` becomes the same one-line message)."""
    if isinstance(image, (str, PathLike)):
        path = Path(image)
        try:
            with Image.open(path) as img:
                width, height = img.size
        except Image.DecompressionBombError:
            raise _too_large(name or str(path), None, None, max_pixels) from None
        except (OSError, SyntaxError):
            return  # not an image PIL can open: to_rgb_uint8 names the file and the problem
    elif isinstance(image, Image.Image):
        width, height = image.size
    elif isinstance(image, np.ndarray) and image.ndim >= 2:
        height, width = image.shape[:2]
    else:
        return
    if width * height > max_pixels:
        raise _too_large(
            name or ("image" if not isinstance(image, (str, PathLike)) else str(image)), width, height, max_pixels
        )


def load_plain_image(
    image: ImageLike, *, scale: float | None = None, max_pixels: int = MAX_PLAIN_IMAGE_PIXELS
) -> np.ndarray:
    """:func:`check_plain_image`, then :func:`rsam.preprocess.to_rgb_uint8`."""
    check_plain_image(image, max_pixels)
    return to_rgb_uint8(image, scale=scale)


def nearest_indices(source: int, target: int) -> torch.Tensor:
    """The source index of every target position of ``F.interpolate(mode='nearest')`` along one axis (computed by
    ``F.interpolate`` itself on an index ramp, so it is the same rule bit for bit)."""
    ramp = torch.arange(source, dtype=torch.float32).view(1, 1, source)
    return F.interpolate(ramp, size=target).view(-1).long()


def upsample_nearest(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) -> (H, W) exactly as ``F.interpolate(x[None, None], size)`` (nearest), without a float copy."""
    rows = nearest_indices(values.shape[0], size[0]).numpy()
    cols = nearest_indices(values.shape[1], size[1]).numpy()
    return values[np.ix_(rows, cols)]


def postprocess(logits: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (B, 2, h, w) -> (prob (B, H, W) float32, mask (B, H, W) uint8) at ``size``, as the official code."""
    mask = logits.argmax(dim=1, keepdim=True).float()
    prob = torch.softmax(logits.float(), dim=1)[:, 1:2]
    mask = F.interpolate(mask, size=size).squeeze(1).to(torch.uint8)
    prob = F.interpolate(prob, size=size).squeeze(1)
    return prob, mask


class Prediction:
    """One expression's result. ``prob`` (float32 softmax foreground probability) and ``mask`` (uint8 argmax,
    1 = referred object) are at the original image size, upsampled from the model-size maps (``prob_model``,
    ``mask_model``) each time they are read: keep the array if you need it more than once."""

    def __init__(self, expression: str, prob_model: np.ndarray, mask_model: np.ndarray, size: tuple[int, int]):
        self.expression = expression
        self.prob_model = prob_model
        self.mask_model = mask_model
        self.size = (int(size[0]), int(size[1]))

    @property
    def prob(self) -> np.ndarray:
        return upsample_nearest(self.prob_model, self.size)

    @property
    def mask(self) -> np.ndarray:
        return upsample_nearest(self.mask_model, self.size)

    def __repr__(self) -> str:
        return f"Prediction({self.expression!r}, size={self.size}, model_size={self.prob_model.shape})"


class Predictor:
    def __init__(
        self,
        model: RemoteSAM,
        tokenizer: Tokenizer | None = None,
        device: str | torch.device = "cpu",
        chunk_size: int | str = AUTO,
        unknown_out_of_vocab: bool = False,
        precision: str = "fp32",
        max_pixels: int = MAX_PLAIN_IMAGE_PIXELS,
    ):
        """``chunk_size``: prompts per batched forward, or ``"auto"`` (measured, see the module docstring).
        ``precision``: ``"fp32"`` or ``"bf16"`` (autocast). ``unknown_out_of_vocab``: map token ids the text
        encoder does not have to [UNK] (for golden test models with a reduced vocabulary); otherwise a tokenizer
        larger than the encoder's vocabulary is an error."""
        if chunk_size != AUTO and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size must be an integer >= 1 or 'auto', got {chunk_size!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer or Tokenizer(max_tokens=model.config.max_tokens)
        self.vocab_limit = model.config.text.vocab_size
        if self.tokenizer.vocab_size > self.vocab_limit and not unknown_out_of_vocab:
            raise ValueError(
                f"the tokenizer has {self.tokenizer.vocab_size} ids but the model's text encoder only "
                f"{self.vocab_limit}; use a matching vocab (or unknown_out_of_vocab=True for test models)"
            )
        self.device = torch.device(device)
        if precision != "fp32":
            warn_if_bf16_is_emulated(f"Predictor(precision={precision!r})", self.device.type)
        self.chunk_size = chunk_size
        self.precision = precision
        self.max_pixels = max_pixels
        self._tuned: int | None = None

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        # no cache of bf16 weight copies: in inference each weight is cast once per forward either way, and the cache
        # held a second copy of the model (0.48 GB for the official configuration) for as long as the context lasted
        return torch.autocast(self.device.type, dtype=PRECISIONS[self.precision], cache_enabled=False)

    def _tokens(self, expressions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        for index, text in enumerate(expressions):
            if not isinstance(text, str):
                raise TypeError(f"expression {index} must be a str, got {type(text).__name__}: {text!r}")
            if not text.strip():
                raise ValueError(f"expression {index} is empty: give the object to segment as text")
        ids, mask = self.tokenizer(list(expressions))
        return torch.where(ids < self.vocab_limit, ids, torch.full_like(ids, UNK_ID)), mask

    def _chunks(self, count: int):
        """Yield (start, size, timed) batches over ``count`` prompts; ``timed`` batches feed the auto choice."""
        if self.chunk_size != AUTO:
            for start in range(0, count, self.chunk_size):
                yield start, min(self.chunk_size, count - start), False
            return
        start = 0
        if self._tuned is None and count > 1:
            size = 1
            while start + size <= count and size <= AUTO_MAX_CHUNK:
                yield start, size, True
                start += size
                if self._tuned != size:  # the last batch did not improve enough: stop growing
                    break
                size *= 2
        size = self._tuned or 1
        while start < count:
            yield start, min(size, count - start), False
            start += size

    def _record(self, size: int, seconds: float) -> None:
        per_prompt = seconds / size
        best = getattr(self, "_best_per_prompt", None)
        if best is None or per_prompt < best * (1 - AUTO_MIN_GAIN):
            self._best_per_prompt, self._tuned = per_prompt, size
            log.debug("auto chunk size: %d prompts per batch (%.3f s per prompt)", size, per_prompt)

    def maps(self, image: torch.Tensor, expressions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Normalised image (3, H, W) at the model size + N expressions -> (prob (N, H, W) float32,
        mask (N, H, W) uint8) at the model size (the official post-processing before the final resize)."""
        return self._maps(image, *self._tokens(expressions))

    @torch.no_grad()
    def _maps(self, image: torch.Tensor, ids: torch.Tensor, attention: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        image = image.to(self.device)
        size = tuple(image.shape[-2:])
        probs = np.empty((len(ids), *size), dtype=np.float32)
        masks = np.empty((len(ids), *size), dtype=np.uint8)
        with self._autocast():
            stem = self.model.image_stem(image.unsqueeze(0))
        for start, count, timed in self._chunks(len(ids)):
            began = time.perf_counter()
            chunk = slice(start, start + count)
            with self._autocast():
                logits = self.model.forward_stem(
                    stem, ids[chunk].to(self.device), attention[chunk].to(self.device), size
                )
            prob, mask = postprocess(logits.float(), size)
            probs[chunk], masks[chunk] = prob.cpu().numpy(), mask.cpu().numpy()
            if timed:
                self._record(count, time.perf_counter() - began)
        return probs, masks

    def logits(self, image: torch.Tensor, expressions: Sequence[str]) -> torch.Tensor:
        """Normalised image (3, H, W) + N expressions -> float32 logits (N, 2, H, W) (one stem, batched prompts)."""
        ids, attention = self._tokens(expressions)
        image = image.to(self.device)
        outs = []
        with torch.no_grad(), self._autocast():
            stem = self.model.image_stem(image.unsqueeze(0))
            for start, count, _ in self._chunks(len(expressions)):
                chunk = slice(start, start + count)
                out = self.model.forward_stem(
                    stem, ids[chunk].to(self.device), attention[chunk].to(self.device), tuple(image.shape[-2:])
                )
                outs.append(out.float().cpu())
        return torch.cat(outs)

    def predict(
        self, image: ImageLike, expressions: str | Sequence[str], *, scale: float | None = None
    ) -> list[Prediction]:
        if isinstance(expressions, str):
            expressions = [expressions]
        expressions = list(expressions)
        if not expressions:
            raise ValueError("no expressions given")
        ids, attention = self._tokens(expressions)  # bad text is refused before anything is decoded
        rgb = load_plain_image(image, scale=scale, max_pixels=self.max_pixels)
        original = rgb.shape[:2]
        tensor = normalize(resize_image(rgb, self.model.config.image_size))
        del rgb
        probs, masks = self._maps(tensor, ids, attention)
        return [Prediction(text, p, m, original) for text, p, m in zip(expressions, probs, masks)]
