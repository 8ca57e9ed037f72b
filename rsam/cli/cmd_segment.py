"""``rsam segment``: referring segmentation of one image with one or more expressions, written as PNG overlays."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "segment",
        help="segment what expressions refer to in an image; write PNG overlays",
        description="Runs the model on IMAGE once per expression (batched), with the official post-processing, and "
        "writes OUT/<i>_<expression>.png overlays plus OUT/<i>_<expression>_mask.png.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="rsam model folder (config.json + model.safetensors) or official .pth")
    source.add_argument(
        "--golden",
        nargs=2,
        metavar=("CONFIG_JSON", "WEIGHTS"),
        help="a golden set's config and int8x2^-e weights (shared/reference format)",
    )
    parser.add_argument("--image", required=True, help="image file (any format Pillow reads)")
    parser.add_argument("--text", action="append", required=True, help="expression (repeat for several)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--chunk-size", type=int, default=4, help="prompts per forward")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16: autocast (faster)")
    return parser


def _load(args):
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


def run(args) -> int:
    import re

    from rsam.predict import Predictor
    from rsam.preprocess import to_rgb_uint8
    from rsam.visualize import captioned, overlay_mask, save_png

    model = _load(args)
    rgb = to_rgb_uint8(args.image)
    predictor = Predictor(
        model, chunk_size=args.chunk_size, unknown_out_of_vocab=bool(args.golden), precision=args.precision
    )
    start = time.perf_counter()
    predictions = predictor.predict(rgb, args.text)
    seconds = time.perf_counter() - start
    out = Path(args.out)
    for i, pred in enumerate(predictions):
        stem = f"{i:02d}_" + re.sub(r"[^A-Za-z0-9]+", "_", pred.expression).strip("_")[:60]
        save_png(captioned(overlay_mask(rgb, pred.mask), pred.expression), out / f"{stem}.png")
        save_png(pred.mask * 255, out / f"{stem}_mask.png")
        print(
            json.dumps(
                {
                    "expression": pred.expression,
                    "overlay": str(out / f"{stem}.png"),
                    "foreground_fraction": round(float(pred.mask.mean()), 4),
                    "max_prob": round(float(pred.prob.max()), 4),
                }
            )
        )
    print(
        json.dumps(
            {
                "image": str(args.image),
                "image_hw": list(rgb.shape[:2]),
                "expressions": len(predictions),
                "seconds": round(seconds, 2),
            }
        )
    )
    return 0
