"""Rule-based referring expressions for the data engine (``rsam data from-coco``).

Every rule turns the instances of one category in one image into candidate expressions, each paired with the set
of instances it is *true of*. A candidate becomes a one-to-one triplet only when that set holds exactly one
instance; candidates true of several instances are ambiguous and dropped (and counted). The attribute types:

- ``count``: "the only {cat} in the image" (true of every instance when there is one);
- ``size``: "the largest/smallest of the {n} {cats}" (true of instances within ``SIZE_TIE`` of the extreme area);
- ``position``: "the leftmost/rightmost/topmost/bottommost {cat}" (centroid within ``EXTREME_TIE`` of the image
  side length from the extreme) and "the {cat} in the top left of the image" (3x3 grid cell of the centroid);
- ``colour``: "the {colour} {cat}" (dominant colour name of the instance's pixels, :func:`colour_name`);
- ``relation``: "the {cat} to the left of / right of / above / below the {anchor}" (box entirely on that side)
  and "the {cat} closest to the {anchor}", where the anchor is the only instance of another category.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

SIZE_TIE = 1.15  # areas within 15% of the extreme are a tie
EXTREME_TIE = 0.02  # centroids within 2% of the image side of the extreme are a tie
CLOSEST_TIE = 1.1  # distances within 10% of the closest are a tie
RULE_ORDER = ("count", "size", "position", "colour", "relation")

_GRID_ROWS = ("top", "middle", "bottom")
_GRID_COLS = ("left", "center", "right")


@dataclass(frozen=True)
class Instance:
    """One annotated object: id, category name, bool mask and facts derived from it."""

    ann_id: object
    category: str
    mask: np.ndarray
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive) of the mask
    area: int
    centroid: tuple[float, float]  # x, y
    colour: str

    @classmethod
    def from_mask(cls, ann_id: object, category: str, mask: np.ndarray, rgb: np.ndarray) -> Instance | None:
        ys, xs = np.nonzero(mask)
        if len(xs) == 0:
            return None
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        mean = rgb[ys, xs].reshape(-1, 3).mean(axis=0)
        return cls(ann_id, category, mask, box, int(len(xs)), (float(xs.mean()), float(ys.mean())), colour_name(mean))


@dataclass(frozen=True)
class Candidate:
    text: str
    rule: str
    targets: frozenset  # ann_ids the expression is true of


def colour_name(rgb_mean) -> str:
    """A basic colour name for a mean RGB (0..255): black/white/gray by value and saturation, else by hue."""
    red, green, blue = (float(value) / 255.0 for value in rgb_mean)
    hue, saturation, value = colorsys.rgb_to_hsv(red, green, blue)
    degrees = hue * 360.0
    if value < 0.2:
        return "black"
    if saturation < 0.15:
        return "white" if value > 0.8 else "gray"
    if degrees < 15 or degrees >= 330:
        return "brown" if value < 0.55 else "red"
    if degrees < 45:
        return "brown" if value < 0.65 else "orange"
    if degrees < 70:
        return "yellow"
    if degrees < 165:
        return "green"
    if degrees < 260:
        return "blue"
    return "purple"


def plural(noun: str) -> str:
    """Naive English plural of the last word ("tree" -> "trees", "bus" -> "buses", "city" -> "cities")."""
    head, _, last = noun.rpartition(" ")
    if last.endswith(("s", "x", "z", "ch", "sh")):
        last += "es"
    elif last.endswith("y") and len(last) > 1 and last[-2] not in "aeiou":
        last = last[:-1] + "ies"
    else:
        last += "s"
    return f"{head} {last}" if head else last


def _ids(instances) -> frozenset:
    return frozenset(instance.ann_id for instance in instances)


def _count_rule(category: str, group: list[Instance]) -> list[Candidate]:
    return [Candidate(f"the only {category} in the image", "count", _ids(group))] if len(group) == 1 else []


def _size_rule(category: str, group: list[Instance]) -> list[Candidate]:
    if len(group) < 2:
        return []
    areas = [instance.area for instance in group]
    largest = [i for i in group if i.area * SIZE_TIE >= max(areas)]
    smallest = [i for i in group if i.area <= min(areas) * SIZE_TIE]
    many = plural(category)
    return [
        Candidate(f"the largest of the {len(group)} {many}", "size", _ids(largest)),
        Candidate(f"the smallest of the {len(group)} {many}", "size", _ids(smallest)),
    ]


def _position_rule(category: str, group: list[Instance], width: int, height: int) -> list[Candidate]:
    candidates = []
    if len(group) >= 2:
        xs = [i.centroid[0] for i in group]
        ys = [i.centroid[1] for i in group]
        for word, values, side, pick in (
            ("leftmost", xs, width, min),
            ("rightmost", xs, width, max),
            ("topmost", ys, height, min),
            ("bottommost", ys, height, max),
        ):
            extreme = pick(values)
            true_of = [i for i, v in zip(group, values) if abs(v - extreme) <= EXTREME_TIE * side]
            candidates.append(Candidate(f"the {word} {category}", "position", _ids(true_of)))
    cells: dict[str, list[Instance]] = {}
    for instance in group:
        row = _GRID_ROWS[min(2, int(3 * instance.centroid[1] / height))]
        col = _GRID_COLS[min(2, int(3 * instance.centroid[0] / width))]
        cells.setdefault(_cell_phrase(row, col), []).append(instance)
    for phrase, members in sorted(cells.items()):
        candidates.append(Candidate(f"the {category} {phrase} of the image", "position", _ids(members)))
    return candidates


def _cell_phrase(row: str, col: str) -> str:
    if row == "middle" and col == "center":
        return "in the center"
    if row == "middle":
        return f"on the {col} side"
    if col == "center":
        return f"at the {row}"
    return f"in the {row} {col}"


def _colour_rule(category: str, group: list[Instance]) -> list[Candidate]:
    by_colour: dict[str, list[Instance]] = {}
    for instance in group:
        by_colour.setdefault(instance.colour, []).append(instance)
    return [
        Candidate(f"the {colour} {category}", "colour", _ids(members)) for colour, members in sorted(by_colour.items())
    ]


def _relation_rule(category: str, group: list[Instance], anchors: list[Instance]) -> list[Candidate]:
    candidates = []
    for anchor in anchors:
        ax0, ay0, ax1, ay1 = anchor.box
        sides = {
            "to the left of": [i for i in group if i.box[2] <= ax0],
            "to the right of": [i for i in group if i.box[0] >= ax1],
            "above": [i for i in group if i.box[3] <= ay0],
            "below": [i for i in group if i.box[1] >= ay1],
        }
        for relation, members in sides.items():
            if members:
                candidates.append(
                    Candidate(f"the {category} {relation} the {anchor.category}", "relation", _ids(members))
                )
        if len(group) >= 2:
            distances = [
                np.hypot(i.centroid[0] - anchor.centroid[0], i.centroid[1] - anchor.centroid[1]) for i in group
            ]
            closest = [i for i, d in zip(group, distances) if d <= min(distances) * CLOSEST_TIE]
            candidates.append(Candidate(f"the {category} closest to the {anchor.category}", "relation", _ids(closest)))
    return candidates


def candidate_expressions(
    category: str, group: list[Instance], others: list[Instance], width: int, height: int
) -> list[Candidate]:
    """All rule candidates for one category's instances, in :data:`RULE_ORDER` (ambiguous ones included)."""
    by_category: dict[str, list[Instance]] = {}
    for instance in others:
        by_category.setdefault(instance.category, []).append(instance)
    anchors = [members[0] for name, members in sorted(by_category.items()) if len(members) == 1 and name != category]
    return (
        _count_rule(category, group)
        + _size_rule(category, group)
        + _position_rule(category, group, width, height)
        + _colour_rule(category, group)
        + _relation_rule(category, group, anchors)
    )


def select_unique(candidates: list[Candidate], limit: int) -> tuple[list[Candidate], int, int]:
    """Unambiguous candidates (true of exactly one instance), at most ``limit``, taking rules in turn.

    Returns ``(kept, ambiguous, over_limit)``; a text that appears twice keeps its first occurrence.
    """
    seen, unique, ambiguous = set(), [], 0
    for candidate in candidates:
        if candidate.text in seen:
            continue
        seen.add(candidate.text)
        if len(candidate.targets) == 1:
            unique.append(candidate)
        else:
            ambiguous += 1
    by_rule = {rule: [c for c in unique if c.rule == rule] for rule in RULE_ORDER}
    kept = []
    while len(kept) < limit and any(by_rule.values()):
        for rule in RULE_ORDER:
            if by_rule[rule] and len(kept) < limit:
                kept.append(by_rule[rule].pop(0))
    return kept, ambiguous, len(unique) - len(kept)
