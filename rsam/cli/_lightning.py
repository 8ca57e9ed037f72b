"""Shared code of the Lightning subcommands (``rsam fit|validate|test|predict``): arguments, set-up, summary line."""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


MODEL_HELP = (
    "model weights: an rsam model folder, a Lightning .ckpt of rsam fit, a DeepSpeed checkpoint folder, an official "
    "RemoteSAMv1.pth, or a registered model name (remotesam-base, ...: its converted folder under $RSAM_MODELS_DIR)"
)


class DeprecatedAlias(argparse.Action):
    """An old spelling of an option that still works, with a one-line notice on stderr."""

    def __init__(self, *args, replacement: str, **kwargs):
        self.replacement = replacement
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        import sys

        print(f"rsam: {option_string} is deprecated, use {self.replacement}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_model_argument(parser: argparse.ArgumentParser, required: bool = False) -> None:
    """``--model PATH_OR_NAME``: the one flag of every command that takes model weights (once per parser)."""
    if "--model" not in parser._option_string_actions:
        parser.add_argument("--model", default=None, required=required, metavar="PATH_OR_NAME", help=MODEL_HELP)


def add_recipe_arguments(
    parser: argparse.ArgumentParser, ckpt_help: str, *, weights: bool = False
) -> argparse.ArgumentParser:
    """``--config``, overrides, ``--ckpt_path`` (Lightning's), ``--no-wandb``; ``weights``: also ``--model`` (evaluate
    those weights instead of the recipe's init or a ``--ckpt_path``)."""
    parser.add_argument(
        "--config",
        "-c",
        default="demo",
        help="recipe YAML, or a bundled recipe name (demo, remotesam-270k, finetune); default demo",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted recipe overrides, e.g. trainer.max_steps=10 data.batch_size=4",
    )
    parser.add_argument("--ckpt_path", "--ckpt-path", dest="ckpt_path", default=None, help=ckpt_help)
    parser.add_argument("--no-wandb", dest="wandb", action="store_false", help="turn the wandb logger off")
    if weights:
        add_model_argument(parser)
    return parser


@dataclass
class Session:
    """Everything one subcommand needs, built from the recipe before any heavy work starts."""

    command: str
    recipe: object
    started: float = field(default_factory=time.time)
    ckpt_path: str | None = None
    module: object = None
    datamodule: object = None
    trainer: object = None


def start(command: str, args, *, fitting: bool = False, predicting: bool = False) -> Session:
    """Validate the recipe (errors name the key), then build datamodule, module and trainer.

    When ``predicting``, the datamodule's test loader reads ``data.predict_split`` (default ``data.test_split``).
    """
    from rsam.lit.build import build_module, build_trainer, load_module, prepare_process, resolve_ckpt_path
    from rsam.lit.data import build_datamodule
    from rsam.recipes import load_recipe

    session = Session(command, load_recipe(args.config, args.overrides))
    recipe = session.recipe
    weights = getattr(args, "model", None)
    if weights and args.ckpt_path:
        raise ValueError("give --model (weights to evaluate) or --ckpt_path (a training checkpoint), not both")
    session.ckpt_path = resolve_ckpt_path(recipe, args.ckpt_path) or weights
    prepare_process(recipe)
    overrides = {"test_split": recipe.data.predict_split or recipe.data.test_split} if predicting else {}
    session.datamodule = build_datamodule(recipe, **overrides)
    if fitting or session.ckpt_path is None:
        if not fitting:
            log.warning("no --ckpt_path: %s runs on the recipe's initial weights", command)
        session.module = build_module(recipe)
    else:
        session.module = load_module(session.ckpt_path, recipe)
    session.trainer = build_trainer(recipe, use_wandb=args.wandb, fitting=fitting)
    return session


def _close_wandb() -> None:
    """Finish the wandb run before the process exits, so the offline run file is complete when the command returns
    (left to wandb's exit hook, the service could still be writing it)."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()


def finish(session: Session, extra: dict | None = None) -> int:
    """Print the one-line JSON summary (rank 0 only) and return the exit code."""
    trainer = session.trainer
    _close_wandb()
    if trainer.is_global_zero:
        metrics = {
            key: round(float(value), 6)
            for key, value in sorted(trainer.callback_metrics.items())
            if not key.endswith("_step") and key.split("/")[0] in ("train", "val", "test")
        }
        print(
            json.dumps(
                {
                    "command": session.command,
                    "step": trainer.global_step,
                    **(extra or {}),
                    "metrics": metrics,
                    "seconds": round(time.time() - session.started, 1),
                }
            )
        )
    return 0
