"""File helpers shared by every stage: atomic writes, output sets, locks and (b)gzip reading.

:func:`reading` turns the ways a text input can fail to be read (missing, truncated or corrupt
gzip, bytes that are not UTF-8) into an :class:`~getdiff.errors.InputError` naming the file and,
where one applies, the line.

Outputs are all or nothing. :func:`atomic_path` and :func:`atomic_dir` write one output aside and
rename it in; :func:`output_set` does that for a command's whole output set, renaming every member
in one go with termination signals (SIGTERM, SIGINT, SIGHUP) deferred, so a signal leaves the old
complete set or the new one. The CLI runs every command under :func:`termination_raises`,
which turns those signals into :class:`Terminated` (temporary files are then removed on the way
out).
:func:`exclusive` refuses a second writer into an output directory. :class:`ReadAhead` reads an
input in a background thread while the caller works on what came before.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gzip
import io
import os
import queue
import re
import shutil
import signal
import stat
import tempfile
import threading
import weakref
import zlib
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

from getdiff.errors import GetdiffError, InputError

GZIP_MAGIC = b"\x1f\x8b"
T = TypeVar("T")


def check_regular_file(path: str | Path) -> None:
    """Refuse a named pipe, socket or device: inputs are opened more than once (the gzip check,
    then the reading), and opening a pipe nobody writes to would block forever."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # missing, a symlink loop, ...: opening it reports that
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise InputError(
            path,
            "not a regular file (a named pipe, socket or device); expected a file on disk "
            "(decompress or copy the stream to a file first)",
        )


def is_gzipped(path: str | Path) -> bool:
    """True if the file starts with the gzip magic bytes (covers bgzip too); a named pipe or
    device is refused (:func:`check_regular_file`)."""
    check_regular_file(path)
    with open(path, "rb") as handle:
        return handle.read(2) == GZIP_MAGIC


def open_text(path: str | Path) -> IO[str]:
    """Open plain, gzip or bgzip text for reading; newline=None folds CRLF into LF, and a UTF-8
    byte-order mark (spreadsheet exports) is dropped, as pyarrow's reader drops it."""
    if is_gzipped(path):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline=None)
    return open(path, encoding="utf-8-sig", newline=None)


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
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:  # BadGzipFile is an OSError
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
    except OSError as err:  # missing, a directory, permission denied, a symlink loop, ...
        raise InputError(path, f"cannot read the file: {err.strerror or err}") from None


def make_directory(path: str | Path) -> None:
    """``mkdir -p path``; a file in the way (``path`` or a parent) or a directory that cannot be
    written is an InputError naming it."""
    path = Path(path)
    parts = (path, *path.parents)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocking = next((p for p in parts if p.exists() and not p.is_dir()), path)
        raise InputError(
            blocking, "is a file, not a directory; expected an output directory there"
        ) from None
    except PermissionError as err:
        path = next((p for p in parts if p.exists()), path)
        raise InputError(path, f"cannot create a directory in it: {err.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise InputError(path, "Permission denied: expected a writable output directory")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# A write failing for want of room names no file (``write()`` has none to give): the path
# being written is attached here, so the CLI's one line says where.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


# Writers that raise their own type for a failed write, naming neither the file nor the cause:
# torch.save (a RuntimeError of its zip writer) and safetensors (a Rust io::Error in the text).
TORCH_WRITE_FAILURES = ("PytorchStreamWriter failed", "unexpected pos", "file write failed")
RUST_IO_ERROR = re.compile(r"\(os error (\d+)\)")


def _name_the_output(err: BaseException, path: Path) -> None:
    if isinstance(err, OSError) and err.errno in DISK_FULL and not err.filename:
        err.filename = str(path)


def hidden_write_failure(err: BaseException, path: str | Path) -> OSError | None:
    """The OSError that a writer raising its own type hides (safetensors' SafetensorError with
    its ``os error N``, torch.save's RuntimeError, which gives no cause: a full disk or a quota
    is the usual one), naming ``path``; None for any other exception."""
    if isinstance(err, OSError) or not isinstance(err, Exception):
        return None
    text = str(err)
    found = RUST_IO_ERROR.search(text)
    if found is not None:
        code = int(found.group(1))
        return OSError(code, os.strerror(code), str(path))
    if isinstance(err, RuntimeError) and any(m in text for m in TORCH_WRITE_FAILURES):
        first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
        cause = f"writing failed (torch: {first}); expected room to write it (is the disk full?)"
        return OSError(errno.EIO, cause, str(path))
    return None


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    Readers never see a half-written file. An exception removes the temporary file; a hard kill
    (SIGKILL, power loss) can leave a hidden ``.<name>.*.tmp`` beside ``path``, which nothing
    reads (the names are unique, so a later run does not reuse it).
    """
    target = Path(path)
    if target.is_dir():
        raise InputError(target, "is a directory; expected the path of a file to write")
    make_directory(target.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, target)
    except BaseException as err:
        tmp_path.unlink(missing_ok=True)
        hidden = hidden_write_failure(err, target)
        if hidden is not None:
            raise hidden from err
        if isinstance(err, OSError):
            _name_the_output(err, target)
            _real_name(err, {str(tmp_path): str(target)})
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Like :func:`atomic_path` for a directory: build it aside, then swap it in."""
    target = Path(path)
    make_directory(target.parent)
    tmp_path = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o777 & ~_umask())
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp_path, target)
    except BaseException as err:
        shutil.rmtree(tmp_path, ignore_errors=True)
        hidden = hidden_write_failure(err, target)
        if hidden is not None:
            raise hidden from err
        if isinstance(err, OSError):
            _name_the_output(err, target)
            _real_name(err, {str(tmp_path): str(target)})
        raise


