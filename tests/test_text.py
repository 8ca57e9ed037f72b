"""Tokenization equals the official ``embed_sentences`` on every golden prompt."""

import json

import pytest
import torch

from rsam.text import MAX_TOKENS, Tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer()


def test_matches_official_golden_ids(tokenizer, reference_dir):
    golden = json.loads((reference_dir / "tokenization_golden.json").read_text())
    items = golden["items"]
    assert len(items) == 22
    ids, mask = tokenizer([item["text"] for item in items])
    assert ids.dtype == torch.int64 and mask.dtype == torch.int64
    assert ids.shape == (22, MAX_TOKENS)
    for row, item in enumerate(items):
        assert ids[row].tolist() == item["input_ids"], item["text"]
        assert mask[row].tolist() == item["attention_mask"], item["text"]


def test_overlong_text_loses_sep_and_is_cut_to_20(tokenizer):
    text = " ".join(["vehicle"] * 40)
    ids, mask = tokenizer(text)
    assert ids[0, 0].item() == 101 and 102 not in ids[0].tolist()
    assert mask.sum().item() == MAX_TOKENS


def test_single_string_and_padding(tokenizer):
    ids, mask = tokenizer("ship")
    # [CLS] ship [SEP] then zero padding, mask 1 1 1 0 ...
    assert ids.shape == (1, 20)
    assert ids[0, :3].tolist() == [101, tokenizer.encode_ids("ship")[1], 102]
    assert ids[0, 3:].eq(0).all() and mask[0].tolist() == [1, 1, 1] + [0] * 17


def test_rejects_non_string(tokenizer):
    with pytest.raises(TypeError, match="str"):
        tokenizer([3])
