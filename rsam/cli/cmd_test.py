"""``rsam test``: metrics of a checkpoint on the recipe's test split."""

from __future__ import annotations

import argparse

from rsam.cli._benchmark_args import add_benchmark_arguments, run_from_args
from rsam.cli._lightning import add_recipe_arguments, finish, start


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "test",
        help="evaluate a checkpoint on the test split or on a registered benchmark",
        description="With --config: oIoU, mIoU, Prec@0.5..0.9 on data.test_split. With --benchmark NAME --data PATH "
        "--ckpt CKPT: the paper's metrics for that benchmark, written as Markdown + JSON tables.",
    )
    add_recipe_arguments(
        parser, "Lightning checkpoint: 'last', 'best' or a path (default: initial weights)", weights=True
    )
    return add_benchmark_arguments(parser)


def run(args) -> int:
    if args.benchmark:
        return run_from_args(args)
    session = start("test", args)
    session.trainer.test(session.module, datamodule=session.datamodule)
    return finish(session, {"ckpt": session.ckpt_path})
