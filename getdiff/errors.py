"""Errors that reach the user as one line: which file, which line, what was expected."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np


class GetdiffError(Exception):
    """A problem with the user's input or configuration (not a bug); the CLI prints it alone."""


class InputError(GetdiffError):
    """Bad content in an input file. Formats as ``path:line: message`` (line omitted if unknown)."""

    def __init__(self, path: str | Path, message: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class ConfigError(GetdiffError):
    """Bad configuration: names the key (dotted path) and what was expected."""


def raise_first_bad_line(
    path: str | Path, lines: np.ndarray, checks: Iterable[tuple[np.ndarray, str]]
) -> None:
    """Raise InputError for the earliest line failing any check (mask True = bad), with that
    check's message; ``lines`` holds the file line number of each row the masks cover."""
    best: tuple[int, str] | None = None
    for bad, message in checks:
        hits = np.flatnonzero(bad)
        if len(hits) and (best is None or lines[hits[0]] < best[0]):
            best = (int(lines[hits[0]]), message)
    if best is not None:
        raise InputError(path, best[1], best[0])
