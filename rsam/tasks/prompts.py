"""Class-name conventions and prompts of the official evaluation code (spec `remotesam.md` §3.10).

The official scripts prompt with *concatenated DIOR-style names* (``baseballfield``, ``storagetank``, ...) and map each
dataset's own spelling onto them (``data/datasets/*.py`` ``convert_name`` tables). The prompt is
``f"{name} in the image"`` (``tasks/code/model.py::semantic_seg``); the iSAID SEG script appends a period
(``tasks/code/eval/SEG.py::get_sent_embedding``), available here as :data:`SEG_EVAL_TEMPLATE`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

PROMPT_TEMPLATE = "{} in the image"
SEG_EVAL_TEMPLATE = "{} in the image."

DIOR_CLASSES = (
    "airplane",
    "airport",
    "baseballfield",
    "basketballcourt",
    "bridge",
    "chimney",
    "dam",
    "expressway-service-area",
    "expressway-toll-station",
    "golffield",
    "groundtrackfield",
    "harbor",
    "overpass",
    "ship",
    "stadium",
    "storagetank",
    "tenniscourt",
    "trainstation",
    "vehicle",
    "windmill",
)  # data/datasets/DET.py::DIOR_DET (COCO category id = index + 1), MLC.py::DIOR_MLC

DOTA_V2_CLASSES = (
    "airplane",
    "ship",
    "storagetank",
    "baseballfield",
    "tenniscourt",
    "basketballcourt",
    "groundtrackfield",
    "harbor",
    "bridge",
    "large-vehicle",
    "small-vehicle",
    "helicopter",
    "roundabout",
    "soccer-ball-field",
    "swimming-pool",
    "container-crane",
    "airport",
    "helipad",
)  # data/datasets/DET.py::DOTAv2_DET

DOTA_V1_CLASSES = DOTA_V2_CLASSES[:15]  # DOTA v1.0 categories in the unified spelling

ISAID_CLASSES = (
    "ship",
    "storagetank",
    "baseballfield",
    "tenniscourt",
    "basketballcourt",
    "groundtrackfield",
    "bridge",
    "large-vehicle",
    "small-vehicle",
    "helicopter",
    "swimming-pool",
    "roundabout",
    "soccer-ball-field",
    "airplane",
    "harbor",
)  # tasks/code/eval/SEG.py cat_dictionary order; label index = position + 1, 0 = background

UCM_SCENE_CLASSES = (
    "agricultural",
    "airplane",
    "baseballfield",
    "beach",
    "buildings",
    "chaparral",
    "denseresidential",
    "forest",
    "freeway",
    "golffield",
    "harbor",
    "intersection",
    "mediumresidential",
    "mobilehomepark",
    "overpass",
    "parkinglot",
    "river",
    "runway",
    "sparseresidential",
    "storagetank",
    "tenniscourt",
)  # data/datasets/MCC.py::UCM_MCC

AID_SCENE_CLASSES = (
    "airport",
    "bareland",
    "baseballfield",
    "beach",
    "bridge",
    "center",
    "church",
    "commercial",
    "denseresidential",
    "desert",
    "farmland",
    "forest",
    "industrial",
    "meadow",
    "mediumresidential",
    "mountain",
    "park",
    "parking",
    "playground",
    "pond",
    "port",
    "railwaystation",
    "resort",
    "river",
    "school",
    "sparseresidential",
    "square",
    "stadium",
    "storagetank",
    "viaduct",
)  # data/datasets/MCC.py::AID_MCC

UCM_CAPTION_CLASSES = (
    "road",
    "highway",
    "bank",
    "tenniscourt",
    "roof",
    "vehicle",
    "parking lot",
    "airplane",
    "stand",
    "farmland",
    "waste land",
    "basketballcourt",
    "storagetank",
    "pedestrian",
    "villa",
    "beach",
    "boat",
    "tree",
    "grass",
    "water",
    "trail",
    "park",
    "bush",
    "golffield",
    "house",
    "airport",
    "people",
    "overpass",
    "baseballfield",
    "swimming-pool",
    "bunker",
    "building",
    "harbor",
    "residential",
    "sand",
    "stadium",
    "intersection",
)  # data/datasets/CAP.py::UCM_CAP "potential classes"

POTSDAM_CLASSES = ("impervious surfaces", "building", "low vegetation", "tree", "car", "clutter")
LOVEDA_CLASSES = ("background", "building", "road", "water", "barren", "forest", "agricultural")

# Dataset spellings -> unified prompt names (union of the official convert_name tables; lookups are case-insensitive).
CLASS_ALIASES: dict[str, str] = {
    "plane": "airplane",
    "storage-tank": "storagetank",
    "storage tank": "storagetank",
    "storagetanks": "storagetank",
    "baseball-diamond": "baseballfield",
    "baseball diamond": "baseballfield",
    "baseballdiamond": "baseballfield",
    "baseball field": "baseballfield",
    "tennis-court": "tenniscourt",
    "tennis court": "tenniscourt",
    "basketball-court": "basketballcourt",
    "basketball court": "basketballcourt",
    "ground-track-field": "groundtrackfield",
    "ground track field": "groundtrackfield",
    "golf field": "golffield",
    "golfcourse": "golffield",
    "railway station": "trainstation",
    "expressway service area": "expressway-service-area",
    "expressway toll station": "expressway-toll-station",
    "soccer ball field": "soccer-ball-field",
    "swimming pool": "swimming-pool",
    "crane": "container-crane",
    "large vehicle": "large-vehicle",
    "small vehicle": "small-vehicle",
}

# Counting prior areas (px^2 in the original image), data/datasets/CNT.py; boxes with area <= 0.8 * prior are dropped.
DIOR_COUNT_PRIORS: dict[str, float] = {
    "airplane": 36,
    "airport": 1824,
    "baseballfield": 20,
    "basketballcourt": 88,
    "bridge": 9,
    "chimney": 12,
    "dam": 264,
    "expressway-service-area": 110,
    "expressway-toll-station": 36,
    "golffield": 2728,
    "groundtrackfield": 132,
    "harbor": 24,
    "overpass": 9,
    "ship": 14,
    "stadium": 255,
    "storagetank": 4,
    "tenniscourt": 36,
    "trainstation": 1170,
    "vehicle": 6,
    "windmill": 27,
}
DOTA_COUNT_PRIORS: dict[str, float] = {
    "airplane": 35,
    "ship": 15,
    "storagetank": 8,
    "baseballfield": 81,
    "tenniscourt": 153,
    "basketballcourt": 576,
    "groundtrackfield": 210,
    "harbor": 64,
    "bridge": 24,
    "vehicle": 21,
    "helicopter": 162,
    "roundabout": 16,
    "soccer-ball-field": 72,
    "swimming-pool": 20,
    "container-crane": 187,
    "airport": 1337,
    "helipad": 121,
}


def canonical_class_name(name: str, aliases: Mapping[str, str] = CLASS_ALIASES) -> str:
    """Map a dataset's spelling (``"storage-tank"``, ``"Baseball field"``, ``"Storage_Tank"``) to the official prompt
    name: underscores become spaces, whitespace is collapsed, case is folded, then :data:`CLASS_ALIASES` applies."""
    key = " ".join(name.replace("_", " ").split()).lower()
    return aliases.get(key, key)


def class_prompts(class_names: Iterable[str], template: str = PROMPT_TEMPLATE) -> list[str]:
    """One prompt per class: ``"{class} in the image"`` (model.py::semantic_seg)."""
    if "{}" not in template:
        raise ValueError(f"prompt template must contain '{{}}': {template!r}")
    return [template.format(name) for name in class_names]


def check_class_list(names: Sequence[str], *, what: str = "class list") -> tuple[str, ...]:
    """Validate a class list: non-empty, strings, no duplicates. Returns it as a tuple."""
    names = tuple(names)
    if not names:
        raise ValueError(f"{what} is empty")
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{what} holds an invalid class name: {name!r}")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{what} names class {name!r} twice")
        seen.add(name)
    return names
