"""``rsam`` entry point: discovers the ``rsam/cli/cmd_*.py`` subcommands.

Each subcommand module defines ``register(subparsers) -> argparse.ArgumentParser`` and ``run(args) -> int``.
Heavy imports happen inside ``run`` so that ``rsam --help`` stays fast. This is the only place that turns
exceptions into exit codes and one-line messages.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

import rsam
import rsam.cli
from rsam.allocator import relaunch_on_jemalloc

log = logging.getLogger("rsam")


class UserError(Exception):
    """An error caused by the user's input (bad file, bad key, bad option): reported in one line, exit code 2."""


def _subcommand_modules():
    for info in sorted(pkgutil.iter_modules(rsam.cli.__path__), key=lambda m: m.name):
        if info.name.startswith("cmd_"):
            yield importlib.import_module(f"rsam.cli.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rsam", description="RemoteSAM training, evaluation and tooling")
    parser.add_argument("--version", action="version", version=f"rsam {rsam.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module in _subcommand_modules():
        sub = module.register(subparsers)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """``rsam ARGS``. Called without ``argv`` (the ``rsam`` executable, ``python -m rsam.cli.main``), the process
    first re-executes itself on jemalloc where it is installed (:mod:`rsam.allocator`, ``RSAM_MALLOC``)."""
    if argv is None:
        try:
            relaunch_on_jemalloc()
        except (FileNotFoundError, ValueError) as err:
            print(f"rsam: error: {err}", file=sys.stderr)
            return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for name in ("lightning.pytorch", "lightning.fabric"):  # they print through their own handlers already
        logging.getLogger(name).propagate = False
    try:
        return int(args._run(args) or 0)
    except (UserError, FileNotFoundError, ValueError, KeyError, TypeError) as err:
        if args.verbose:
            log.exception("failed")
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"rsam {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
