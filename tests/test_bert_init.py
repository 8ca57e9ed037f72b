"""init.text_encoder: a Hugging Face BERT folder of the bert-base-uncased shape (``model.safetensors`` or the hub's
``pytorch_model.bin``) loads into RemoteSAM's text encoder with outputs equal to ``transformers.BertModel``; a folder
of another width or vocabulary is refused naming both (random weights, built offline)."""

from __future__ import annotations

import re

import pytest
import torch

from rsam.checkpoint import CheckpointError
from rsam.checkpoint.text_encoder import load_text_encoder
from rsam.models import TextConfig, official_config


def hub_style_bin(model) -> dict[str, torch.Tensor]:
    """The layout of bert-base-uncased's ``pytorch_model.bin`` on the hub (a BertForPreTraining pickle): ``bert.``
    prefix, TF-era ``LayerNorm.gamma/beta`` names, the pre-training heads ``cls.*``."""
    out = {}
    for key, value in model.state_dict().items():
        key = re.sub(r"LayerNorm\.weight$", "LayerNorm.gamma", re.sub(r"LayerNorm\.bias$", "LayerNorm.beta", key))
        out["bert." + key] = value.clone()
    out["cls.predictions.bias"] = torch.zeros(model.config.vocab_size)
    out["cls.seq_relationship.weight"] = torch.zeros(2, model.config.hidden_size)
    return out


@pytest.fixture(scope="module")
def bert_base(tmp_path_factory):
    """A random ``transformers.BertModel`` of the bert-base-uncased shape (offline: no hub), saved with
    ``save_pretrained`` (``model.safetensors``) and as the hub's ``pytorch_model.bin``."""
    import transformers

    torch.manual_seed(4)
    config = transformers.BertConfig()  # bert-base-uncased: 12 x 768, 12 heads, vocab 30522
    model = transformers.BertModel(config, add_pooling_layer=True).eval()
    root = tmp_path_factory.mktemp("bert")
    model.save_pretrained(root / "safetensors")
    config.save_pretrained(root / "bin")  # transformers >= 5 writes safetensors only; this is the hub's .bin layout
    torch.save(hub_style_bin(model), root / "bin" / "pytorch_model.bin")
    return model, root


def test_bert_base_folder_loads_with_equal_outputs_in_both_formats(bert_base):
    from rsam.models.bert import BertTextEncoder

    reference, root = bert_base
    assert (root / "safetensors" / "model.safetensors").is_file() and (root / "bin" / "pytorch_model.bin").is_file()
    ids = torch.randint(1, 30522, (2, 20))
    mask = torch.ones(2, 20, dtype=torch.long)
    mask[1, 12:] = 0
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask).last_hidden_state
    for name in ("safetensors", "bin"):
        ours = BertTextEncoder(official_config().text).eval()
        load_text_encoder(ours, root / name)
        with torch.no_grad():
            got = ours(ids, mask)
        valid = mask.bool()  # padded positions are not used downstream (PWAM masks them)
        assert (got[valid] - expected[valid]).abs().max() <= 1e-5, name


def test_bert_folder_of_another_width_or_vocabulary_is_refused(bert_base, tmp_path):
    import transformers

    from rsam.models.bert import BertTextEncoder

    _, root = bert_base
    small = TextConfig(hidden_size=384, num_layers=12, num_heads=12, intermediate_size=3072)
    with pytest.raises(CheckpointError, match="hidden_size 768 vs 384"):
        load_text_encoder(BertTextEncoder(small), root / "safetensors")
    other = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=64)  # fmt: skip
    transformers.BertModel(other).save_pretrained(tmp_path / "tiny")
    target = TextConfig(vocab_size=120, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    with pytest.raises(CheckpointError, match=r"vocab_size 100 vs 120"):
        load_text_encoder(BertTextEncoder(target), tmp_path / "tiny")
