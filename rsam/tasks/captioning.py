"""Rule-based captions from detected boxes (``tasks/code/RuleBasedCaptioning.py``), with a seeded random generator.

Official rules (spec §3.9, `official-protocol-quirks.md` B12):

1. existence sentence: per class count ``>= 5`` -> ``"many {c}s"``, ``> 1`` -> ``"{n} {c}s"``, ``1`` -> ``"{c}"``,
   joined with ``", "`` into one of five templates;
2. distribution sentences: a 2x2 (``regions=4``, the eval default) or 3x3 grid; each box goes to the region of its
   centre (``int(cy // (H / k))``, so a centre exactly on a region line goes to the lower / right region); for each
   non-empty region, in row-major order, one of six templates with naive plurals (``"+s"``) and ``is``/``are`` from the
   region's total count;
3. caption = existence + ``" "`` + distribution sentences joined by ``" "``.

The official code draws templates with the unseeded module-level ``random``; here every caption takes a
``random.Random`` (e.g. :func:`caption_rng` seeded by run seed and image id), in the same draw order (existence
template first, then one per non-empty region), so captions are reproducible and independent of evaluation order.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

EXISTENCE_TEMPLATES = (
    "It contains {}.",
    "The image includes {}.",
    "There are {} in the image.",
    "This image features {}.",
    "This picture shows {}.",
)

# {0[0]}: object names, {0[1]}: region, {0[2]}: is/are
DISTRIBUTION_TEMPLATES = (
    "The {0[1]} region contains {0[0]}.",
    "{0[0]} {0[2]} distributed in the {0[1]}.",
    "There {0[2]} {0[0]} in the {0[1]}.",
    "The {0[1]} region has {0[0]}.",
    "{0[0]} {0[2]} observed in the {0[1]}.",
    "In the {0[1]}, {0[0]} {0[2]} present.",
)

REGION_NAMES = {
    4: (("upper left", "upper right"), ("lower left", "lower right")),
    9: (
        ("upper left", "upper center", "upper right"),
        ("middle left", "center", "middle right"),
        ("lower left", "lower center", "lower right"),
    ),
}


def caption_rng(seed: int, image_id: object) -> random.Random:
    """A generator seeded by ``(seed, image_id)``; string seeding is stable across processes (no hash salt)."""
    return random.Random(f"{int(seed)}:{image_id}")


def existence_sentence(names: Sequence[str], rng: random.Random) -> str:
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    parts = []
    for name, count in counts.items():
        if count >= 5:
            parts.append(f"many {name}s")
        else:
            parts.append(f"{count} {name}s" if count > 1 else name)
    return rng.choice(EXISTENCE_TEMPLATES).format(", ".join(parts))


def _region_of(box: Sequence[float], width: int, height: int, split: int) -> tuple[int, int]:
    center_x = (box[0] + box[2]) / 2
    center_y = (box[1] + box[3]) / 2
    row = int(center_y // (height / split))
    col = int(center_x // (width / split))
    if not (0 <= row < split and 0 <= col < split):
        raise ValueError(f"box {list(box)} has its centre outside the {width}x{height} image")
    return row, col


def distribution_sentences(
    objects: Sequence[tuple[str, Sequence[float]]], width: int, height: int, regions: int, rng: random.Random
) -> str:
    if regions not in REGION_NAMES:
        raise ValueError(f"regions must be 4 or 9, got {regions}")
    split = int(round(regions**0.5))
    grid = REGION_NAMES[regions]
    per_region: dict[str, dict[str, int]] = {name: {} for row in grid for name in row}
    for name, box in objects:
        row, col = _region_of(box, width, height, split)
        counts = per_region[grid[row][col]]
        counts[name] = counts.get(name, 0) + 1
    sentences = []
    for region, counts in per_region.items():
        if not counts:
            continue
        names = ", ".join(f"{name}s" if count > 1 else name for name, count in counts.items())
        verb = "are" if sum(counts.values()) > 1 else "is"
        sentences.append(rng.choice(DISTRIBUTION_TEMPLATES).format((names, region, verb)))
    return " ".join(sentences)


def rule_based_caption(
    boxes_by_class: Mapping[str, Sequence[Sequence[float]]],
    image_size: tuple[int, int],
    rng: random.Random,
    regions: int = 4,
) -> str:
    """``single_captioning``: ``{class: (N, >=4) boxes x1 y1 x2 y2}`` in class order, ``image_size = (H, W)``."""
    objects: list[tuple[str, Sequence[float]]] = []
    for name, boxes in boxes_by_class.items():
        for box in boxes:
            objects.append((name, [float(v) for v in box[:4]]))
    height, width = int(image_size[0]), int(image_size[1])
    first = existence_sentence([name for name, _ in objects], rng)
    return first + " " + distribution_sentences(objects, width, height, regions, rng)
