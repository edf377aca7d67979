"""Indexes checked against the data file they index: a stale or foreign index is rebuilt or refused.

An index (a FASTA's ``.fai``/``.gzi``, a BAM's ``.bai``/``.csi``, a CRAM's ``.crai``, a scan's
``.tbi``) only says where things were in the file it was built from. Read through the index of
another file, or of this file before it was rewritten, a reader returns other bases or other
reads and says nothing. :func:`check_index` is the one place that decides whether an index fits:

- the index is older than its data file (mtime), or ``validate`` (a content check) names a
  mismatch: the index is *stale*;
- a stale index is rebuilt when ``rebuild`` is given and its directory is writable (a warning
  line says so); otherwise it is refused with one line naming the index and the command that
  rebuilds it (``fix``). One exception: an index older than its data whose content check passes
  (``validate`` given, no mismatch) and that cannot be rebuilt is used with a warning (files
  copied in the wrong order into a read-only genome directory are common; the layout it
  describes was just checked against the file).

For a BAM, :func:`getdiff.genomics.bam.check_alignment_index` refuses a ``.bai``/``.csi``/``.crai``
older than the BAM/CRAM, and a ``.bai`` whose references or first records do not fit it (a sampled
content check, so an older one is refused even when it fits; no rebuild). For a FASTA,
:func:`check_fasta_index` checks every ``.fai`` record against the file (its header line right
before the record's offset, the record's end right before the next header, the last record's
end at the end of the file, the first and last line breaks where the record's line length
says) and, for bgzip, every ``.gzi`` entry against a BGZF block; on a mismatch
:func:`fasta_problem` reads the FASTA itself for a cause to name (two records of one name, a
byte that is no IUPAC letter), since a fresh index would not help then.
"""

from __future__ import annotations

import bisect
import gzip
import logging
import os
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from getdiff.errors import InputError
from getdiff.io import check_regular_file, is_gzipped

log = logging.getLogger(__name__)

HEADER_SEARCH = 1 << 20  # bytes searched back from a record's offset for its header line
GZI_SAMPLE = 2048  # .gzi entries checked against BGZF block headers (evenly spaced, plus last)
# The letters a genome FASTA's sequence lines may hold: IUPAC nucleotide codes, either case.
IUPAC = b"ACGTURYSWKMBDHVNacgturyswkmbdhvn"


def _is_stale(data: Path, index: Path) -> bool:
    return index.stat().st_mtime_ns < data.stat().st_mtime_ns


def _writable(directory: Path) -> bool:
    return os.access(directory, os.W_OK | os.X_OK)


def check_index(
    data: str | Path,
    indexes: Sequence[str | Path],
    fix: str,
    *,
    validate: Callable[[], str | None] | None = None,
    rebuild: Callable[[], None] | None = None,
    exhaustive: bool = True,
) -> bool:
    """Check the existing ``indexes`` of ``data`` (see the module docstring); True if rebuilt.

    ``indexes``: the index files that belong together (``.fai`` and ``.gzi``); none existing is
    fine (the reader builds them), some existing is stale. ``fix``: the command that rebuilds
    them, quoted in the error. ``validate()``: a content check, None when the index fits, else
    what does not fit. ``rebuild()``: builds the indexes afresh (called after they are removed).
    ``exhaustive``: ``validate`` checks everything the index lists (True) or a sample (False: an
    older index is then refused even when the sample fits). A named pipe or device as an index
    is refused (reading it would block).
    """
    data = Path(data)
    paths = [Path(p) for p in indexes]
    for path in paths:
        check_regular_file(path)
    present = [p for p in paths if p.exists()]
    if not present:
        return False
    older = [p for p in present if _is_stale(data, p)]
    if len(present) < len(paths):
        missing = next(p for p in paths if not p.exists())
        problem = f"{missing.name} is missing beside {present[0].name}"
    else:
        problem = validate() if validate is not None else None
    if problem is None and not older:
        return False
    reason = problem or f"older than {data.name} (the file was rewritten after indexing)"
    if rebuild is not None and _writable(present[0].parent):
        log.warning("%s: %s; rebuilding it", present[0], reason)
        for path in present:
            path.unlink(missing_ok=True)
        rebuild()
        return True
    if problem is None and validate is not None and exhaustive:
        log.warning(
            "%s: %s, but every record it lists fits the file; used as is (rebuild it with: %s)",
            present[0],
            reason,
            fix,
        )
        return False
    rebuilt = " (or remove it in a directory you can write to, and it is rebuilt)"
    raise InputError(
        present[0],
        f"this index does not fit {data}: {reason}; rebuild it: {fix}{rebuilt if rebuild else ''}",
    )


# --- the bytes of a plain or bgzip file, by uncompressed offset --------------------------------


