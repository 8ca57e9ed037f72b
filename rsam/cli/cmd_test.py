"""``rsam test``: metrics of a checkpoint on the recipe's test split."""

from __future__ import annotations

import argparse

from rsam.cli._lightning import add_recipe_arguments, finish, start


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("test", help="evaluate a checkpoint on the test split",
                                   description="oIoU, mIoU, Prec@0.5..0.9 on data.test_split.")
    return add_recipe_arguments(parser, "Lightning checkpoint: 'last', 'best' or a path (default: initial weights)")


def run(args) -> int:
    session = start("test", args)
    session.trainer.test(session.module, datamodule=session.datamodule)
    return finish(session, {"ckpt": session.ckpt_path})
