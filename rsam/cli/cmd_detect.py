"""``rsam detect``: task-heads-free detection on images and GeoTIFF scenes of any size (the official DOTA tiling
and merge), boxes in map and pixel coordinates."""

from __future__ import annotations

import argparse
import json

from rsam.cli.cmd_segment import add_input_arguments, add_model_arguments


def add_scene_arguments(parser: argparse.ArgumentParser, *, patch: bool = True) -> None:
    add_model_arguments(parser)
    parser.add_argument("scene", metavar="SCENE", help="GeoTIFF scene or image")
    parser.add_argument("--prompt", "--text", dest="prompts", action="append", required=True, help="class prompt")
    if patch:
        parser.add_argument("--tile", type=int, default=896, help="patch side (official: 896)")
        parser.add_argument("--overlap", type=int, default=200, help="patch overlap (official: 200)")
    add_input_arguments(parser)


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("detect", help="detect objects in an image or scene (DOTA tiling + merge)",
                                   description=__doc__)  # fmt: skip
    add_scene_arguments(parser)
    parser.add_argument("--obb", action="store_true", help="oriented boxes (default horizontal)")
    parser.add_argument("--format", default="geojson", choices=["geojson", "coco", "dota"], help="output format")
    parser.add_argument("-o", "--out", required=True, help="OUT.geojson, OUT.json (coco) or a folder (dota)")
    return parser


def scene_and_fn(args):
    """(open scene, tile function, model) shared by detect / ground / count; bad input fails before the model loads."""
    from rsam.cli.cmd_segment import build_predictor, check_prompts, load_weights, open_scene
    from rsam.geo.pipeline import predictor_tile_fn

    check_prompts(args.prompts)
    scene = open_scene(args.scene, args)
    try:
        model = load_weights(args)
        fn = predictor_tile_fn(build_predictor(args, model), args.prompts)
    except BaseException:
        scene.close()
        raise
    return scene, fn, model


def run(args) -> int:
    from rsam.geo.detection import detect_scene, write_detections

    scene, fn, _ = scene_and_fn(args)
    with scene:
        results, stats = detect_scene(
            scene, fn, args.prompts, patch=args.tile, overlap=args.overlap, box_type="obb" if args.obb else "hbb"
        )
        out = write_detections(args.out, args.format, results, scene)
    counts = {name: len(boxes) for name, boxes in results.items()}
    print(json.dumps({"scene": args.scene, "out": str(out), "format": args.format, "boxes": counts, **stats}))
    return 0
