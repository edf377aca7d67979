"""File helpers shared by every stage: atomic writes and transparent (b)gzip reading.

:func:`reading` turns the ways a text input can fail to be read (missing, truncated or corrupt
gzip, bytes that are not UTF-8) into an :class:`~getdiff.errors.InputError` naming the file and,
where one applies, the line.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from getdiff.errors import InputError

GZIP_MAGIC = b"\x1f\x8b"


def is_gzipped(path: str | Path) -> bool:
    """True if the file starts with the gzip magic bytes (covers bgzip too)."""
    with open(path, "rb") as handle:
        return handle.read(2) == GZIP_MAGIC


def open_text(path: str | Path) -> IO[str]:
    """Open plain, gzip or bgzip text for reading; newline=None folds CRLF into LF."""
    if is_gzipped(path):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline=None)
    return open(path, encoding="utf-8", newline=None)


def _failing_line(path: str | Path) -> tuple[int, bool]:
    """(1-based line, is a decoding error) where reading ``path`` fails, found by re-reading it.

    Only called after a failure. A decompression error is charged to the line after the last
    complete one (the line the data ends in); a UTF-8 error to the line holding the bad bytes.
    """
    opener = gzip.open if is_gzipped(path) else open
    number = 0
    try:
        with opener(path, "rb") as handle:
            for raw in handle:
                number += 1
                raw.decode("utf-8")
    except UnicodeDecodeError:
        return number, True
    except (EOFError, OSError, zlib.error):
        return number + 1, False
    return number + 1, False


@contextlib.contextmanager
def reading(path: str | Path) -> Iterator[None]:
    """Re-raise read failures of the text file ``path`` inside the block as InputError."""
    try:
        yield
    except (FileNotFoundError, IsADirectoryError, PermissionError) as err:
        raise InputError(path, f"cannot read the file: {err.strerror}") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        line, _ = _failing_line(path)
        raise InputError(
            path,
            f"gzip data is truncated or corrupt ({err}); expected a complete gzip or bgzip file "
            "(re-download or re-compress it)",
            line,
        ) from None
    except UnicodeDecodeError:
        line, decoding = _failing_line(path)
        raise InputError(
            path,
            "bytes that are not UTF-8 text; expected a plain-text (or gzip/bgzip) BED-like file",
            line if decoding else None,
        ) from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    Readers never see a half-written file. An exception removes the temporary file; a hard kill
    (SIGKILL, power loss) can leave a hidden ``.<name>.*.tmp`` beside ``path``, which nothing
    reads (the names are unique, so a later run does not reuse it).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Like :func:`atomic_path` for a directory: build it aside, then swap it in."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o777 & ~_umask())
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp_path, target)
    except BaseException:
        shutil.rmtree(tmp_path, ignore_errors=True)
        raise