class _Bytes:
    """Random access to a plain or bgzip file's (uncompressed) bytes; bgzip through its .gzi."""

    def __init__(self, path: Path, gzi: list[tuple[int, int]] | None) -> None:
        self.path = path
        self.handle = open(path, "rb")
        self.gzi = gzi
        if gzi is None:
            self.size = os.fstat(self.handle.fileno()).st_size
            return
        from Bio import bgzf

        self.reader = bgzf.BgzfReader(fileobj=self.handle, mode="rb")
        self.uoffsets = [u for _, u in gzi]
        coffset, uoffset = gzi[-1]
        self.handle.seek(coffset)
        self.size = uoffset + len(gzip.decompress(self.handle.read()))

    def read(self, offset: int, length: int) -> bytes:
        offset, length = max(offset, 0), max(length, 0)
        if self.gzi is None:
            return os.pread(self.handle.fileno(), length, offset)
        from Bio import bgzf

        if offset >= self.size or not length:
            return b""
        entry = bisect.bisect_right(self.uoffsets, offset) - 1
        coffset, uoffset = self.gzi[entry]
        self.reader.seek(bgzf.make_virtual_offset(coffset, offset - uoffset))
        return self.reader.read(min(length, self.size - offset))

    def close(self) -> None:
        self.handle.close()


def read_gzi(path: Path, data_size: int) -> list[tuple[int, int]] | str:
    """The .gzi's (compressed, uncompressed) block offsets, (0, 0) first; or what is wrong."""
    raw = path.read_bytes()
    if len(raw) < 8:
        return "not a .gzi index (too short)"
    (count,) = struct.unpack_from("<Q", raw)
    if len(raw) != 8 + 16 * count:
        return f"not a .gzi index ({count} entries declared, {len(raw)} bytes)"
    flat = struct.unpack_from(f"<{2 * count}Q", raw, 8)
    entries = [(0, 0), *zip(flat[::2], flat[1::2], strict=True)]
    for (c0, u0), (c1, u1) in zip(entries, entries[1:], strict=False):
        if not (c0 < c1 and u0 < u1):
            return "its block offsets are not increasing"
    if entries[-1][0] >= data_size:
        return "it lists blocks past the end of the file"
    return entries


