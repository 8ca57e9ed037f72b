"""Captioning metrics: the official CIDEr plus CIDEr-D, BLEU-1..4, ROUGE-L and (opt-in) METEOR.

Official protocol (``tasks/code/eval/CAP.py`` -> bundled ``cidereval``, `official-protocol-quirks.md` B12):

* tokenisation: Stanford PTB tokenizer (CoreNLP 3.4.1, Java) with ``-lowerCase``, then the punctuation tokens
  ``'' ' `` ` -LRB- -RRB- -LCB- -RCB- . ? ! , : - -- ... ;`` are dropped (so the lower-cased ``-lrb-`` stays);
* **original CIDEr** (not CIDEr-D): n = 1..4, tf-idf vectors with document frequencies from the evaluated references
  (``df='corpus'``, ``log(#images)`` as the idf numerator), plain cosine similarity averaged over references and
  n-gram orders, x10, **no clipping and no length penalty**; corpus score = mean over images. The script prints x100.

The PTB tokenizer, BLEU, ROUGE-L, CIDEr-D and METEOR come from ``pycocoevalcap`` (the reference implementation; its
tokenizer and METEOR need ``java`` on PATH). Without Java the tokenizer falls back to :func:`simple_ptb_tokenize`
(equal to PTB on the tested caption vocabulary) and says so in the result (``tokenizer`` key); METEOR is then
reported missing (``missing`` key), never as 0.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import re
import shutil
from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence

import torch

log = logging.getLogger(__name__)

PUNCTUATIONS = {
    "''",
    "'",
    "``",
    "`",
    "-LRB-",
    "-RRB-",
    "-LCB-",
    "-RCB-",
    ".",
    "?",
    "!",
    ",",
    ":",
    "-",
    "--",
    "...",
    ";",
}
CIDER_N = 4

Corpus = Mapping[Hashable, Sequence[str]]


def java_available() -> bool:
    return shutil.which("java") is not None


_PTB_SEPARATE = re.compile(r"(\.\.\.|[;@#$%&?!(){}\[\]\"]|,(?!\d)|(?<!\d):|:(?!\d))")
_PTB_CLITIC = re.compile(r"(?i)^(.*[a-z])('s|'m|'d|'re|'ve|'ll|n't)$")
_PTB_ACRONYM = re.compile(r"^(?:[a-z]\.)+$")  # "u.s.", "e.g." and single initials "b." keep their period
_PTB_WORDS = {"(": "-lrb-", ")": "-rrb-", "{": "-lcb-", "}": "-rcb-", "[": "-lsb-", "]": "-rsb-", '"': "''"}


def _split_token(token: str) -> list[str]:
    if token != "." and token.endswith(".") and token != "..." and not _PTB_ACRONYM.match(token):
        return _split_token(token[:-1]) + ["."]
    clitic = _PTB_CLITIC.match(token)
    if clitic:
        return [clitic.group(1), clitic.group(2)]
    return [token]


def simple_ptb_tokenize(sentence: str) -> str:
    """Pure-Python approximation of the PTB tokenizer + punctuation removal, used when Java is missing."""
    text = _PTB_SEPARATE.sub(r" \1 ", sentence.replace("\n", " ").lower())
    tokens = [_PTB_WORDS.get(part, part) for token in text.split() for part in _split_token(token)]
    return " ".join(token for token in tokens if token not in PUNCTUATIONS)


def tokenize(corpus: Corpus, *, use_java: bool | None = None) -> tuple[dict, str]:
    """Tokenise ``{id: [sentences]}``; returns ``(tokenised, tokenizer_name)``."""
    if use_java is None:
        use_java = java_available()
        if not use_java:
            log.warning("java not found: captions are tokenised with the pure-Python PTB approximation")
    if use_java:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        entries = {key: [{"caption": s} for s in sentences] for key, sentences in corpus.items()}
        return PTBTokenizer().tokenize(entries), "ptb-java"
    return {key: [simple_ptb_tokenize(s) for s in sentences] for key, sentences in corpus.items()}, "ptb-python"


def _ngrams(sentence: str, n: int = CIDER_N) -> dict[tuple[str, ...], int]:
    words = sentence.split()
    counts: dict[tuple[str, ...], int] = defaultdict(int)
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i : i + k])] += 1
    return counts


def cider(references: Corpus, hypotheses: Mapping[Hashable, str], n: int = CIDER_N) -> tuple[float, dict]:
    """Original CIDEr of the official ``cidereval`` (see module docstring) on *tokenised* text.

    Returns ``(corpus_score, {id: score})``; scores are x10 as in the reference code (not x100).
    """
    keys = list(hypotheses)
    refs = {key: [_ngrams(r, n) for r in references[key]] for key in keys}
    doc_freq: dict[tuple[str, ...], int] = defaultdict(int)
    for key in keys:
        for gram in {g for ref in refs[key] for g in ref}:
            doc_freq[gram] += 1
    log_images = math.log(float(len(keys)))

    def vector(counts):
        vec = [dict() for _ in range(n)]
        norm = [0.0] * n
        for gram, tf in counts.items():
            weight = float(tf) * (log_images - math.log(max(1.0, doc_freq[gram])))
            vec[len(gram) - 1][gram] = weight
            norm[len(gram) - 1] += weight * weight
        return vec, [math.sqrt(v) for v in norm]

    scores = {}
    for key in keys:
        hyp_vec, hyp_norm = vector(_ngrams(hypotheses[key], n))
        total = [0.0] * n
        for ref in refs[key]:
            ref_vec, ref_norm = vector(ref)
            for k in range(n):
                dot = sum(w * ref_vec[k].get(g, 0.0) for g, w in hyp_vec[k].items())
                if hyp_norm[k] != 0 and ref_norm[k] != 0:
                    dot /= hyp_norm[k] * ref_norm[k]
                total[k] += dot
        scores[key] = sum(total) / n / len(refs[key]) * 10.0
    return (sum(scores.values()) / len(scores) if scores else 0.0), scores


def _quiet(call, *args):
    with contextlib.redirect_stdout(io.StringIO()):  # pycocoevalcap's BLEU prints to stdout
        return call(*args)


def caption_scores(
    references: Corpus, hypotheses: Mapping[Hashable, str], *, meteor: bool = False, use_java: bool | None = None
) -> dict:
    """All caption metrics for ``{id: [reference sentences]}`` and ``{id: hypothesis}`` (raw text)."""
    if not hypotheses:
        raise ValueError("captioning: no captions were given")
    missing = [key for key in references if key not in hypotheses]
    extra = [key for key in hypotheses if key not in references]
    if missing or extra:
        raise ValueError(
            f"captioning: {len(missing)} images have no caption (e.g. {missing[:3]}), "
            f"{len(extra)} captions name unknown images (e.g. {extra[:3]})"
        )
    empty = [key for key, refs in references.items() if not refs]
    if empty:
        raise ValueError(f"captioning: images without reference captions: {empty[:5]}")
    use_java = java_available() if use_java is None else use_java
    merged = {("ref", key): list(refs) for key, refs in references.items()}
    merged.update({("hyp", key): [hyp] for key, hyp in hypotheses.items()})
    tokens, tokenizer = tokenize(merged, use_java=use_java)
    gts = {key: tokens[("ref", key)] for key in references}
    res = {key: tokens[("hyp", key)] for key in references}
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    bleu, _ = _quiet(Bleu(4).compute_score, gts, res)
    result = {f"BLEU-{i + 1}": float(b) for i, b in enumerate(bleu)}
    result["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    result["CIDEr-D"] = float(Cider().compute_score(gts, res)[0])
    result["CIDEr"] = cider(gts, {key: res[key][0] for key in res})[0]
    result["missing"] = []
    if meteor and use_java:
        from pycocoevalcap.meteor.meteor import Meteor

        scorer = Meteor()  # a java subprocess, killed when the scorer is collected
        result["METEOR"] = float(scorer.compute_score(gts, res)[0])
        del scorer
    elif meteor:
        result["missing"].append("METEOR (needs java)")
    result["tokenizer"] = tokenizer
    result["images"] = len(references)
    return result


class CaptionMetric:
    """Collects ``(image_id, hypothesis, references)`` and scores them; gathers from all ranks on ``compute``.

    Not a torchmetrics ``Metric`` (its states cannot hold text); synchronisation uses
    ``torch.distributed.all_gather_object`` when a process group is initialised.
    """

    def __init__(self, *, meteor: bool = False):
        self.meteor = meteor
        self.reset()

    def reset(self) -> None:
        self._items: list[tuple[Hashable, str, list[str]]] = []

    def update(self, image_ids, hypotheses, references, valid=None) -> None:
        image_ids, hypotheses, references = list(image_ids), list(hypotheses), list(references)
        if not (len(image_ids) == len(hypotheses) == len(references)):
            raise ValueError("image_ids, hypotheses and references must have the same length")
        flags = [True] * len(image_ids) if valid is None else [bool(v) for v in valid]
        for image_id, hyp, refs, keep in zip(image_ids, hypotheses, references, flags):
            if keep:
                self._items.append((image_id, str(hyp), [str(r) for r in refs]))

    def _gathered(self) -> list[tuple[Hashable, str, list[str]]]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            parts: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, self._items)
            return [item for part in parts for item in part]
        return list(self._items)

    def compute(self) -> dict:
        items = self._gathered()
        hypotheses, references = {}, {}
        for image_id, hyp, refs in items:
            if image_id in hypotheses:
                raise ValueError(f"captioning: image {image_id!r} was captioned twice")
            hypotheses[image_id], references[image_id] = hyp, refs
        return caption_scores(references, hypotheses, meteor=self.meteor)
