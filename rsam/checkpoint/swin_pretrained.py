"""Initialising RemoteSAM's Swin trunk from an ImageNet Swin checkpoint (``init.backbone``), as the paper does.

The official ``train.py`` builds the backbone, applies its init (``lib/backbone.py::init_weights``: trunc-normal linear
weights, unit LayerNorms) and then loads ``swin_base_patch4_window12_384_22k.pth`` with mmcv's non-strict loader
(``lib/mmcv_custom/checkpoint.py``): the ``model`` entry, a ``module.`` prefix stripped, relative-position bias tables
resized bicubically when the window differs, every key the checkpoint lacks (language fusion, gates, intra-scale
branch, cross-scale module) left at init and every key the model lacks (classification head, final norm) dropped.

Here the same, with the non-strict part made explicit: each foreign layout has one key filter that maps its keys to
ours by rule, every key of the checkpoint is either loaded, resized, or ignored *for a stated reason*, and anything else
(an unknown key, a missing Swin block, a shape that cannot be resized) is an error that lists the keys. Layouts:

* **Microsoft** (github.com/microsoft/Swin-Transformer releases, a pickle with ``model``): PatchMerging at the *end*
  of stage i (``layers.{i}.downsample.*``) as in RemoteSAM, ``relative_position_index`` / ``attn_mask`` buffers
  saved, classifier ``head.*``;
* **timm** (>= 0.9, e.g. ``swin_base_patch4_window12_384.ms_in22k`` on the HF hub; ``.safetensors``, ``.bin`` or
  ``.pth``): PatchMerging at the *start* of stage i+1 (``layers.{i+1}.downsample.*``), no saved index/mask buffers,
  classifier ``head.fc.*``.

Both use the same 2x2 concat order in PatchMerging (x[0::2,0::2], x[1::2,0::2], x[0::2,1::2], x[1::2,1::2]), so the
merging weights move without permutation; the tests prove the mapping by comparing outputs with timm's own blocks.
"""

from __future__ import annotations

import logging
import math
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from rsam.checkpoint.official import CheckpointError
from rsam.checkpoint.weights_io import read_state_dict

log = logging.getLogger(__name__)

MICROSOFT = "Microsoft Swin release"
TIMM = "timm >= 0.9"
BACKBONE = "backbone."
TABLE = "relative_position_bias_table"
PATCH_PROJ = "backbone.patch_embed.proj.weight"

# checkpoint keys that carry nothing RemoteSAM uses, with the reason shown in the load table
_IGNORED = (
    (re.compile(r"^head\."), "classification head"),
    (re.compile(r"^norm\."), "final norm of the classifier"),
    (re.compile(r"\.attn\.relative_position_index$"), "derived buffer (recomputed from the window)"),
    (re.compile(r"\.attn_mask$"), "derived buffer (recomputed from the input size)"),
)
_SWIN_KEY = re.compile(r"^(patch_embed\.|layers\.\d+\.(blocks|downsample)\.)")
_DOWNSAMPLE = re.compile(r"^layers\.(\d+)\.downsample\.")
# model keys a Swin checkpoint provides (everything else of RemoteSAM keeps its init)
_MODEL_SWIN_KEY = re.compile(r"^backbone\.(patch_embed\.|layers\.\d+\.(blocks|downsample)\.)")
_MODEL_DERIVED = re.compile(r"\.attn\.relative_position_index$")


def _ignored_reason(key: str) -> str | None:
    return next((reason for pattern, reason in _IGNORED if pattern.search(key)), None)


def _strip_wrappers(state: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """A DDP ``module.`` prefix goes (as mmcv strips it); a RemoteSAM/rsam checkpoint is refused with a pointer."""
    state = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}
    if any(k.startswith(BACKBONE) and ".fusion." in k for k in state):
        raise CheckpointError(
            f"{source}: this is a whole RemoteSAM checkpoint (backbone.* with language fusion), not an ImageNet Swin "
            "checkpoint; use init.weights for it"
        )
    if any(k.startswith("model.backbone.") for k in state):
        raise CheckpointError(f"{source}: keys under 'model.' look like a Lightning checkpoint; use init.weights")
    return state