TERMINATION_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Terminated(BaseException):
    """A termination signal arrived; raised so that every open output is cleaned up."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"terminated by {signal.Signals(signum).name}")


class _Deferral:
    """While ``depth`` > 0 a termination signal is recorded in ``pending`` instead of raised."""

    depth = 0
    pending: int | None = None


def _on_termination(signum: int, frame: object) -> None:
    if _Deferral.depth:
        _Deferral.pending = signum
        return
    raise Terminated(signum)


@contextlib.contextmanager
def termination_raises() -> Iterator[None]:
    """Within the block, SIGTERM, SIGINT and SIGHUP raise :class:`Terminated` (main thread)."""
    previous = {signum: signal.signal(signum, _on_termination) for signum in TERMINATION_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def termination_deferred() -> Iterator[None]:
    """Hold termination signals until the block has finished, then raise the one that came."""
    _Deferral.depth += 1
    try:
        yield
    finally:
        _Deferral.depth -= 1
        if not _Deferral.depth and _Deferral.pending is not None:
            signum, _Deferral.pending = _Deferral.pending, None
            raise Terminated(signum)


@contextlib.contextmanager
def output_set(
    paths: dict[str, Path], directories: Collection[str] = ()
) -> Iterator[dict[str, Path]]:
    """Temporary paths for several outputs, renamed in together only if the block succeeds.

    Keys in ``directories`` get a temporary directory. The renames run with termination signals
    deferred, the first path last: put the output that marks a complete set first.
    """
    with contextlib.ExitStack() as stack:
        deferral = contextlib.ExitStack()
        stack.enter_context(deferral)  # exits after every rename below
        temps = {
            key: stack.enter_context((atomic_dir if key in directories else atomic_path)(path))
            for key, path in paths.items()
        }
        try:
            yield temps
        except OSError as err:  # which member was being written is unknown: name the set
            _name_the_output(err, Path(os.path.commonpath([str(p) for p in paths.values()])))
            _real_name(err, {str(temps[key]): str(path) for key, path in paths.items()})
            raise
        deferral.enter_context(termination_deferred())


def _real_name(err: OSError, real: dict[str, str]) -> None:
    """Name the output, not its temporary stand-in: a failure inside a member's temporary file
    or directory names the member's own path (and the part of it within)."""
    if not err.filename:
        return
    name = str(err.filename)
    for temp, path in real.items():
        if name == temp or name.startswith(f"{temp}{os.sep}"):
            err.filename = path + name[len(temp) :]
            return


@contextlib.contextmanager
def exclusive(directory: str | Path, command: str) -> Iterator[None]:
    """Hold ``directory/.getdiff.lock``; a second writer into ``directory`` is refused.

    The lock file is removed on release; a lock taken on a file that was removed meanwhile
    counts as held (the inode check), so two writers can never both proceed.
    """
    directory = Path(directory)
    make_directory(directory)
    lock = directory / ".getdiff.lock"
    with open(lock, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(handle.fileno()).st_ino != os.stat(lock).st_ino:
                raise BlockingIOError
        except (BlockingIOError, FileNotFoundError):
            raise GetdiffError(
                f"{directory}: another getdiff process is writing here (lock {lock} is held); "
                f"wait for it, or give {command} another output directory"
            ) from None
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)
            fcntl.flock(handle, fcntl.LOCK_UN)


class ReadAhead(Generic[T]):
    """The items of ``produce()``, made by a background thread up to ``depth`` (>= 1) ahead of
    the reader: a parser that releases the GIL (pyarrow's) then runs while the caller works.

    Iterate once; the producer's exception is raised where the reader gets to it. ``close()``
    (or leaving the ``with`` block, or dropping the object) stops the producer after its current
    item; reading after ``close()`` is a RuntimeError.
    """

    def __init__(self, produce: Callable[[], Iterator[T]], depth: int = 1) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._closed = False
        # The thread holds the queue and the event, not this object, so an unclosed ReadAhead
        # can still be collected; its finaliser then stops the thread.
        self._thread = threading.Thread(
            target=_produce_into, args=(produce, self._queue, self._stop), daemon=True
        )
        self._thread.start()
        weakref.finalize(self, self._stop.set)

    def __iter__(self) -> Iterator[T]:
        while not self._closed:
            try:
                kind, value = self._queue.get(timeout=0.05)
            except queue.Empty:
                if self._thread.is_alive():
                    continue
                break
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
        raise RuntimeError("ReadAhead read after close() or after its end")

    def close(self) -> None:
        self._closed = True
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.05)
        self._thread.join()

    def __enter__(self) -> ReadAhead[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _produce_into(
    produce: Callable[[], Iterator[T]], items: queue.Queue, stop: threading.Event
) -> None:
    """:class:`ReadAhead`'s thread: ``produce()``'s items, then its error or its end, into
    ``items`` until ``stop`` is set."""

    def put(entry: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                items.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    try:
        made = produce()
        try:
            for item in made:
                if not put(("item", item)):
                    return
        finally:
            close = getattr(made, "close", None)
            if close is not None:
                close()
    except BaseException as err:  # handed to the reader, who raises it
        put(("error", err))
        return
    put(("end", None))
