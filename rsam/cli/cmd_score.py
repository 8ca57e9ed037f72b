"""``rsam score``: score saved predictions of any task against ground truth (formats: docs/prediction-formats.md)."""

from __future__ import annotations

import argparse
import json

TASKS = ("res", "semseg", "det", "obb", "vg", "mlc", "mcc", "count", "caption")


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "score",
        help="score saved predictions against ground truth",
        description="Score saved predictions with the official RemoteSAM formulas (docs/prediction-formats.md).",
    )
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--pred", required=True, help="prediction file or folder")
    parser.add_argument("--gt", required=True, help="ground-truth file or folder")
    parser.add_argument("--json", action="store_true", help="print the full result as one JSON object")
    parser.add_argument(
        "--eval-size",
        type=int,
        default=None,
        help="res/semseg: resize prediction and target to SIZE x SIZE first with PIL NEAREST, as REF.py / SEG.py "
        "and rsam test (official: 896)",
    )
    parser.add_argument(
        "--allow-empty",
        action="store_true",
        help="det/obb: score an empty prediction set (as no detection) instead of failing",
    )
    parser.add_argument(
        "--classes",
        default=None,
        help="det/obb with DOTA label folders: comma-separated class list (default: classes in gt)",
    )
    parser.add_argument(
        "--all-point-ap",
        action="store_true",
        help="det/obb with DOTA label folders: all-point AP instead of the devkit's VOC07 11-point",
    )
    parser.add_argument(
        "--merge-patches",
        action="store_true",
        help="det/obb with DOTA label folders: predictions name devkit patches "
        "(<image>__<rate>__<x>___<y>, as DET_DOTA.py writes them); merge them like ResultMerge",
    )
    parser.add_argument("--threshold", type=float, default=0.5, help="mlc: score threshold (official: > 0.5)")
    parser.add_argument("--split", default=None, help="caption: split of a Karpathy dataset.json ground truth")
    parser.add_argument("--meteor", action="store_true", help="caption: also compute METEOR (needs java, slow)")
    return parser


def _options(args) -> dict:
    from rsam.cli.main import UserError

    if args.eval_size is not None and args.eval_size <= 0:
        raise UserError("--eval-size must be positive")
    options = {
        "allow_empty": args.allow_empty,
        "use_07_metric": not args.all_point_ap,
        "merge_patches": args.merge_patches,
        "threshold": args.threshold,
        "split": args.split,
        "meteor": args.meteor,
        "eval_size": args.eval_size,
    }
    if args.classes is not None:
        classes = [c.strip() for c in args.classes.split(",") if c.strip()]
        if not classes:
            raise UserError("--classes is empty")
        options["classes"] = classes
    return options


def _print_plain(result: dict) -> None:
    for key, value in result.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for name, item in value.items():
                print(f"  {name}: {'n/a' if item is None else (f'{item:.4f}' if isinstance(item, float) else item)}")
        elif isinstance(value, float):
            print(f"{key}: {value:.4f}")
        else:
            print(f"{key}: {value}")


def run(args) -> int:
    from rsam.evaluation.prediction_files import score_files

    result = score_files(args.task, args.pred, args.gt, **_options(args))
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=False))
    else:
        _print_plain(result)
    return 0
