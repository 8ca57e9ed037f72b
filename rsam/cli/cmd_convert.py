"""``rsam convert``: official ``RemoteSAMv1.pth`` -> ``model.safetensors`` + ``config.json``."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "convert",
        help="convert an official RemoteSAM .pth checkpoint to safetensors + config.json",
        description="Reads the official pickle with weights-only loading (no code can run), checks every key strictly "
        "(only the BERT pooler keys and a 'module.' prefix are dropped), infers the architecture from "
        "tensor shapes and the checkpoint's args, and writes DIR/model.safetensors + DIR/config.json.",
    )
    parser.add_argument(
        "checkpoint", help="official .pth file (or any weights rsam reads: Lightning .ckpt, DeepSpeed folder)"
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--config", default=None, help="explicit rsam config.json for what shapes cannot tell (PWAM / BERT head counts)"
    )
    return parser


def run(args) -> int:
    from rsam.checkpoint import open_model, save_pretrained
    from rsam.models import RemoteSAMConfig

    explicit = RemoteSAMConfig.load(args.config) if args.config else None
    loaded = open_model(args.checkpoint, config=explicit)
    model, cfg, info = loaded.model, loaded.model.config, loaded.info
    out = save_pretrained(model, args.out, {"source": str(args.checkpoint)})
    summary = {
        "out": str(out),
        "tensors": len(model.state_dict()),
        "parameters": sum(p.numel() for p in model.parameters()),
        "epoch": info.get("epoch"),
        "config": cfg.to_dict(),
    }
    print(json.dumps(summary))
    return 0
