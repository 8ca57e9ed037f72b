"""``rsam validate``: metrics of a checkpoint on the recipe's validation split."""

from __future__ import annotations

import argparse

from rsam.cli._lightning import add_recipe_arguments, finish, start


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "validate",
        help="evaluate a checkpoint on the validation split",
        description="oIoU, mIoU, Prec@0.5..0.9 on data.val_split.",
    )
    return add_recipe_arguments(
        parser, "Lightning checkpoint: 'last', 'best' or a path (default: initial weights)", weights=True
    )


def run(args) -> int:
    session = start("validate", args)
    session.trainer.validate(session.module, datamodule=session.datamodule)
    return finish(session, {"ckpt": session.ckpt_path})
