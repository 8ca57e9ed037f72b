"""``rsam predict``: masks and overlays of a checkpoint on a split (default: the test split)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from rsam.cli._lightning import add_recipe_arguments, finish, start

log = logging.getLogger(__name__)


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "predict",
        help="write predicted masks and overlays for a split",
        description="For the first predict.max_samples samples of data.predict_split (default data.test_split), "
        "writes NNNN_overlay.png (prediction | ground truth, captioned) and NNNN_mask.png to "
        "predict.out_dir (default <trainer.default_root_dir>/predictions); NNNN is the sample's index in the split, "
        "and on several devices every rank writes its own samples.",
    )
    return add_recipe_arguments(
        parser, "Lightning checkpoint: 'last', 'best' or a path (default: initial weights)", weights=True
    )


def run(args) -> int:
    from rsam.lit.build import run_dir
    from rsam.lit.writers import SampleMaskWriter

    session = start("predict", args, predicting=True)
    recipe = session.recipe
    max_samples = recipe.predict.max_samples
    if max_samples is not None:
        per_rank = -(-max_samples // session.trainer.world_size)
        session.trainer.limit_predict_batches = max(1, -(-per_rank // recipe.data.batch_size))
    out_dir = Path(recipe.predict.out_dir or run_dir(recipe) / "predictions")
    writer = SampleMaskWriter(out_dir, max_samples)  # every rank writes its own samples
    session.trainer.callbacks.append(writer)
    session.trainer.predict(session.module, datamodule=session.datamodule, return_predictions=False)
    split = session.datamodule.hparams.test_split
    return finish(session, {"split": split, "out_dir": str(out_dir), "written": writer.total})
