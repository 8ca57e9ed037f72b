"""Parity against golden sets produced by the official code (``shared/reference`` format).

``run_parity`` builds the model from the golden config, loads the golden weights strictly, runs every case
(``caseN_image_u8``, ``caseN_input_ids``, ``caseN_attention_mask``) and compares the logits and every stored
intermediate, so a mismatch is located (text encoder, a stage, the CIM, a routing function, the decoder), not just
detected.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rsam.checkpoint.golden import load_golden_config, load_golden_weights
from rsam.models import RemoteSAM, build_model
from rsam.preprocess import normalize

LOGIT_TOLERANCE = 1e-4
# Suggested per-array tolerances of the reference README (measured noise floor x ~3).
INTERMEDIATE_TOLERANCE = {
    "text_last_hidden": 2e-5,
    "decoder_logits": 1e-4,
    "chanmean": 1e-4,
    "spatialmean": 1e-4,
    "tokenmean": 1e-4,
    "crop_tl": 2e-3,
    "crop_br": 2e-3,
    "alpha": 1e-5,
    "theta": 1e-5,
}


def _tolerance(name: str) -> float:
    for suffix, tol in INTERMEDIATE_TOLERANCE.items():
        if name.endswith(suffix):
            return tol
    return LOGIT_TOLERANCE


@contextlib.contextmanager
def capture_intermediates(model: RemoteSAM) -> Iterator[dict[str, torch.Tensor]]:
    """Record, under the golden file's names (without the ``caseN_`` prefix), what the model computes."""
    found: dict[str, torch.Tensor] = {}

    def summaries(prefix: str, x: torch.Tensor) -> None:
        found[f"{prefix}_chanmean"] = x.mean(dim=1)
        found[f"{prefix}_spatialmean"] = x.mean(dim=(2, 3))
        found[f"{prefix}_crop_tl"] = x[..., :4, :4]
        found[f"{prefix}_crop_br"] = x[..., -4:, -4:]

    def on_cim(_module, inputs, outputs):
        for s, (pre, post) in enumerate(zip(inputs[0], outputs)):
            summaries(f"stage{s}_pre_cim", pre)
            summaries(f"stage{s}_post_cim", post)

    handles = [
        model.text_encoder.register_forward_hook(lambda _m, _i, out: found.update(text_last_hidden=out)),
        model.classifier.register_forward_hook(lambda _m, _i, out: found.update(decoder_logits=out)),
        model.backbone.cim.register_forward_hook(on_cim),
    ]
    for s, layer in enumerate(model.backbone.layers):
        handles.append(
            layer.fusion.register_forward_hook(
                lambda _m, _i, out, s=s: found.update({f"stage{s}_fusion_out_tokenmean": out.mean(dim=2)})
            )
        )
    for level in (4, 3, 2):
        routing = getattr(model.classifier, f"conv2_{level}").rounting_func

        def on_routing(_m, _i, out, level=level):
            found[f"routing_conv2_{level}_alpha"], found[f"routing_conv2_{level}_theta"] = out

        handles.append(routing.register_forward_hook(on_routing))
    try:
        yield found
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class CaseResult:
    case: str
    batch: int
    image_hw: tuple[int, int]
    max_abs: dict[str, float] = field(default_factory=dict)
    intermediates: dict[str, float] = field(default_factory=dict)
    failed_intermediates: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.max_abs) and all(v <= LOGIT_TOLERANCE for v in self.max_abs.values())

    def to_json(self) -> dict:
        return {
            "case": self.case,
            "batch": self.batch,
            "image_hw": list(self.image_hw),
            **{f"max_abs_{k}": v for k, v in self.max_abs.items()},
            "pass": self.passed,
            "worst_intermediate": max(
                self.intermediates.items(), key=lambda kv: kv[1] / _tolerance(kv[0]), default=(None, None)
            ),
            "failed_intermediates": self.failed_intermediates,
        }


def case_names(golden: dict[str, np.ndarray]) -> list[str]:
    names = sorted(
        {m.group(1) for k in golden for m in [re.match(r"(case\d+)_image_u8$", k)] if m}, key=lambda n: int(n[4:])
    )
    if not names:
        raise ValueError("golden file has no caseN_image_u8 arrays")
    return names


def run_case(model: RemoteSAM, golden: dict[str, np.ndarray], case: str) -> CaseResult:
    def get(name):
        key = f"{case}_{name}"
        if key not in golden:
            raise KeyError(f"golden file lacks {key!r}")
        return golden[key]

    images_u8 = get("image_u8")
    images = torch.stack([normalize(img) for img in images_u8])
    ids = torch.from_numpy(np.asarray(get("input_ids"), dtype=np.int64))
    mask = torch.from_numpy(np.asarray(get("attention_mask"), dtype=np.int64))
    with torch.no_grad(), capture_intermediates(model) as found:
        logits = model(images, ids, mask)
    result = CaseResult(case, images.shape[0], tuple(images_u8.shape[1:3]))

    def diff(ours: torch.Tensor, ref: np.ndarray, name: str) -> float:
        ours_np = ours.detach().double().numpy()
        if ours_np.shape != ref.shape:
            raise ValueError(f"{case}_{name}: shape {ours_np.shape} differs from golden {ref.shape}")
        return float(np.abs(ours_np - ref.astype(np.float64)).max())

    if f"{case}_logits" in golden:
        result.max_abs["logits"] = diff(logits, golden[f"{case}_logits"], "logits")
    result.max_abs["logits_sub4"] = diff(logits[..., 1::4, 1::4], get("logits_sub4"), "logits_sub4")
    for name, value in found.items():
        if f"{case}_{name}" in golden:
            result.intermediates[name] = diff(value, golden[f"{case}_{name}"], name)
    result.failed_intermediates = sorted(n for n, v in result.intermediates.items() if v > _tolerance(n))
    return result


def run_parity(config: str | Path, weights: str | Path, golden: str | Path) -> Iterator[CaseResult]:
    """Yield one result per golden case (the model is built once per stage-4 grid)."""
    golden_path = Path(golden)
    if not golden_path.is_file():
        raise FileNotFoundError(f"golden file not found: {golden_path}")
    arrays = dict(np.load(golden_path, allow_pickle=False))
    state = load_golden_weights(weights)
    model = None
    for case in case_names(arrays):
        size = tuple(arrays[f"{case}_image_u8"].shape[1:3])
        cfg = load_golden_config(config, image_size=size)
        if model is None or model.config.cim_grid != cfg.cim_grid:
            model = build_model(cfg)
            model.load_state_dict(state, strict=True)
            model.eval()
        yield run_case(model, arrays, case)
