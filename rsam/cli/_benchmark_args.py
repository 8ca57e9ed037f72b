"""Arguments and runner of ``rsam test --benchmark NAME --data PATH --model PATH_OR_NAME [--out DIR]``.

``--ckpt`` is the deprecated spelling of ``--model`` (it still works, with a notice).

Wiring into ``rsam test`` (``cmd_test.py``)::

    add_benchmark_arguments(parser)                      # in register()
    if args.benchmark: return run_from_args(args)        # first line of run()

Options that the parser already has (``--no-wandb`` of the recipe commands) are reused, not added twice.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_OUT = "runs/benchmarks"


def _devices(text: str):
    """``2`` -> 2 devices; ``0,1`` -> those device indices; ``auto``."""
    if text == "auto":
        return text
    if "," in text:
        return [int(part) for part in text.split(",") if part.strip()]
    return int(text)


def _add(parser: argparse.ArgumentParser, *flags: str, **options) -> None:
    if not any(flag in parser._option_string_actions for flag in flags):
        parser.add_argument(*flags, **options)


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    from rsam.cli._lightning import DeprecatedAlias, add_model_argument

    group = parser.add_argument_group("benchmark evaluation (rsam test --benchmark)")
    group.add_argument(
        "--benchmark",
        default=None,
        metavar="NAME",
        help="registered benchmark (e.g. rrsisd, isaid-seg, dior-det, dota-v2-obb, dior-mlc)",
    )
    group.add_argument("--data", default=None, metavar="PATH", help="the benchmark's data folder")
    add_model_argument(group)
    group.add_argument(
        "--ckpt",
        dest="model",
        action=DeprecatedAlias,
        replacement="--model",
        metavar="CKPT",
        help="deprecated spelling of --model",
    )
    group.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help=f"folder for results.md / results.json and the wandb run (default {DEFAULT_OUT}/NAME)",
    )
    group.add_argument("--split", default=None, help="split to evaluate (default: the benchmark's own)")
    group.add_argument("--devices", type=_devices, default=1, help="number of devices, or indices like 0,1")
    group.add_argument("--accelerator", default="auto", choices=("auto", "cpu", "gpu", "cuda"))
    group.add_argument("--precision", default="32-true", help="Lightning precision, e.g. 32-true, bf16-mixed")
    group.add_argument(
        "--chunk-size",
        dest="chunk_size",
        type=int,
        default=8,
        help="prompts per forward pass (all prompts of an image run in chunks of this size)",
    )
    group.add_argument("--num-workers", dest="num_workers", type=int, default=2, help="image-loading workers per rank")
    group.add_argument("--limit", type=int, default=None, help="only the first N samples (smoke runs)")
    group.add_argument("--wandb-project", dest="wandb_project", default="rsam-benchmarks")
    _add(parser, "--no-wandb", dest="wandb", action="store_false", help="turn the wandb logger off")
    return parser


def run_from_args(args: argparse.Namespace) -> int:
    """Run the benchmark named by ``args``; prints one JSON summary line on rank 0; returns the exit code."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    from rsam.lit.benchmark import run_benchmark_test

    missing = [
        flag
        for flag, value in (("--benchmark", args.benchmark), ("--data", args.data), ("--model", args.model))
        if not value
    ]
    if missing:
        raise ValueError(f"benchmark evaluation needs {', '.join(missing)}")
    out = Path(args.out) if args.out else Path(DEFAULT_OUT) / args.benchmark
    payload = run_benchmark_test(
        args.benchmark,
        args.data,
        args.model,
        out,
        devices=args.devices,
        accelerator=args.accelerator,
        precision=args.precision,
        split=args.split,
        use_wandb=getattr(args, "wandb", True),
        wandb_project=args.wandb_project,
        limit=args.limit,
        chunk_size=args.chunk_size,
        num_workers=args.num_workers,
    )
    if rank_zero_only.rank == 0:
        headline = {key: value for key, value in payload["metrics"].items() if not isinstance(value, (dict, list))}
        print(
            json.dumps(
                {
                    "command": "test",
                    "benchmark": payload["benchmark"],
                    "metrics": headline,
                    "files": payload.get("files"),
                    "seconds": payload["seconds"],
                }
            )
        )
    return 0
