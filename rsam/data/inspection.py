"""``rsam data inspect``: a JSON summary of a shard dataset, optional full verification, and a contact sheet."""

from __future__ import annotations

import io
import logging
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from rsam.data.reader import (
    CorruptShardError,
    IndexedShards,
    open_shard,
    raw_members,
    sample_image_bytes,
    sample_mask,
    sample_record,
)
from rsam.data.shards import load_dataset_index, sha256_file, split_shards

log = logging.getLogger(__name__)

TILE = 256
TEXT_LINES = 3


def _verify_sample(sample: dict) -> None:
    _, data = sample_image_bytes(sample)
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            size = img.size
    except Exception as err:  # PIL raises many types for corrupt data
        raise CorruptShardError(f"{sample['__shard__']}:{sample['__key__']}: cannot decode image: {err}") from err
    mask = sample_mask(sample)
    if mask.shape[::-1] != size:
        raise CorruptShardError(f"{sample['__shard__']}:{sample['__key__']}: mask and image sizes differ")
    sample_record(sample)


def summarize(folder: str | Path, *, verify: bool = False) -> dict:
    """Samples per split, kind, source and licence; shard count and bytes. ``verify`` also checks every shard's
    sha256 and decodes every sample, listing problems under ``problems``."""
    folder = Path(folder)
    index = load_dataset_index(folder)
    summary = {
        "name": index["name"],
        "converter": index["converter"],
        "licences": index.get("licences", []),
        "splits": {},
        "problems": [],
    }
    totals = Counter()
    for split in sorted(index["splits"]):
        kinds, sources, licences = Counter(), Counter(), Counter()
        shards = split_shards(folder, split)
        for shard in tqdm(shards, desc=f"inspecting {split}", unit="shard", leave=False):
            try:
                if verify and sha256_file(Path(shard["path"])) != shard["sha256"]:
                    raise CorruptShardError(f"{shard['path']}: sha256 differs from the index")
                reader = open_shard(shard["path"], nsamples=shard["nsamples"])  # wids.IndexedTarSamples
                try:
                    for position in range(len(reader)):
                        sample = dict(raw_members(reader[position]), __shard__=shard["path"])
                        if verify:
                            _verify_sample(sample)
                        record = sample_record(sample)
                        kinds[record.get("kind")] += 1
                        sources[record.get("source")] += 1
                        licences[record.get("licence")] += 1
                finally:
                    reader.close()
            except CorruptShardError as err:
                summary["problems"].append(str(err))
        nbytes = sum(shard["filesize"] for shard in shards)
        summary["splits"][split] = {
            "samples": sum(shard["nsamples"] for shard in shards),
            "shards": len(shards),
            "bytes": nbytes,
            "kinds": dict(sorted(kinds.items())),
            "sources": dict(sorted(sources.items())),
            "licences": dict(sorted(licences.items())),
        }
        totals.update({"samples": summary["splits"][split]["samples"], "shards": len(shards), "bytes": nbytes})
    summary.update(dict(totals))
    return summary


def _tile(sample: dict, font) -> Image.Image:
    record = sample_record(sample)
    _, data = sample_image_bytes(sample)
    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.float32)
    mask = sample_mask(sample)
    overlay = rgb.copy()
    overlay[mask] = 0.5 * overlay[mask] + 0.5 * np.array([255.0, 0.0, 0.0])
    picture = Image.fromarray(overlay.astype(np.uint8)).resize((TILE, TILE), Image.BILINEAR)
    line_height = 12
    canvas = Image.new("RGB", (TILE, TILE + line_height * (TEXT_LINES + 1) + 4), "white")
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    lines = textwrap.wrap(f"[{record.get('kind')}] {record.get('text')}", width=42)[:TEXT_LINES]
    lines.append(f"{record.get('source')} {record.get('split')} {record.get('licence')}")
    for row, line in enumerate(lines):
        draw.text((3, TILE + 2 + row * line_height), line, fill="black", font=font)
    return canvas


def contact_sheet(
    folder: str | Path, out_png: str | Path, *, split: str | None = None, count: int = 16, columns: int = 4
) -> Path:
    """A PNG grid of ``count`` samples (evenly spaced over the split) with their masks in red and their texts."""
    index = load_dataset_index(folder)
    split = split or sorted(index["splits"])[0]
    dataset = IndexedShards([dict(shard, url=shard["path"]) for shard in split_shards(folder, split)])
    picks = np.unique(np.linspace(0, len(dataset) - 1, num=min(count, len(dataset))).astype(int))
    font = ImageFont.load_default()
    tiles = [_tile(dataset.raw(int(i)), font) for i in picks]
    rows = (len(tiles) + columns - 1) // columns
    width, height = tiles[0].size
    sheet = Image.new("RGB", (columns * width, rows * height), "white")
    for number, tile in enumerate(tiles):
        sheet.paste(tile, ((number % columns) * width, (number // columns) * height))
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png)
    log.info("wrote a contact sheet of %d %s samples to %s", len(tiles), split, out_png)
    return out_png
