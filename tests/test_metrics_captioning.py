"""Caption metrics: the original CIDEr by hand, CIDEr-D / BLEU through pycocoevalcap checked by hand, the Python
tokenizer against the Java PTB tokenizer, METEOR plumbing."""

import math

import pytest

from rsam.metrics import CaptionMetric, caption_scores, cider
from rsam.metrics.captioning import java_available, simple_ptb_tokenize, tokenize

needs_java = pytest.mark.skipif(not java_available(), reason="java is not installed")

REFS = {1: ["a b"], 2: ["c d"]}
HYPS = {1: "a b", 2: "c"}
# idf of every n-gram = log(2) - log(1); image 1: cosine 1 for n=1,2, 0 for n=3,4 -> 10 * 2/4 = 5
# image 2: n=1 cosine (log2^2) / (log2 * sqrt(2) log2) = 1/sqrt(2) -> 10 * (1/sqrt 2) / 4
IMAGE2_CIDER = 10 * (1 / math.sqrt(2)) / 4
# CIDEr-D adds the length penalty exp(-delta^2 / 72) (pycocoevalcap counts 'length' on bigrams: delta = 0 - 1)
IMAGE2_CIDER_D = IMAGE2_CIDER * math.exp(-1 / 72)


def test_original_cider_hand_computed():
    score, per_image = cider(REFS, HYPS)
    assert per_image[1] == pytest.approx(5.0)
    assert per_image[2] == pytest.approx(IMAGE2_CIDER)
    assert score == pytest.approx((5.0 + IMAGE2_CIDER) / 2)


def test_original_cider_differs_from_cider_d_by_clipping():
    # hypothesis repeats a word: CIDEr-D clips the tf to the reference's, the original CIDEr does not
    refs, hyps = {1: ["a b c"], 2: ["x y z"]}, {1: "a a b c", 2: "x y z"}
    result = caption_scores(refs, hyps, use_java=False)
    assert result["CIDEr"] != pytest.approx(result["CIDEr-D"])


def test_caption_scores_against_hand_values():
    result = caption_scores(REFS, HYPS, use_java=False)
    assert result["CIDEr"] == pytest.approx((5.0 + IMAGE2_CIDER) / 2)
    assert result["CIDEr-D"] == pytest.approx((5.0 + IMAGE2_CIDER_D) / 2)
    # BLEU-1 over the corpus: 3 of 3 hypothesis words match; brevity penalty exp(1 - 4/3)
    assert result["BLEU-1"] == pytest.approx(math.exp(1 - 4 / 3), rel=1e-6)
    assert result["tokenizer"] == "ptb-python" and result["images"] == 2


def test_caption_scores_reject_missing_and_unknown_images():
    with pytest.raises(ValueError, match="1 images have no caption"):
        caption_scores(REFS, {1: "a b"}, use_java=False)
    with pytest.raises(ValueError, match="unknown images"):
        caption_scores(REFS, {1: "a", 2: "b", 3: "c"}, use_java=False)
    metric = CaptionMetric()
    metric.update([1, 1], ["a", "b"], [["a"], ["a"]])
    with pytest.raises(ValueError, match="twice"):
        metric.compute()


SENTENCES = [
    "There are 2 airplanes, a plane's wing (left) and soccer-ball-fields.",
    'Many buildings and  "green" trees aren\'t here.',
    "It contains many overpasss. 3.5 m wide, e.g. U.S. roads!",
    "The upper left region contains storagetanks, ship.",
    "In the lower right, airplanes are present.",
    "Lots of cars parked in the parking lot ; some trees : yes?",
    "a road -- with [brackets] and {braces}... end",
    "There is a baseball-field . ",
    "It contains .",
    "many buildings are near the road,and some trees",
    "A b. C d.",
]


@needs_java
def test_python_tokenizer_matches_java_ptb():
    java, name = tokenize({i: [s] for i, s in enumerate(SENTENCES)}, use_java=True)
    assert name == "ptb-java"
    for i, sentence in enumerate(SENTENCES):
        assert simple_ptb_tokenize(sentence) == java[i][0], sentence


@needs_java
def test_meteor_plumbing():
    result = caption_scores(
        {1: ["a plane is parked on the runway"], 2: ["many green trees"]},
        {1: "a plane is parked on the runway", 2: "two red cars"},
        meteor=True,
    )
    # pycocoevalcap's Meteor called directly on these two pairs gives per-image [1.0, 0.0] and the corpus score
    # 0.5990783410138248 (measured; METEOR aggregates statistics, it does not average the sentence scores)
    assert result["METEOR"] == pytest.approx(0.5990783410138248) and result["tokenizer"] == "ptb-java"
