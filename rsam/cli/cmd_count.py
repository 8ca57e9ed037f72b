"""``rsam count``: object counts on images and GeoTIFF scenes of any size: the boxes of ``rsam detect`` (official
tiling, M2B, merge), optionally filtered by the official prior-area rule (``--prior-area``, px^2: boxes with area
``<= 0.8 x prior`` are not counted)."""

from __future__ import annotations

import argparse
import json

from rsam.cli.cmd_detect import add_scene_arguments, scene_and_fn


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("count", help="count objects in an image or scene", description=__doc__)
    add_scene_arguments(parser)
    parser.add_argument("--prior-area", type=float, help="prior object area in px^2 (official CNT filter)")
    return parser


def run(args) -> int:
    from rsam.geo.detection import detect_scene
    from rsam.tasks.counting import filter_by_prior_area

    scene, fn, _ = scene_and_fn(args)
    with scene:
        results, stats = detect_scene(scene, fn, args.prompts, patch=args.tile, overlap=args.overlap)
    counts = {name: len(filter_by_prior_area(boxes, args.prior_area)) for name, boxes in results.items()}
    print(json.dumps({"scene": args.scene, "counts": counts, "prior_area": args.prior_area, **stats}))
    return 0
