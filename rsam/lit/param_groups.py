"""The official optimiser parameter groups (``train.py`` of RemoteSAM / LAVT) and the text-encoder layer rule.

Official rule, by parameter name:

1. ``backbone.*`` whose name contains ``norm``, ``absolute_pos_embed`` or ``relative_position_bias_table``:
   weight decay 0;
2. every other ``backbone.*`` parameter: the default weight decay;
3. ``classifier.*``: the default weight decay (its norms too);
4. ``text_encoder.encoder.layer.{i}.*`` for ``i < trained_text_layers`` (10 of BERT-base's 12): default decay;
5. everything else (text embeddings, the top text layers) is **not optimised**; the official code still computes
   their gradients, we freeze them (``requires_grad = False``), which gives the same weights and saves the work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from torch import nn

OFFICIAL_TRAINED_TEXT_LAYERS = 10
NO_DECAY_MARKERS = ("norm", "absolute_pos_embed", "relative_position_bias_table")

GROUP_BACKBONE_NO_DECAY = "backbone_no_decay"
GROUP_BACKBONE_DECAY = "backbone_decay"
GROUP_CLASSIFIER = "classifier"
GROUP_TEXT = "text_layers"
FROZEN = "frozen"
GROUP_ORDER = (GROUP_BACKBONE_NO_DECAY, GROUP_BACKBONE_DECAY, GROUP_CLASSIFIER, GROUP_TEXT)

_TEXT_LAYER = re.compile(r"^text_encoder\.encoder\.layer\.(\d+)\.")


def parameter_group(name: str, trained_text_layers: int = OFFICIAL_TRAINED_TEXT_LAYERS) -> str:
    """The group of one parameter (official state_dict name), or ``FROZEN``."""
    if name.startswith("backbone."):
        if any(marker in name for marker in NO_DECAY_MARKERS):
            return GROUP_BACKBONE_NO_DECAY
        return GROUP_BACKBONE_DECAY
    if name.startswith("classifier."):
        return GROUP_CLASSIFIER
    layer = _TEXT_LAYER.match(name)
    if layer and int(layer.group(1)) < trained_text_layers:
        return GROUP_TEXT
    if name.startswith("text_encoder."):
        return FROZEN
    raise ValueError(f"parameter {name!r} belongs to no known part of RemoteSAM (backbone/classifier/text_encoder)")


@dataclass
class ParamGroups:
    """Named parameter lists, in the official group order, plus the frozen names."""

    groups: dict[str, list[tuple[str, nn.Parameter]]] = field(default_factory=dict)
    frozen: list[str] = field(default_factory=list)

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        out = []
        for name in GROUP_ORDER:
            params = [p for _, p in self.groups.get(name, [])]
            if params:
                decay = 0.0 if name == GROUP_BACKBONE_NO_DECAY else weight_decay
                out.append({"params": params, "weight_decay": decay, "name": name})
        return out


def official_param_groups(
    model: nn.Module, trained_text_layers: int = OFFICIAL_TRAINED_TEXT_LAYERS, freeze: bool = True
) -> ParamGroups:
    """Split ``model``'s parameters by :func:`parameter_group`; with ``freeze``, unoptimised ones stop needing grad."""
    result = ParamGroups()
    for name, param in model.named_parameters():
        group = parameter_group(name, trained_text_layers)
        if group == FROZEN:
            result.frozen.append(name)
            if freeze:
                param.requires_grad_(False)
        else:
            result.groups.setdefault(group, []).append((name, param))
    return result
