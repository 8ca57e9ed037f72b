"""``rsam export``: a Lightning (or DeepSpeed) checkpoint -> ``model.safetensors`` + ``config.json``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export",
        help="export a training checkpoint for the predictor",
        description="Writes DIR/model.safetensors + DIR/config.json, the format of `rsam convert`, which "
        "`rsam segment` and rsam.predict.Predictor load. A DeepSpeed checkpoint folder is first "
        "consolidated to fp32.",
    )
    parser.add_argument("checkpoint", help="Lightning .ckpt file (or a DeepSpeed checkpoint folder)")
    parser.add_argument("--out", required=True, help="output folder")
    return parser


def run(args) -> int:
    from rsam.checkpoint.pretrained import save_pretrained
    from rsam.lit.build import load_module

    source = Path(args.checkpoint)
    if not source.exists():
        raise FileNotFoundError(f"checkpoint {source} not found")
    model = load_module(source).model  # a DeepSpeed checkpoint folder is merged to one fp32 state dict first
    out = save_pretrained(model, args.out, {"source": str(args.checkpoint)})
    print(
        json.dumps(
            {
                "out": str(out),
                "tensors": len(model.state_dict()),
                "parameters": sum(p.numel() for p in model.parameters()),
            }
        )
    )
    return 0
