"""Synthetic shard datasets for scale tests and loader benchmarks (not training data).

Every sample has its own key, text and JSON record; to keep generation fast at 270K-sample scale the image and mask
bytes are encoded once per *pattern* (``patterns`` distinct images) and reused. Shard sizes can be uneven.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from rsam.data.pipeline import DatasetSpec, finalize
from rsam.data.records import KINDS, MASK_SUFFIX, RECORD_SUFFIX, encode_mask_png
from rsam.data.shards import sha256_file, shard_name, write_tar

log = logging.getLogger(__name__)

TEXTS = (
    "building in the image",
    "the largest of the 3 ships",
    "the white car on the left side of the image",
    "storage tank in the image",
    "the only bridge in the image",
)


def _pattern(index: int, size: int, image_format: str, rng: np.random.Generator) -> tuple[str, bytes, bytes]:
    # smooth blobs plus mild noise: closer to aerial imagery's JPEG size than pure noise
    coarse = rng.integers(0, 256, size=(max(1, size // 16), max(1, size // 16), 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BILINEAR), dtype=np.int16)
    pixels = np.clip(smooth + rng.integers(-8, 9, size=smooth.shape), 0, 255).astype(np.uint8)
    mask = np.zeros((size, size), dtype=bool)
    mask[index % size : index % size + size // 2, : size // 3 + index % 5] = True
    buffer = io.BytesIO()
    if image_format == "jpg":
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    else:
        Image.fromarray(pixels).save(buffer, format="PNG")
    return image_format, buffer.getvalue(), encode_mask_png(mask)


def _write_split(out_dir: Path, split: str, sizes: Sequence[int], encoded: list, name: str, first: int) -> dict:
    shards, number = [], first
    for shard_index, size in enumerate(tqdm(sizes, desc=f"synthetic {split} shards", unit="shard", leave=False)):
        samples = []
        for _ in range(size):
            suffix, image, mask, image_size = encoded[number % len(encoded)]
            key = f"syn-{number:08d}"
            record = {
                "key": key,
                "text": TEXTS[number % len(TEXTS)],
                "kind": KINDS[number % len(KINDS)],
                "source": name,
                "image_id": number,
                "split": split,
                "licence": "synthetic",
                "width": image_size,
                "height": image_size,
            }
            samples.append(
                [
                    (f"{key}.{suffix}", image),
                    (f"{key}.{MASK_SUFFIX}", mask),
                    (f"{key}.{RECORD_SUFFIX}", json.dumps(record).encode("utf-8")),
                ]
            )
            number += 1
        path = out_dir / shard_name(split, shard_index)
        write_tar(path, samples)
        shards.append(
            {"name": path.name, "nsamples": size, "filesize": path.stat().st_size, "sha256": sha256_file(path)}
        )
    total = number - first
    return {
        "inputs": total,
        "written": total,
        "rejected": 0,
        "samples": total,
        "kinds": {},
        "dropped": {},
        "shards": shards,
        "rejects": [],
    }


def write_synthetic_dataset(
    out_dir: str | Path,
    shard_sizes: dict[str, Sequence[int]] | Sequence[int],
    *,
    image_size: int = 16,
    image_format: str = "png",
    split: str = "val",
    patterns: int = 8,
    seed: int = 0,
    name: str = "synthetic",
) -> dict:
    """Write shards of the given sizes (``{split: sizes}``, or one list for ``split``); returns the report.

    Keys are ``syn-<global number>``, unique across splits.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    layout = dict(shard_sizes) if isinstance(shard_sizes, dict) else {split: list(shard_sizes)}
    rng = np.random.default_rng(seed)
    encoded = [(*_pattern(i, image_size, image_format, rng), image_size) for i in range(patterns)]
    summaries, first = {}, 0
    for split_name in sorted(layout):
        summaries[split_name] = _write_split(out_dir, split_name, layout[split_name], encoded, name, first)
        first += summaries[split_name]["samples"]
    spec = DatasetSpec(
        name=name,
        converter="synthetic",
        unit="sample",
        splits={s: [] for s in layout},
        materialize=lambda job: None,
        fingerprint_inputs={},
    )
    return finalize(out_dir, spec, "synthetic", summaries)
