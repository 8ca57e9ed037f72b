"""Predictor: batched prompts equal the one-by-one loop; outputs at the original size. MiniLM loads from its package."""

import numpy as np
import pytest
import torch

from rsam.checkpoint.text_encoder import load_text_encoder, text_config_from_hf
from rsam.models import RemoteSAMConfig, SwinConfig, TextConfig, build_model, minilm_text_config
from rsam.models.bert import BertTextEncoder
from rsam.predict import Predictor
from rsam.text import Tokenizer, minilm_model_dir


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer()


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(1)
    cfg = RemoteSAMConfig(
        image_size=(64, 64),
        swin=SwinConfig(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4), window_size=4, mlp_ratio=2.0),
        text=minilm_text_config(),
        pwam_heads=(1, 2, 1, 2),
    )
    model = build_model(cfg)
    load_text_encoder(model.text_encoder, minilm_model_dir())
    with torch.no_grad():  # make the decoder's output depend visibly on the text
        model.classifier.conv1_1.weight.mul_(50)
    return model.eval()


def test_minilm_equals_transformers_bert(tokenizer):
    import transformers

    folder = minilm_model_dir()
    cfg = text_config_from_hf(folder / "config.json")
    assert cfg == minilm_text_config()
    ours = BertTextEncoder(cfg)
    load_text_encoder(ours, folder)
    reference = transformers.BertModel.from_pretrained(
        str(folder), local_files_only=True, attn_implementation="eager"
    ).eval()
    ids, mask = tokenizer(["the white car next to the building", "storage tank in the image"])
    with torch.no_grad():
        a = ours.eval()(ids, mask)
        b = reference(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.allclose(a, b, atol=2e-5), (a - b).abs().max()


def test_batched_prompts_equal_one_by_one(small_model, tokenizer):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    texts = ["trees in the image", "the road on the left", "building in the image", "a small white car", "water"]
    batched = Predictor(small_model, tokenizer, chunk_size=2).predict(image, texts)
    single = [Predictor(small_model, tokenizer, chunk_size=1).predict(image, t)[0] for t in texts]
    for b, s in zip(batched, single):
        assert b.prob.shape == (50, 70) and b.mask.shape == (50, 70)
        assert b.prob.dtype == np.float32 and b.mask.dtype == np.uint8
        np.testing.assert_allclose(b.prob, s.prob, atol=1e-5)
        decided = np.abs(s.prob - 0.5) > 1e-4
        assert np.array_equal(b.mask[decided], s.mask[decided])
    # different prompts give different maps (the text reaches the output)
    assert np.abs(batched[0].prob - batched[1].prob).max() > 1e-3


def test_vocab_mismatch_is_an_error(tokenizer):
    cfg = RemoteSAMConfig(
        image_size=(64, 64),
        swin=SwinConfig(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), window_size=4),
        text=TextConfig(
            vocab_size=500, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=32, max_position_embeddings=24
        ),
    )
    with pytest.raises(ValueError, match="vocab"):
        Predictor(build_model(cfg), tokenizer)
    with pytest.raises(ValueError, match="no expressions"):
        Predictor(build_model(cfg), tokenizer, unknown_out_of_vocab=True).predict(np.zeros((8, 8, 3), np.uint8), [])
