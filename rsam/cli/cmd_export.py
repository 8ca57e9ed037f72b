"""``rsam export``: any weights rsam reads (Lightning ``.ckpt``, DeepSpeed folder, official ``.pth``) ->
``model.safetensors`` + ``config.json``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export",
        help="export a training checkpoint for the predictor",
        description="Writes DIR/model.safetensors + DIR/config.json, the format of `rsam convert`, which "
        "`rsam segment` and rsam.predict.Predictor load. A DeepSpeed checkpoint folder is merged to fp32 first; "
        "anything that is not a RemoteSAM checkpoint is refused in one line naming the file.",
    )
    parser.add_argument("checkpoint", help="Lightning .ckpt of rsam fit, DeepSpeed checkpoint folder, official .pth")
    parser.add_argument("--out", required=True, help="output folder")
    return parser


def run(args) -> int:
    from rsam.checkpoint import load_model, save_pretrained

    source = Path(args.checkpoint)
    if not source.exists():
        raise FileNotFoundError(f"checkpoint {source} not found")
    model = load_model(source)  # the one loader: a DeepSpeed checkpoint folder is merged to fp32 first
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
