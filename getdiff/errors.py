"""Errors that reach the user as one line: which file, which line, what was expected."""

from __future__ import annotations

from pathlib import Path


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
