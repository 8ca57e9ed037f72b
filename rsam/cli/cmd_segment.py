"""``rsam segment``: referring segmentation of images and GeoTIFF scenes of any size.

* Raster mode (a GeoTIFF or any raster, ``-o OUT.tif`` or several scenes into ``-o DIR``): windowed reads, tiles of
  the model's input size (``--tile``, ``--overlap``, optional ``--gsd``), probabilities blended across overlaps,
  output GeoTIFF written window by window with the input's transform, CRS and a nodata value; ``--vectors`` writes
  polygons (GPKG / GeoJSON) in the raster's CRS, ``--instances`` one per object. ``--devices N`` runs the tiles as a
  Lightning predict over N devices (each rank writes its own tiles; a re-run resumes).
* Overlay mode (one plain PNG/JPEG with ``-o DIR``): one forward at the model size, as before, writing
  ``DIR/<i>_<expression>_<hash>.png`` overlays and ``..._mask.png`` masks (names unique per prompt).

Scaling (one rule for files, arrays and GeoTIFFs, :mod:`rsam.geo.scaling`): uint8 data is used as is; other data
types need ``--scale FACTOR`` or ``--stretch LOW,HIGH`` (percentiles, computed once per scene).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
from pathlib import Path

from rsam.cli._lightning import MODEL_HELP

log = logging.getLogger(__name__)

RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".jp2", ".img"}
PLAIN_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The weights flag every inference command shares."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", metavar="PATH_OR_NAME", help=MODEL_HELP)
    source.add_argument(
        "--golden",
        nargs=2,
        metavar=("CONFIG_JSON", "WEIGHTS"),
        help="a golden set's config and int8x2^-e weights (shared/reference format)",
    )


def _chunk_size(value: str):
    if value == "auto":
        return value
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"a number of prompts >= 1 or 'auto', got {value!r}")
    return int(value)


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """Band choice and the scaling rule (shared by segment / detect / ground / count)."""
    parser.add_argument("--bands", help="three 1-based band numbers read as R,G,B, e.g. 4,3,2 (default 1,2,3)")
    scaling = parser.add_mutually_exclusive_group()
    scaling.add_argument("--scale", type=float, help="map non-uint8 values to 0..255 as value * SCALE (e.g. 255)")
    scaling.add_argument(
        "--stretch", help="map values to 0..255 by per-band LOW,HIGH percentiles computed once per scene, e.g. 2,98"
    )
    parser.add_argument("--gsd", type=float, help="resample the scene to this ground resolution (CRS units / pixel)")
    parser.add_argument("--device", default="cpu", help="torch device for the single-process path (default cpu)")
    parser.add_argument(
        "--chunk-size", type=_chunk_size, default="auto", help="prompts per forward, or auto (measured; default)"
    )
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16: autocast (faster)")


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "segment",
        help="segment what expressions refer to in images or GeoTIFF scenes",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(parser)
    parser.add_argument("images", nargs="*", metavar="SCENE", help="GeoTIFF scenes or images")
    parser.add_argument("--image", action="append", default=[], help=argparse.SUPPRESS)  # old spelling
    parser.add_argument("--prompt", "--text", dest="prompts", action="append", required=True, help="expression")
    parser.add_argument("-o", "--out", required=True, help="OUT.tif (one scene), or a folder")
    parser.add_argument("--vectors", help="OUT.gpkg / OUT.geojson (or a folder for several scenes)")
    parser.add_argument("--instances", action="store_true", help="one polygon per object (M2B rules, across seams)")
    parser.add_argument("--classes", action="store_true", help="write one class map band (higher index wins)")
    parser.add_argument("--float32", action="store_true", help="probabilities as float32 (default uint8 0..254)")
    parser.add_argument("--cog", action="store_true", help="write a Cloud-Optimized GeoTIFF (with overviews)")
    parser.add_argument("--tile", type=int, help="tile side in pixels (default: the model's input size)")
    parser.add_argument("--overlap", type=int, help="tile overlap in pixels (default: 200 px per 896, the DOTA rule)")
    parser.add_argument("--blend", default="cosine", choices=["cosine", "linear", "center"], help="seam blending")
    parser.add_argument("--devices", type=int, default=0, help="run as a Lightning predict over N devices")
    parser.add_argument("--accelerator", default="cpu", help="Lightning accelerator for --devices (cpu, gpu, auto)")
    parser.add_argument("--num-nodes", type=int, default=1, help="nodes for --devices (Slurm)")
    parser.add_argument("--batch-size", type=int, default=2, help="tiles per predict batch (--devices)")
    parser.add_argument("--keep-parts", action="store_true", help="keep the per-tile part files (--devices)")
    add_input_arguments(parser)
    return parser


# ---- shared by the inference commands ------------------------------------------------------------------------------
def load_weights(args):
    """The one place inference commands turn ``--model`` / ``--golden`` into an eval-mode model."""
    from rsam.checkpoint import load_model
    from rsam.checkpoint.golden import load_golden_config, load_golden_weights
    from rsam.checkpoint.official import load_strict
    from rsam.models import build_model

    if args.model:
        return load_model(args.model)
    config, weights = args.golden
    model = build_model(load_golden_config(config))
    load_strict(model, load_golden_weights(weights), weights)
    return model.eval()


def build_predictor(args, model):
    from rsam.predict import Predictor

    return Predictor(
        model,
        device=args.device,
        chunk_size=args.chunk_size,
        unknown_out_of_vocab=bool(args.golden),
        precision=args.precision,
    )


def check_prompts(prompts: list[str]) -> list[str]:
    for text in prompts:
        if not text or not text.strip():
            raise ValueError("empty --prompt: every prompt needs some text")
    return list(prompts)


def open_scene(path: str, args):
    from rsam.geo.raster import Scene, parse_bands
    from rsam.geo.scaling import parse_stretch

    return Scene(
        path, bands=parse_bands(args.bands), scale=args.scale, stretch=parse_stretch(args.stretch), gsd=args.gsd
    )


def tile_size(args, model) -> tuple[int, int]:
    tile = args.tile or int(model.config.image_size[0])
    overlap = args.overlap if args.overlap is not None else int(round(tile * 200 / 896))
    return tile, overlap


def output_stem(index: int, text: str) -> str:
    """A file stem unique per prompt: index, readable slug and a hash of the exact text."""
    slug = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:60] or "prompt"
    return f"{index:02d}_{slug}_{hashlib.sha1(text.encode()).hexdigest()[:8]}"


# ---- modes ---------------------------------------------------------------------------------------------------------
def _overlays(args, image: str) -> int:
    from rsam.geo.tiling import Tile
    from rsam.visualize import captioned, overlay_mask, save_png

    model = load_weights(args)
    predictor = build_predictor(args, model)
    with open_scene(image, args) as scene:
        if scene.width * scene.height > 8192 * 8192:
            raise ValueError(
                f"{image}: {scene.width}x{scene.height} is too large for a single forward; use the tiled raster "
                "path: -o OUT.tif"
            )
        pixels = scene.read(Tile(0, 0, 0, 0, max(scene.width, scene.height)).window)
        rgb = pixels.rgb[:, : scene.height, : scene.width].transpose(1, 2, 0).copy()
        rule = scene.rule.describe()
    predictions = predictor.predict(rgb, args.prompts)
    out = Path(args.out)
    for i, pred in enumerate(predictions):
        stem = output_stem(i, pred.expression)
        save_png(captioned(overlay_mask(rgb, pred.mask), pred.expression), out / f"{stem}.png")
        save_png(pred.mask * 255, out / f"{stem}_mask.png")
        print(
            json.dumps(
                {
                    "expression": pred.expression,
                    "overlay": str(out / f"{stem}.png"),
                    "mask": str(out / f"{stem}_mask.png"),
                    "foreground_fraction": round(float(pred.mask.mean()), 4),
                    "max_prob": round(float(pred.prob.max()), 4),
                }
            )
        )
    print(
        json.dumps({"image": image, "image_hw": list(rgb.shape[:2]), "expressions": len(predictions), "scaling": rule})
    )
    return 0


def scene_outputs(args, images: list[str]) -> list[tuple[str, Path, Path | None]]:
    """(scene, raster output, vector output) per scene."""
    out = Path(args.out)
    single = len(images) == 1 and out.suffix.lower() in {".tif", ".tiff"}
    if not single and out.suffix.lower() in {".tif", ".tiff"}:
        raise ValueError(f"-o {out}: several scenes need an output folder")
    result = []
    stems = set()
    for image in images:
        stem = Path(image).stem
        if stem in stems:
            raise ValueError(f"two scenes named {stem!r}: their outputs would collide in {out}")
        stems.add(stem)
        raster = out if single else out / f"{stem}.tif"
        if raster.resolve() == Path(image).resolve():
            raise ValueError(f"-o {raster} is the input scene {image}: choose another output path")
        vectors = None
        if args.vectors:
            v = Path(args.vectors)
            vectors = v if (single and v.suffix) else v / f"{stem}.gpkg"
        result.append((image, raster, vectors))
    return result


def _rasters(args, images: list[str]) -> int:
    from rsam.geo.pipeline import ModelTileRunner, SegmentOptions, predictor_tile_fn, segment_scene

    jobs = scene_outputs(args, images)
    for image, _, _ in jobs:  # bad input fails here, before the model is loaded
        open_scene(image, args).close()
    model = load_weights(args)
    tile, overlap = tile_size(args, model)
    options = SegmentOptions(
        tile=tile,
        overlap=overlap,
        blend=args.blend,
        kind="classes" if args.classes else ("float32" if args.float32 else "uint8"),
        cog=args.cog,
    )
    if args.devices and args.devices > 0:
        from rsam.lit.geo import run_geo_predict

        summary = run_geo_predict(args, model, jobs, options)
        if summary is not None:
            print(json.dumps(summary))
        return 0
    predictor = build_predictor(args, model)
    fn = predictor_tile_fn(predictor, args.prompts)
    for image, raster, vectors in jobs:
        with open_scene(image, args) as scene:
            runner = ModelTileRunner(scene, fn, len(args.prompts))
            summary = segment_scene(
                scene, runner, args.prompts, raster, options, vectors=vectors, instances=args.instances
            )
        print(json.dumps({**summary, "prompts": args.prompts, "tile": tile, "overlap": overlap}))
    return 0


def run(args) -> int:
    images = list(args.images) + list(args.image)
    if not images:
        raise ValueError("no input: give one or more SCENE files")
    check_prompts(args.prompts)
    for image in images:
        if not Path(image).is_file():
            raise FileNotFoundError(f"image not found: {image}")
    out = Path(args.out)
    overlay = (
        len(images) == 1
        and Path(images[0]).suffix.lower() in PLAIN_SUFFIXES
        and out.suffix.lower() not in {".tif", ".tiff"}
        and not args.vectors
        and not args.devices
    )
    if overlay:
        return _overlays(args, images[0])
    return _rasters(args, images)
