"""``rsam ground``: visual grounding on images and GeoTIFF scenes of any size: one box per expression, the union
of the M2B boxes of the blended scene-wide mask (the official ``visual_grounding`` rule; components merged across
tile seams), in pixel and map coordinates."""

from __future__ import annotations

import argparse
import json

from rsam.cli.cmd_detect import add_scene_arguments, scene_and_fn


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("ground", help="one box per expression in an image or scene", description=__doc__)
    add_scene_arguments(parser, patch=False)
    parser.add_argument("--tile", type=int, help="tile side (default: the model's input size)")
    parser.add_argument("--overlap", type=int, help="tile overlap (default: 200 px per 896)")
    parser.add_argument("--blend", default="cosine", choices=["cosine", "linear", "center"], help="seam blending")
    return parser


def run(args) -> int:
    from rsam.cli.cmd_segment import tile_size
    from rsam.geo.instances import InstanceCollector
    from rsam.geo.pipeline import ModelTileRunner
    from rsam.geo.tiling import TileGrid, blend_scene

    scene, fn, model = scene_and_fn(args)
    with scene:
        tile, overlap = tile_size(args, model)
        grid = TileGrid(scene.width, scene.height, tile, overlap)
        runner = ModelTileRunner(scene, fn, len(args.prompts))
        with InstanceCollector(args.prompts, scene.width, scene.height, scene.transform) as collector:
            blend_scene(scene.width, scene.height, grid, runner, len(args.prompts), collector, blend=args.blend)
            objects = collector.instances(m2b=False)
        transform, crs = scene.transform, scene.crs
    for prompt in args.prompts:
        boxes = [o.bbox_px for o in objects if o.prompt == prompt]
        if not boxes:
            print(json.dumps({"prompt": prompt, "box_px": None, "box_map": None}))
            continue
        x1, y1 = min(b[0] for b in boxes), min(b[1] for b in boxes)
        x2, y2 = max(b[2] for b in boxes), max(b[3] for b in boxes)
        (mx1, my1), (mx2, my2) = transform * (x1, y1), transform * (x2, y2)
        box_map = [min(mx1, mx2), min(my1, my2), max(mx1, mx2), max(my1, my2)]
        print(json.dumps({"prompt": prompt, "box_px": [x1, y1, x2, y2], "box_map": box_map,
                          "crs": crs.to_string() if crs else None}))  # fmt: skip
    return 0
