"""A recipe's ``init`` section applied to a freshly built RemoteSAM (plain PyTorch; the Lightning side only calls it).

* ``weights``: the whole network from anything :func:`rsam.checkpoint.load_model` reads (same architecture);
* ``backbone``: the Swin trunk from an ImageNet Swin checkpoint (:mod:`rsam.checkpoint.swin_pretrained`);
* ``text_encoder``: the BERT encoder from a Hugging Face folder (:mod:`rsam.checkpoint.text_encoder`).

Whatever is not named keeps the official random init. One log block says what came from where.
"""

from __future__ import annotations

import logging
from pathlib import Path

from rsam.checkpoint.weights_io import CheckpointError

log = logging.getLogger(__name__)


def initialise_model(
    model,
    *,
    weights: str | Path | None = None,
    backbone: str | Path | None = None,
    text_encoder: str | Path | None = None,
) -> list[str]:
    """Load the named sources into ``model`` (a :class:`rsam.models.RemoteSAM`); returns the logged summary lines."""
    from rsam.checkpoint.loader import load_model
    from rsam.checkpoint.official import load_strict
    from rsam.checkpoint.swin_pretrained import load_swin_backbone
    from rsam.checkpoint.text_encoder import load_text_encoder

    lines: list[str] = []

    def say(*new: str) -> None:
        for line in new:
            log.info("%s", line)
        lines.extend(new)

    if weights:
        if backbone or text_encoder:
            raise CheckpointError("init.weights holds the whole network: do not combine it with init.backbone/text")
        source = load_model(weights)
        if source.config.to_dict() != model.config.to_dict():
            raise ValueError(f"init.weights {weights}: its architecture differs from the recipe's model section")
        load_strict(model, source.state_dict(), str(weights))
        say(f"init.weights: the whole network ({len(model.state_dict())} tensors) from {weights}")
        return lines
    if backbone:
        say(*load_swin_backbone(model, backbone).table())
    else:
        say("init.backbone: none (the Swin trunk keeps the official random init)")
    if text_encoder:
        file = load_text_encoder(model.text_encoder, text_encoder)
        say(f"init.text_encoder: {len(model.text_encoder.state_dict())} tensors from {file}")
    else:
        say("init.text_encoder: none (the text encoder keeps BERT's random init)")
    return lines
