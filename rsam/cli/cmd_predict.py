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
        "predict.out_dir (default <trainer.default_root_dir>/predictions).",
    )
    return add_recipe_arguments(
        parser, "Lightning checkpoint: 'last', 'best' or a path (default: initial weights)", weights=True
    )


def write_predictions(outputs: list[dict], out_dir: Path, max_samples: int | None) -> int:
    import numpy as np

    from rsam.lit.panel import overlay_pair
    from rsam.visualize import save_png

    written = 0
    for output in outputs:
        batch = output["batch"]
        for i in range(len(batch["meta"])):
            if not bool(batch["valid"][i]) or (max_samples is not None and written >= max_samples):
                continue
            text = batch["meta"][i].get("text", "")
            save_png(
                overlay_pair(batch["image"][i], output["pred"][i], batch["mask"][i], text),
                out_dir / f"{written:04d}_overlay.png",
            )
            save_png(output["pred"][i].cpu().numpy().astype(np.uint8) * 255, out_dir / f"{written:04d}_mask.png")
            written += 1
    return written


def run(args) -> int:
    from rsam.lit.build import run_dir

    session = start("predict", args, predicting=True)
    recipe = session.recipe
    max_samples = recipe.predict.max_samples
    if max_samples is not None:
        session.trainer.limit_predict_batches = max(1, -(-max_samples // recipe.data.batch_size))
    outputs = session.trainer.predict(session.module, dataloaders=session.datamodule.test_dataloader())
    out_dir = Path(recipe.predict.out_dir or run_dir(recipe) / "predictions")
    written = write_predictions(outputs or [], out_dir, max_samples) if session.trainer.is_global_zero else 0
    split = session.datamodule.hparams.test_split
    return finish(session, {"split": split, "out_dir": str(out_dir), "written": written})
