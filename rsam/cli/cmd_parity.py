"""``rsam parity``: compare the model with a golden set made by the official code."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "parity",
        help="run a golden set (official-code outputs) and report max |diff| per case",
        description="Builds the model from the golden config, loads the golden int8x2^-e weights strictly, runs every "
        "case and prints one JSON line per case. Exit 0 only if every logits diff is <= 1e-4.",
    )
    parser.add_argument("--config", required=True, help="golden config JSON (shared/reference schema)")
    parser.add_argument("--weights", required=True, help="golden weights (.safetensors, int8 x 2^-e encoding)")
    parser.add_argument("--golden", required=True, help="golden arrays (.npz with caseN_* keys)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    return parser


def run(args) -> int:
    import torch

    from rsam.parity import run_parity

    if args.threads:
        torch.set_num_threads(args.threads)
    all_pass = True
    for result in run_parity(args.config, args.weights, args.golden):
        print(json.dumps(result.to_json()), flush=True)
        all_pass &= result.passed
    return 0 if all_pass else 1
