"""Task-heads-free detection, counting and grounding on scenes of any size, read window by window.

Detection follows the official large-image protocol (``rsam.tasks.tiling``: DOTA devkit ``ImgSplit`` patches of 896 px
with 200 px overlap, M2B + NMS per patch, the devkit's ``ResultMerge`` NMS at 0.3 across patches), with two
additions for rasters: probabilities on nodata pixels are set to 0 (no box comes from nodata), and patches without a
valid pixel are not run. Boxes come out in pixel coordinates of the scene and, through its affine transform, in map
coordinates. Grounding is the union box of every component of the blended scene-wide mask (``RemoteSAM.
visual_grounding``'s rule: M2B boxes, then their union), computed with the seam-merged instances of
:mod:`rsam.geo.instances`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyogrio.raw
import shapely
import shapely.affinity
from rasterio.windows import Window
from tqdm import tqdm

from rsam.tasks.m2b import Boxes, detect
from rsam.tasks.maps import as_prob_stack, resize_nearest
from rsam.tasks.tiling import PATCH_OVERLAP, PATCH_SIZE, merge_patch_boxes, patch_origins


def detect_scene(
    scene,
    tile_fn,
    prompts: Sequence[str],
    *,
    patch: int = PATCH_SIZE,
    overlap: int = PATCH_OVERLAP,
    box_type: str = "hbb",
) -> tuple[dict[str, Boxes], dict]:
    """``{prompt: merged Boxes}`` in scene pixel coordinates, and counts of patches run / skipped."""
    prompts = list(prompts)
    per_class: dict[str, list] = {p: [] for p in prompts}
    xs, ys = patch_origins(scene.width, patch, overlap), patch_origins(scene.height, patch, overlap)
    stats = {"patches": len(xs) * len(ys), "empty_patches": 0}
    with tqdm(total=stats["patches"], desc="patches", unit="patch", disable=None) as bar:
        for x in xs:  # the devkit's order (x outer), so the merge breaks score ties the same way
            for y in ys:
                bar.update(1)
                pixels = scene.read(Window(x, y, patch, patch))
                if not pixels.valid.any():
                    stats["empty_patches"] += 1
                    continue
                probs = as_prob_stack(tile_fn(np.ascontiguousarray(pixels.rgb.transpose(1, 2, 0))))
                h, w = min(patch, scene.height - y), min(patch, scene.width - x)
                probs = resize_nearest(probs, (patch, patch))[:, :h, :w] * pixels.valid[None, :h, :w]
                found = detect(probs, prompts, box_type=box_type)
                for name in prompts:
                    per_class[name].append((x, y, found[name]))
    return {
        name: merge_patch_boxes(items) if items else Boxes.empty(box_type) for name, items in per_class.items()
    }, stats


def box_polygons(boxes: Boxes) -> list:
    """Pixel-coordinate polygons of boxes (hbb: the rectangle's 4 corners; obb: its 4 corner points)."""
    if boxes.box_type == "hbb":
        return [shapely.box(*c) for c in boxes.coords]
    return [shapely.Polygon(np.asarray(c).reshape(4, 2)) for c in boxes.coords]


def to_map(geometry, transform):
    t = transform
    return shapely.affinity.affine_transform(geometry, [t.a, t.b, t.d, t.e, t.c, t.f])


def write_detections(path: str | Path, fmt: str, results: dict[str, Boxes], scene) -> Path:
    """``geojson``: one polygon feature per box in map coordinates (pixel coordinates as attributes);
    ``coco``: a COCO results file in pixel coordinates (``bbox`` = x, y, w, h; obb corners as ``segmentation``);
    ``dota``: DOTA Task1 (obb) / Task2 (hbb) result files, one per class, in pixel coordinates."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(results)
    image_id = scene.path.stem
    if fmt == "geojson":
        rows = [
            (name, score, poly)
            for name in names
            for score, poly in zip(results[name].scores, box_polygons(results[name]))
        ]
        if path.exists():
            path.unlink()
        geoms = [to_map(poly, scene.transform) for _, _, poly in rows]
        pyogrio.raw.write(
            str(path),
            geometry=np.asarray(shapely.to_wkb(geoms), dtype=object) if geoms else np.asarray([], dtype=object),
            field_data=[
                np.asarray([r[0] for r in rows], object),
                np.asarray([float(r[1]) for r in rows], np.float64),
                np.asarray(
                    [" ".join(f"{v:.2f}" for xy in r[2].exterior.coords[:-1] for v in xy) for r in rows],
                    object,
                ),
            ],
            fields=["prompt", "score", "pixel_corners"],
            crs=scene.crs.to_wkt() if scene.crs is not None else None,
            geometry_type="Polygon",
            driver="GeoJSON",
        )
        return path
    if fmt == "coco":
        annotations = []
        for k, name in enumerate(names):
            boxes = results[name]
            for coords, score, hbb in zip(boxes.coords, boxes.scores, boxes.as_hbb()):
                bbox = [float(hbb[0]), float(hbb[1]), float(hbb[2] - hbb[0]), float(hbb[3] - hbb[1])]
                item = {"image_id": image_id, "category_id": k + 1, "score": round(float(score), 6), "bbox": bbox}
                if boxes.box_type == "obb":
                    item["segmentation"] = [[float(v) for v in coords]]
                annotations.append(item)
        document = {
            "images": [{"id": image_id, "file_name": scene.path.name, "width": scene.width, "height": scene.height}],
            "categories": [{"id": k + 1, "name": name} for k, name in enumerate(names)],
            "annotations": annotations,
        }
        path.write_text(json.dumps(document))
        return path
    if fmt == "dota":
        path.mkdir(parents=True, exist_ok=True)
        for name in names:
            boxes = results[name]
            task = "Task1" if boxes.box_type == "obb" else "Task2"
            slug = "".join(ch if ch.isalnum() else "-" for ch in name)
            lines = [
                f"{image_id} {float(s):.6f} " + " ".join(f"{float(v):.1f}" for v in c)
                for c, s in zip(boxes.coords, boxes.scores)
            ]
            (path / f"{task}_{slug}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
        return path
    raise ValueError(f"--format must be geojson, coco or dota, got {fmt!r}")