def detect_layout(state: Mapping[str, torch.Tensor]) -> str:
    """Microsoft when stage 0 has its own PatchMerging (the rule timm's ``checkpoint_filter_fn`` uses), else timm."""
    if any(k.startswith("layers.0.downsample.") for k in state):
        return MICROSOFT
    if any(k.startswith("head.fc.") for k in state) or any(_DOWNSAMPLE.match(k) for k in state):
        return TIMM
    return MICROSOFT if any(k.endswith("relative_position_index") for k in state) else TIMM


def microsoft_to_rsam(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Microsoft layout -> (RemoteSAM keys -> tensors, ignored checkpoint keys -> reason). Unknown keys are kept
    under their own name, so that the loader reports them as unexpected."""
    mapped, ignored = {}, {}
    for key, value in state.items():
        reason = _ignored_reason(key)
        if reason:
            ignored[key] = reason
        else:
            mapped[BACKBONE + key if _SWIN_KEY.match(key) else key] = value
    return mapped, ignored


def timm_to_rsam(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """timm layout -> (RemoteSAM keys, ignored keys): ``layers.{i}.downsample`` moves back to the end of stage i-1."""
    mapped, ignored = {}, {}
    for key, value in state.items():
        reason = _ignored_reason(key)
        if reason:
            ignored[key] = reason
            continue
        moved = _DOWNSAMPLE.match(key)
        if moved:
            stage = int(moved.group(1))
            if stage == 0:  # timm's stage 0 never downsamples; a key here means a foreign file
                mapped[key] = value
                continue
            key = f"layers.{stage - 1}.downsample." + key[moved.end() :]
        mapped[BACKBONE + key if _SWIN_KEY.match(key) else key] = value
    return mapped, ignored


KEY_FILTERS = {MICROSOFT: microsoft_to_rsam, TIMM: timm_to_rsam}


def resize_bias_table(table: torch.Tensor, window: int) -> torch.Tensor:
    """A ((2w-1)², heads) relative-position bias table resized to ``window``: the table as a (2w-1)x(2w-1) image per
    head, bicubic, ``align_corners=False``, no antialiasing (the rule of mmcv's / Microsoft's Swin loaders)."""
    length, heads = table.shape
    side = math.isqrt(length)
    if side * side != length:
        raise ValueError(f"a relative-position table of {length} rows is not square")
    new_side = 2 * window - 1
    grid = table.float().permute(1, 0).reshape(1, heads, side, side)
    resized = F.interpolate(grid, size=(new_side, new_side), mode="bicubic", align_corners=False)
    return resized.reshape(heads, new_side * new_side).permute(1, 0).contiguous().to(table.dtype)


def _module_label(key: str) -> str:
    """A module name for the load table: per-stage modules are grouped over stages and blocks."""
    key = re.sub(r"\.blocks\.\d+\.", ".blocks.*.", key)
    key = re.sub(r"^backbone\.layers\.\d+\.", "backbone.layers.*.", key)
    key = re.sub(r"^backbone\.norm\d+\.", "backbone.norm_i.", key)
    parts = key.split(".")
    if parts[0] == "backbone":
        depth = 4 if parts[1] == "layers" else 2
        return ".".join(parts[:depth])
    return parts[0]


@dataclass
class LoadReport:
    """What an initialisation did: checkpoint tensors loaded / resized / ignored, model tensors left at init."""

    source: str
    layout: str
    loaded: list[str] = field(default_factory=list)  # model keys
    resized: dict[str, str] = field(default_factory=dict)  # model key -> "old shape -> new shape"
    ignored: dict[str, str] = field(default_factory=dict)  # checkpoint key -> reason
    left_at_init: dict[str, int] = field(default_factory=dict)  # module label -> tensors
    parameters_loaded: int = 0

    def table(self) -> list[str]:
        lines = [f"init.backbone {self.source} ({self.layout} layout):"]
        lines.append(
            f"  loaded        {len(self.loaded) + len(self.resized):5d} tensors ({self.parameters_loaded:,} values): "
            + ", ".join(sorted({_module_label(k) for k in [*self.loaded, *self.resized]}))
        )
        if self.resized:
            shapes = sorted(set(self.resized.values()))
            lines.append(f"  of which resized {len(self.resized):3d} {TABLE} (bicubic): " + "; ".join(shapes))
        for label, count in sorted(self.left_at_init.items()):
            lines.append(f"  left at init  {count:5d} tensors: {label}")
        reasons: dict[str, int] = defaultdict(int)
        for reason in self.ignored.values():
            reasons[reason] += 1
        for reason, count in sorted(reasons.items()):
            lines.append(f"  ignored       {count:5d} tensors: {reason}")
        return lines

    def log(self, logger: logging.Logger = log) -> None:
        for line in self.table():
            logger.info("%s", line)


def _shown(items: list[str], limit: int = 12) -> str:
    return ", ".join(items[:limit]) + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def load_swin_backbone(model: torch.nn.Module, path: str | Path) -> LoadReport:
    """Load an ImageNet Swin checkpoint (Microsoft or timm layout) into a RemoteSAM's trunk; returns the load report.

    Refused, listing the keys: a Swin key the model lacks (more stages/blocks), a Swin tensor of the model the file
    lacks (fewer blocks), a shape that differs other than by the window, a patch embedding for other input channels.
    """
    source = str(path)
    raw = _strip_wrappers(read_state_dict(path), source)
    layout = detect_layout(raw)
    mapped, ignored = KEY_FILTERS[layout](raw)
    report = LoadReport(source=source, layout=layout, ignored=ignored)
    target = model.state_dict()

    proj = mapped.get(PATCH_PROJ)
    if proj is not None and PATCH_PROJ in target and proj.ndim == 4 and proj.shape[1] != target[PATCH_PROJ].shape[1]:
        raise CheckpointError(
            f"{source}: the patch embedding takes {proj.shape[1]} input channels, the model takes "
            f"{target[PATCH_PROJ].shape[1]} (RGB); a checkpoint for another number of bands cannot initialise it"
        )
    unexpected = sorted(k for k in mapped if k not in target or not _MODEL_SWIN_KEY.match(k))
    missing = sorted(k for k in target if _MODEL_SWIN_KEY.match(k) and not _MODEL_DERIVED.search(k) and k not in mapped)
    mismatched, values = [], {}
    for key, value in mapped.items():
        if key in unexpected:
            continue
        want = target[key]
        if value.shape == want.shape:
            values[key] = value
            report.loaded.append(key)
        elif key.endswith(TABLE) and value.ndim == 2 and value.shape[1] == want.shape[1]:
            window = (math.isqrt(want.shape[0]) + 1) // 2
            old = (math.isqrt(value.shape[0]) + 1) // 2
            values[key] = resize_bias_table(value, window)
            report.resized[key] = f"window {old} -> {window}"
        else:
            mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(want.shape)}")
    if unexpected or missing or mismatched:
        parts = [
            f"{label}: {_shown(items)}"
            for label, items in (
                ("keys the model does not have", unexpected),
                ("Swin tensors the checkpoint lacks", missing),
                ("shape mismatches", mismatched),
            )
            if items
        ]
        raise CheckpointError(f"{source} ({layout} layout) does not fit the model's Swin trunk: " + "; ".join(parts))
    state = dict(target)
    state.update({k: v.to(target[k].dtype) for k, v in values.items()})
    model.load_state_dict(state, strict=True)
    report.parameters_loaded = sum(v.numel() for v in values.values())
    left: dict[str, int] = defaultdict(int)
    for key in target:
        if key not in values and not _MODEL_DERIVED.search(key):
            left[_module_label(key)] += 1
    report.left_at_init = dict(left)
    return report