def _gzi_problem(path: Path, entries: list[tuple[int, int]]) -> str | None:
    step = max(1, len(entries) // GZI_SAMPLE)
    with open(path, "rb") as handle:
        for coffset, _ in [*entries[::step], entries[-1]]:
            handle.seek(coffset)
            head = handle.read(18)
            if len(head) < 18 or head[:4] != b"\x1f\x8b\x08\x04" or head[12:14] != b"BC":
                return f"no BGZF block starts at byte {coffset}, where its .gzi says one does"
    return None


# --- FASTA ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaiRecord:
    """One ``.fai`` line: name, bases, offset of the first base, bases and bytes per line."""

    name: str
    length: int
    offset: int
    line_bases: int
    line_bytes: int

    @property
    def end(self) -> int:
        """Offset just past the record's last line break (htslib's layout)."""
        if self.line_bases <= 0:
            return self.offset
        full, rest = divmod(self.length, self.line_bases)
        tail = rest + self.line_bytes - self.line_bases if rest else 0
        return self.offset + full * self.line_bytes + tail


def read_fai(path: Path) -> list[FaiRecord] | str:
    """The .fai's records, or what is wrong with it."""
    records = []
    try:
        text = path.read_text(encoding="ascii")
    except (UnicodeDecodeError, OSError) as err:
        return f"not a FASTA index ({err})"
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split("\t")
        if len(fields) not in (5, 6) or not all(f.isdigit() for f in fields[1:5]):
            return f"not a FASTA index (line {number}: expected name length offset bases bytes)"
        record = FaiRecord(fields[0], *(int(f) for f in fields[1:5]))
        if record.line_bytes < record.line_bases or (record.length and not record.line_bases):
            return f"not a FASTA index (line {number}: bytes per line < bases per line)"
        records.append(record)
    if not records:
        return "an empty FASTA index"
    return records


def _header_before(data: _Bytes, offset: int) -> bytes | None:
    """The line ending right before ``offset`` (its line break removed), None if none."""
    span = 256
    while True:
        chunk = data.read(offset - span, min(span, offset))
        if not chunk.endswith(b"\n"):
            return None
        body = chunk[:-1].rstrip(b"\r")
        cut = body.rfind(b"\n")
        if cut >= 0 or span >= offset:
            return body[cut + 1 :]
        if span >= HEADER_SEARCH:
            return None
        span *= 4


def _record_problem(data: _Bytes, record: FaiRecord, next_offset: int | None) -> str | None:
    header = _header_before(data, record.offset)
    name = header[1:].split(maxsplit=1)[:1] if header and header.startswith(b">") else None
    if name != [record.name.encode()]:
        return f"record {record.name!r} (byte {record.offset}) is not under a '>{record.name}' line"
    eol = record.line_bytes - record.line_bases
    if record.line_bases and record.length > record.line_bases:
        breaks = [record.offset + record.line_bases]
        full = record.length // record.line_bases
        breaks.append(record.offset + (full - 1) * record.line_bytes + record.line_bases)
        for at in breaks if eol in (1, 2) else []:
            if data.read(at, eol) != b"\r\n"[-eol:]:
                return f"record {record.name!r}: no line break at byte {at}, where its lines end"
    end = record.end
    if next_offset is None:
        if end > data.size + eol or data.read(end, data.size - end).strip():
            return (
                f"its last record {record.name!r} ends at byte {end}, the file at byte {data.size}"
            )
        return None
    if end > next_offset or next_offset - end > HEADER_SEARCH:
        return f"record {record.name!r} ends at byte {end}, not right before the next record"
    gap = data.read(end, next_offset - end).split(b"\n")
    if sum(line.startswith(b">") for line in gap) != 1 or any(
        line.strip() for line in gap if not line.startswith(b">")
    ):
        return f"the file holds more than its index between {record.name!r} and the next record"
    return None


def fai_problem(fasta: Path) -> str | None:
    """What does not fit between ``fasta`` and its .fai (and .gzi); None when they fit."""
    records = read_fai(Path(f"{fasta}.fai"))
    if isinstance(records, str):
        return records
    gzi = None
    if is_gzipped(fasta):
        gzi_path = Path(f"{fasta}.gzi")
        gzi = read_gzi(gzi_path, fasta.stat().st_size)
        if isinstance(gzi, str):
            return f"{gzi_path.name}: {gzi}"
        problem = _gzi_problem(fasta, gzi)
        if problem:
            return problem
    data = _Bytes(fasta, gzi)
    try:
        offsets = [r.offset for r in records[1:]] + [None]
        for record, next_offset in zip(records, offsets, strict=True):
            problem = _record_problem(data, record, next_offset)
            if problem:
                return problem
    except (OSError, EOFError, ValueError) as err:  # a .gzi pointing into another file
        return f"cannot read the file where its index points ({err})"
    finally:
        data.close()
    return None


_HEADER = re.compile(rb"^>[^\n]*", flags=re.MULTILINE)


def fasta_problem(path: Path) -> InputError | None:
    """Read ``path`` whole for what no index can fix: two records of one name, a header that is
    not ASCII, or a byte in a sequence line that is no IUPAC letter (one line, naming it)."""
    opener = gzip.open if is_gzipped(path) else open
    seen: dict[bytes, int] = {}
    line, record, rest = 1, None, b""
    with opener(path, "rb") as handle:
        while True:
            block = handle.read(1 << 24)
            chunk = rest + block
            if block:  # keep the unfinished last line for the next block
                cut = chunk.rfind(b"\n") + 1
                chunk, rest = chunk[:cut], chunk[cut:]
            at = 0
            for match in [*_HEADER.finditer(chunk), None]:
                stop = match.start() if match else len(chunk)
                bad = chunk[at:stop].translate(None, IUPAC + b"\n\r")
                if bad:
                    where = chunk.index(bad[:1], at)
                    number = line + chunk.count(b"\n", 0, where)
                    byte = bad[:1].decode("latin-1")
                    return InputError(
                        path,
                        f"record {record!r}: byte {byte!r} is not a base letter; expected A, C, G, "
                        "T, N or IUPAC codes (either case) in sequence lines",
                        number,
                    )
                if match is None:
                    break
                number = line + chunk.count(b"\n", 0, match.start())
                header = match.group()[1:].rstrip(b"\r")
                try:
                    header.decode("ascii")
                except UnicodeDecodeError:
                    return InputError(path, "a header line that is not ASCII text", number)
                key = (header.split(maxsplit=1) or [b""])[0]
                record = key.decode()
                if key in seen:
                    return InputError(
                        path,
                        f"two records named {record!r} (lines {seen[key]} and {number}); "
                        "expected one record per sequence name",
                        number,
                    )
                seen[key] = number
                at = match.end()
            line += chunk.count(b"\n")
            if not block:
                return None


def check_fasta_index(path: str | Path) -> None:
    """Check ``path``'s .fai (and .gzi) against it: rebuilt if stale (writable directory), or an
    InputError naming it and ``samtools faidx``; a FASTA no index fits is an InputError naming
    the line. A missing index is left to the reader to build (then checked by this again)."""
    import pysam

    path = Path(path)
    indexes = [Path(f"{path}.fai")] + ([Path(f"{path}.gzi")] if is_gzipped(path) else [])

    def validate() -> str | None:
        problem = fai_problem(path)
        if problem is not None:
            error = fasta_problem(path)
            if error is not None:
                raise error
        return problem

    def rebuild() -> None:
        try:
            pysam.FastaFile(str(path)).close()
        except (OSError, ValueError, UnicodeDecodeError) as err:
            error = fasta_problem(path)
            raise error or InputError(
                path,
                f"cannot index the FASTA ({err}); expected lines of one length within each "
                f"record; index it with: samtools faidx {path}",
            ) from None
        problem = fai_problem(path)
        if problem is not None:
            raise InputError(path, f"its freshly built index does not fit it: {problem}")

    check_index(path, indexes, f"samtools faidx {path}", validate=validate, rebuild=rebuild)


__all__ = [
    "FaiRecord",
    "check_fasta_index",
    "check_index",
    "fai_problem",
    "fasta_problem",
    "read_fai",
]
