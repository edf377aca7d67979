"""Command line: ``getdiff <command> ...`` (also ``python -m getdiff``), the entry every rule calls.

Each stage module registers its own sub-command through ``register_cli(subparsers)`` and binds
``func`` on its parser, so adding a stage never touches the other stages' argument code.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import logging
import os
import sys

from getdiff import __version__
from getdiff.errors import ConfigError, GetdiffError
from getdiff.io import Terminated, termination_raises

# Sub-command -> module that registers it, in the order they appear in --help.
COMMANDS = {
    "demo-data": "demo",
    "scan": "genomics.scan",
    "count": "genomics.count",
    "prepare": "prepare",
    "train": "training.train",
    "calibrate": "evaluation.calibrate",
    "evaluate": "evaluation.evaluate",
    "impute": "evaluation.impute",
    "tracks": "outputs.tracks",
    "export-h5ad": "outputs.export",
    "plot-locus": "outputs.locus",
    "interpret": "evaluation.interpret",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``command`` only that stage's module is imported (torch is slow to load)."""
    parser = argparse.ArgumentParser(
        prog="getdiff",
        description="Peaks + motif scans -> region x motif tensors -> GETRegionDiffusion.",
    )
    parser.add_argument("--version", action="version", version=f"getdiff {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    names = [COMMANDS[command]] if command in COMMANDS else list(COMMANDS.values())
    for name in names:
        importlib.import_module(f"getdiff.{name}").register_cli(subparsers)
    return parser


def _naming_the_config(message: str, args: argparse.Namespace) -> str:
    """A ConfigError raised after the config was read (a device, a model option, the splits)
    names the key but not the file: prefix the config the key is in. A message that already
    starts with a file (``path: ...``, no space in ``path``) is kept."""
    source = args.config if getattr(args, "config", None) else None
    if source is None and getattr(args, "config_json", None):
        source = "--config-json"
    head, separator, _ = message.partition(": ")
    if source is None or (separator and " " not in head):
        return message
    return f"{source}: {message}"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    in_process = argv is not None
    argv = sys.argv[1:] if argv is None else argv
    # A stage's imports (pandas, torch) create about a million objects that live to the end:
    # collecting while they load, and scanning them in every later full collection (the one at
    # exit too), is wasted (0.1 s of a 1.3 s prepare). They are unfrozen on return only for a
    # caller running main() in its own process.
    collecting = gc.isenabled()
    gc.disable()
    try:
        parser = build_parser(argv[0] if argv else None)
    finally:
        gc.freeze()
        if collecting:
            gc.enable()
    try:
        status = _run(parser.parse_args(argv))
    finally:
        if in_process:
            gc.unfreeze()
    if status > 128 and not in_process:
        _leave_after_signal(status)
    return status


def _leave_after_signal(status: int) -> None:
    """Exit at once after a termination signal, outputs already cleaned up. The interpreter's
    normal exit would run the exit hooks of what the signal interrupted (a process pool whose
    wakeup pipe is already closed, torch's thread pools) and could add a traceback or an abort
    to the one line the user was promised."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


def _run(args: argparse.Namespace) -> int:
    """Run the parsed command: its exit status, errors as one line on stderr."""
    try:
        threads = getattr(args, "threads", None)
        if threads is not None and threads < 1:  # every command's --threads
            raise GetdiffError(f"--threads {threads}: expected a whole number >= 1")
        with termination_raises():
            args.func(args)
    except Terminated as err:
        # Outputs are written aside and renamed in as one set: nothing partial is left.
        print(f"getdiff {args.command}: {err}; no partial output left", file=sys.stderr)
        return 128 + err.signum
    except GetdiffError as err:
        message = _naming_the_config(str(err), args) if isinstance(err, ConfigError) else str(err)
        print(f"getdiff {args.command}: error: {message}", file=sys.stderr)
        return 2
    except OSError as err:
        # Unreadable inputs, an output location that is a file, read-only or full: one line.
        where = f"{err.filename}: " if err.filename else ""
        print(f"getdiff {args.command}: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    return 0
