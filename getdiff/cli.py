"""Command line: ``getdiff <command> ...`` (also ``python -m getdiff``), the entry every rule calls.

Each stage module registers its own sub-command through ``register_cli(subparsers)`` and binds
``func`` on its parser, so adding a stage never touches the other stages' argument code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from getdiff import __version__
from getdiff.errors import GetdiffError

# Modules that contribute sub-commands, in the order they appear in --help.
STAGE_MODULES = ("demo", "prepare", "train", "evaluate", "impute")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="getdiff",
        description="Peaks + motif scans -> region x motif tensors -> GETRegionDiffusion.",
    )
    parser.add_argument("--version", action="version", version=f"getdiff {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in STAGE_MODULES:
        try:
            module = importlib.import_module(f"getdiff.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"getdiff.{name}":
                raise
            continue  # stage not built yet
        module.register_cli(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except GetdiffError as err:
        print(f"getdiff {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0
