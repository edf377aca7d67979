"""Accessibility from a BAM/CRAM: the Tn5 insertion sites of the reads, counted per peak.

Input: a coordinate-sorted BAM or CRAM with its index beside it (``.bai``/``.csi``/``.crai``),
given as a sheet ``counts_file`` (recognised by its magic bytes, see
:func:`getdiff.fragments.counts_format`). A CRAM is decoded without its reference: only flag,
position, mapping quality and CIGAR are asked for. Needs pysam (the ``tabix`` extra).

Insertion site of a read (0-based base positions; pysam's ``reference_start`` is the leftmost
aligned base, ``reference_end`` one past the rightmost, soft clips excluded):

- forward strand: its 5' end shifted +4: ``reference_start + 4``;
- reverse strand: its 5' end, ``reference_end - 1``, shifted -5: ``reference_end - 6``.

So the two mates of a proper pair give the two sites (``start``, ``end - 1``) of the fragment
cellranger-atac writes for them, ``[reference_start + 4, reference_end - 5)``, and a BAM and its
fragments file count alike (each read is one site; single-end reads count too). With
``tn5_shift: false`` (reads already shifted) the sites are ``reference_start`` and
``reference_end - 1``. A site is in a peak when ``start <= site < end`` (overlapping peaks each
count it); sites shifted off a contig's end count in no peak.

Reads counted (:class:`ReadFilter`, ``prepare.bam`` in the config): mapped reads with a CIGAR,
mapping quality >= ``min_mapq``, and, each configurable, not duplicate, secondary,
supplementary or QC-fail, optionally properly paired only. Unmapped reads never count: they have
no 5' end on the reference.

Reading a BAM (no per-read Python code): pysam checks the header and the index, then the file
itself is read CHUNK_BYTES of compressed data at a time, its BGZF blocks inflated (ISA-L where
python-isal is installed, else zlib) into one reused buffer, and the records found by walking
their ``block_size`` fields from every block start at once (numpy, one step per record of a
block; a block counts only when the walk of the one before ended at its start, so records
straddling blocks are found exactly, one by one from there). Flag, refID, position, MAPQ and
the CIGAR's reference length are gathered with numpy. With a ``.bai``, only references named
like a peak chromosome (:class:`getdiff.insertions.SiteTally` checks or harmonises ``1`` vs
``chr1``) are read, from their first record's offset in the index, and ``threads`` > 1 forks
that many processes over whole references of about equal size; without one (``.csi``) the
file is read once through. A CRAM goes through pysam's iterator, ``CHUNK_READS`` reads at a
time (per read only its four attribute reads run in Python). Filters, shifts and the per-peak
count are numpy over the chunk (the tally sorts the sites and binary-searches each peak).
Memory is one chunk per process plus the peaks.

Errors (one line, naming the file): no index, an index older than the file or (``.bai``) whose
references and first records do not fit it (:func:`check_alignment_index`: a BAM rewritten
after indexing is never read through its old index), or a sort order other than coordinate
(each with the samtools command that fixes it), not a BAM/CRAM, a naming mismatch with the
peaks, a peak on a chromosome the header lacks or ending past its length
(:func:`getdiff.intervals.check_within_lengths`: its reads cannot be there, so its count would
be a silent 0), no read on the peaks' chromosomes, no read passing the filters, no site in any
peak. Logged: reads on the peaks' chromosomes, reads dropped per filter, sites in peaks, the
share of peaks with sites.
"""

from __future__ import annotations

import array
import contextlib
import copy
import functools
import itertools
import logging
import multiprocessing
import zlib
from collections.abc import Collection, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from getdiff.errors import InputError
from getdiff.indexes import check_index
from getdiff.insertions import CountSummary, SiteTally
from getdiff.intervals import check_within_lengths
from getdiff.io import check_regular_file

log = logging.getLogger(__name__)

CHUNK_READS = 1 << 20  # CRAM reads per vectorised chunk: ~40 MiB of arrays, bounds memory
CHUNK_BYTES = 4 << 20  # compressed BAM bytes per chunk (~12 MiB inflated; measured best)
BGZF_MAGIC = b"\x1f\x8b\x08\x04"  # gzip member with extra fields (SAM spec 4.1)
# A record's fixed fields (SAM spec 4.2) and one CIGAR operation (length << 4 | op).
RECORD = np.dtype(
    [
        ("block_size", "<i4"),
        ("refid", "<i4"),
        ("pos", "<i4"),
        ("l_read_name", "u1"),
        ("mapq", "u1"),
        ("bin", "<u2"),
        ("n_cigar_op", "<u2"),
        ("flag", "<u2"),
    ]
)
CIGAR_OP = np.dtype("<u4")
PADDING = np.zeros(4, dtype=np.uint8)
PSEUDO_BIN = 37450  # the .bai bin holding a reference's offsets and read counts, not reads
# CIGAR operations that consume the reference, as a bit set over op codes: M D N = X.
REFERENCE_OPS = sum(1 << op for op in (0, 2, 3, 7, 8))
FORWARD_SHIFT, REVERSE_SHIFT = 4, -5
# SAM flag bits (SAM spec 1.4)
PAIRED, PROPER_PAIR, UNMAPPED, REVERSE = 0x1, 0x2, 0x4, 0x10
SECONDARY, QCFAIL, DUPLICATE, SUPPLEMENTARY = 0x100, 0x200, 0x400, 0x800
# CRAM fields decoded (htslib's required_fields: FLAG|RNAME|POS|MAPQ|CIGAR): no sequence, so no
# reference is needed.
CRAM_FIELDS = 0x2 | 0x4 | 0x8 | 0x10 | 0x20


@dataclass(frozen=True)
class ReadFilter:
    """Which reads count (the ``prepare.bam`` config section; defaults live in the schema)."""

    min_mapq: int
    drop_duplicates: bool
    drop_secondary: bool
    drop_supplementary: bool
    drop_qcfail: bool
    require_proper_pair: bool
    tn5_shift: bool

    def flag_reasons(self) -> dict[str, int]:
        """Flag bit of every read dropped, by reason; unmapped always."""
        reasons = {"unmapped": UNMAPPED}
        chosen = {
            "duplicate": (self.drop_duplicates, DUPLICATE),
            "secondary": (self.drop_secondary, SECONDARY),
            "supplementary": (self.drop_supplementary, SUPPLEMENTARY),
            "qcfail": (self.drop_qcfail, QCFAIL),
        }
        reasons.update({name: bit for name, (on, bit) in chosen.items() if on})
        return reasons

    def dropped(self, flag: np.ndarray, mapq: np.ndarray, end: np.ndarray) -> dict[str, np.ndarray]:
        """Per reason, the reads it drops (bool masks over the chunk); ``end < 0`` = no CIGAR."""
        dropped = {name: (flag & bit) != 0 for name, bit in self.flag_reasons().items()}
        dropped["no_cigar"] = end < 0
        dropped["low_mapq"] = mapq < self.min_mapq
        if self.require_proper_pair:
            dropped["not_proper_pair"] = (flag & (PAIRED | PROPER_PAIR)) != (PAIRED | PROPER_PAIR)
        return dropped

    def sites(self, flag: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        """0-based insertion site of each read (module doc), int64."""
        forward, reverse = (FORWARD_SHIFT, REVERSE_SHIFT) if self.tn5_shift else (0, 0)
        return np.where(flag & REVERSE, end - 1 + reverse, start + forward)


def read_filter(section: dict[str, Any]) -> ReadFilter:
    """A ReadFilter from the validated ``prepare.bam`` section."""
    return ReadFilter(**section)


def _sort_command(path: Path) -> str:
    sorted_path = path.with_name(f"{path.stem}.sorted{path.suffix or '.bam'}")
    return f"samtools sort -o {sorted_path} {path} && samtools index {sorted_path}"


def open_alignments(path: str | Path) -> Any:
    """The BAM/CRAM opened with pysam, checked to be coordinate-sorted and indexed."""
    import pysam  # 40 ms to import; only a BAM/CRAM counts_file needs it

    path = Path(path)
    for index in _index_paths(path):
        check_regular_file(index)  # htslib would block on a named pipe, or skip it unsaid
    options = [f"required_fields={CRAM_FIELDS:#x}".encode()] if _is_cram(path) else []
    try:
        # No htslib decompression threads: they gave no measurable speed here, and with them
        # pysam 0.24 hangs opening a truncated BAM.
        bam = pysam.AlignmentFile(str(path), format_options=options)
    except (OSError, ValueError) as err:
        raise InputError(path, f"cannot be read as BAM/CRAM ({err})") from None
    order = bam.header.to_dict().get("HD", {}).get("SO", "unknown")
    if order not in ("coordinate", "unknown"):
        bam.close()
        raise InputError(
            path, f"is sorted by {order}, not by coordinate; fix: {_sort_command(path)}"
        )
    if not bam.has_index():
        bam.close()
        fix = f"samtools index {path}" if order == "coordinate" else _sort_command(path)
        raise InputError(path, f"has no index (.bai/.csi/.crai) beside it; fix: {fix}")
    try:
        check_alignment_index(path, bam.nreferences)
    except BaseException:
        bam.close()
        raise
    return bam


def _index_paths(path: Path) -> list[Path]:
    """The index files beside ``path`` that htslib may open for it (``x.bam.bai``, ``x.bai``,
    ``x.bam.csi``, ``x.csi``; ``x.cram.crai``, ``x.crai``)."""
    suffixes = (".crai",) if _is_cram(path) else (".bai", ".csi")
    found: list[Path] = []
    for suffix in suffixes:
        for candidate in (Path(f"{path}{suffix}"), path.with_suffix(suffix)):
            if candidate.exists() and not candidate.is_dir() and candidate not in found:
                found.append(candidate)
    return found


def check_alignment_index(path: str | Path, n_refs: int) -> None:
    """Refuse an index of ``path`` that is older than it, or a ``.bai`` whose reference count or
    first records do not fit it (:func:`getdiff.indexes.check_index`): read through it, a BAM
    rewritten after indexing gives other reads, and peaks undercounted without a word."""
    path = Path(path)
    for index in _index_paths(path):
        validate = None
        if index.suffix == ".bai":
            validate = functools.partial(_bai_problem, path, index, n_refs)
        check_index(path, [index], _index_command(path, index), validate=validate, exhaustive=False)


def _index_command(path: Path, index: Path) -> str:
    """The samtools command that rebuilds ``index`` (one samtools does not write by that name
    is removed, so that no stale copy is left beside the new one)."""
    if index == Path(f"{path}.csi"):
        return f"samtools index -c {path}"
    if index in (Path(f"{path}.bai"), Path(f"{path}.crai")):
        return f"samtools index {path}"
    return f"rm {index} && samtools index {path}"


def _bai_problem(path: Path, index: Path, n_refs: int) -> str | None:
    """What does not fit between the BAM and its ``.bai``: the number of references, or a
    reference's first record (its virtual offset must hold a record of that reference)."""
    data = index.read_bytes()
    if data[:4] != b"BAI\x01":
        return "not a BAM index (no BAI magic bytes)"
    listed = int.from_bytes(data[4:8], "little")
    if listed != n_refs:
        return f"it lists {listed} references, the BAM's header {n_refs} (another BAM's index?)"
    try:
        firsts = _bai_firsts(data, n_refs)
    except (ValueError, IndexError):
        return "not a readable BAM index (truncated)"
    size = path.stat().st_size
    for ref, offset in enumerate(firsts):
        if offset is None:
            continue
        if offset >> 16 >= size or _refid_at(path, offset) != ref:
            return (
                f"reference {ref}'s first record (virtual offset {offset}) is not a record of "
                "that reference in the BAM (the index of another BAM, or of this one before it "
                "was rewritten)"
            )
    return None


def _refid_at(path: Path, offset: int) -> int | None:
    """The refID of the record at the virtual ``offset`` (None: no BGZF block or record there)."""
    decompress, errors = _inflater()
    data = b""
    with open(path, "rb") as handle:
        handle.seek(offset >> 16)
        while len(data) < (offset & 0xFFFF) + 8:
            head = handle.read(18)
            if len(head) < 18 or head[:4] != BGZF_MAGIC:
                return None
            block = handle.read(int.from_bytes(head[16:18], "little") + 1 - 18)
            try:
                data += decompress(block[:-8], -15)
            except errors:
                return None
    at = offset & 0xFFFF
    if int.from_bytes(data[at : at + 4], "little", signed=True) < 32:
        return None
    return int.from_bytes(data[at + 4 : at + 8], "little", signed=True)


def _is_cram(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == b"CRAM"


def _chunks(bam: Any, contig: str) -> Iterator[tuple[np.ndarray, ...]]:
    """(flag, mapq, start, end) int64 arrays of a CRAM contig's reads, CHUNK_READS at a time;
    ``end`` is -1 where pysam has none (unmapped, no CIGAR)."""
    reads = bam.fetch(contig)
    while True:
        flag, mapq, start, end = (array.array("q") for _ in range(4))
        # CRAM only (a BAM is decoded with numpy below): pysam gives no bulk access to these.
        add_flag, add_mapq, add_start, add_end = flag.append, mapq.append, start.append, end.append
        for read in itertools.islice(reads, CHUNK_READS):
            add_flag(read.flag)
            add_mapq(read.mapping_quality)
            add_start(read.reference_start)
            add_end(read.reference_end or -1)
        if len(flag):
            yield tuple(np.frombuffer(a, dtype=np.int64) for a in (flag, mapq, start, end))
        if len(flag) < CHUNK_READS:
            return


# --- BAM: BGZF blocks inflated in threads, records decoded with numpy --------------------------


def _inflater() -> tuple[Any, tuple[type[Exception], ...]]:
    """ISA-L's raw-deflate decoder where python-isal is installed (1.8x zlib's speed here), else
    zlib's; and the errors each raises on a corrupt block."""
    try:
        from isal import isal_zlib
    except ImportError:
        return zlib.decompress, (zlib.error,)
    return isal_zlib.decompress, (zlib.error, isal_zlib.error)


def _bgzf_blocks(path: Path, start: int = 0) -> Iterator[list[tuple[memoryview, int]]]:
    """The file's BGZF blocks from byte ``start`` on, about CHUNK_BYTES of compressed data at a
    time, each as (deflate payload, uncompressed size). Not BGZF, or a block cut by the end of
    the file: an error."""
    rest = b""
    with open(path, "rb") as handle:
        handle.seek(start)
        while True:
            read = handle.read(CHUNK_BYTES)
            data = rest + read
            view, at, blocks = memoryview(data), 0, []
            while at + 18 <= len(data):
                if data[at : at + 4] != BGZF_MAGIC:
                    raise InputError(
                        path, f"cannot be read as BAM/CRAM (no BGZF block at byte {at})"
                    )
                size = int.from_bytes(data[at + 16 : at + 18], "little") + 1
                if at + size > len(data):
                    break
                isize = int.from_bytes(data[at + size - 4 : at + size], "little")
                blocks.append((view[at + 18 : at + size - 8], isize))
                at += size
            rest = data[at:]
            if blocks:
                yield blocks
            if not read:
                if rest:
                    raise InputError(
                        path, "cannot be read as BAM/CRAM (its last BGZF block is cut)"
                    )
                return


def _inflate(
    path: Path, blocks: list[tuple[memoryview, int]], carry: np.ndarray, buffer: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``carry`` then the blocks inflated, in ``buffer`` (reused from chunk to chunk: no page
    faults for a fresh one each time; a larger one when it is too small), with four zero bytes
    after them; and the offset of each block in it."""
    decompress, errors = _inflater()
    sizes = np.array([isize for _, isize in blocks], dtype=np.int64)
    starts = len(carry) + np.cumsum(sizes) - sizes
    end = len(carry) + int(sizes.sum())
    if len(buffer) < end + len(PADDING):
        buffer = np.empty(2 * (end + len(PADDING)), dtype=np.uint8)
    buffer[: len(carry)] = carry
    try:
        for (payload, isize), at in zip(blocks, starts.tolist(), strict=True):
            part = decompress(payload, -15, max(isize, 1))
            if len(part) != isize:
                raise InputError(
                    path, "cannot be read as BAM/CRAM (a BGZF block's size differs from ISIZE)"
                )
            buffer[at : at + isize] = np.frombuffer(part, dtype=np.uint8)
    except errors as err:
        raise InputError(path, f"cannot be read as BAM/CRAM (corrupt BGZF block: {err})") from None
    # Four zero bytes past the end keep an int32 read at the end in bounds (see _walk).
    buffer[end : end + len(PADDING)] = 0
    return buffer, starts


def _at_every_byte(buffer: np.ndarray, dtype: str) -> np.ndarray:
    """A little-endian ``dtype`` view starting at every byte of ``buffer`` (unaligned reads)."""
    count = max(len(buffer) - np.dtype(dtype).itemsize + 1, 0)
    return np.ndarray((count,), dtype, buffer, 0, (1,))


def _header_length(buffer: np.ndarray) -> int | None:
    """Bytes of the BAM header (magic, text, references); None while ``buffer`` is shorter."""
    data = memoryview(buffer)
    if len(data) < 12:
        return None
    at = 12 + int.from_bytes(data[4:8], "little")
    if at > len(data):
        return None
    for _ in range(int.from_bytes(data[at - 4 : at], "little")):
        if at + 4 > len(data):
            return None
        at += 8 + int.from_bytes(data[at : at + 4], "little")
    return at if at <= len(data) else None


def _walk(
    size: np.ndarray, starts: np.ndarray, ends: np.ndarray, limit: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Follow the records of every segment ``[starts[i], ends[i])`` at once, one numpy step per
    record of the longest segment: the offsets found (ascending), where each walk stopped, and
    which walks stopped on a ``block_size`` below the 32 bytes of a record's fixed fields.
    ``size`` is the int32 at every byte of the buffer and one past its end (``limit``)."""
    steps, at = [], starts.copy()
    going = at < ends
    while going.any():
        length = size[at]
        step = going & (length >= 32) & (at + 4 + length <= limit)
        steps.append(np.where(step, at, -1))
        at += step * (4 + length)
        going = step & (at < ends)
    found = np.stack(steps, axis=1).ravel() if steps else np.empty(0, dtype=np.int64)
    readable = (at < ends) & (at + 4 <= limit)
    short = readable & (size[np.minimum(at, limit)] < 32)
    return found[found >= 0], at, short


def _walk_one(size: np.ndarray, at: int, limit: int) -> tuple[np.ndarray, int]:
    """The record offsets from ``at`` on, one by one: the fallback for records that straddle
    BGZF blocks (htslib never writes one where it fits in a block; some other writers do)."""
    found = []
    while at + 4 <= limit:
        length = int(size[at])
        if length < 32 or at + 4 + length > limit:
            break
        found.append(at)
        at += 4 + length
    return np.asarray(found, dtype=np.int64), at


def _record_offsets(
    path: Path, size: np.ndarray, first: int, blocks: np.ndarray, limit: int
) -> tuple[np.ndarray, int]:
    """Offsets of the whole records of a buffer whose first record starts at ``first``, and
    where its unfinished last record begins. Every block start is tried as a record start;
    a block's records count when the walk of the block before it ended exactly at its start
    (so the result is exact whatever the writer); from the first one that did not, records are
    followed one by one."""
    blocks = blocks[blocks > first]
    starts = np.concatenate([[first], blocks]).astype(np.int64)
    ends = np.concatenate([blocks, [limit]]).astype(np.int64)
    offsets, stopped, short = _walk(size, starts, ends, limit)
    aligned = np.concatenate([[True], stopped[:-1] == starts[1:]])
    broken = np.flatnonzero(~aligned | short)
    if not len(broken):
        return offsets, int(stopped[-1])
    cut = int(broken[0])
    if aligned[cut]:
        raise InputError(
            path, "cannot be read as BAM/CRAM (a record is shorter than its fixed fields)"
        )
    rest, tail = _walk_one(size, int(stopped[cut - 1]), limit)
    return np.concatenate([offsets[offsets < starts[cut]], rest]), tail


def _gather(buffer: np.ndarray, offsets: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The ``dtype`` records (structured or plain) stored at ``offsets`` of ``buffer``, copied
    out row by row (one memcpy-like gather: 3x faster than a field at a time)."""
    rows = np.ndarray(
        (len(buffer) - dtype.itemsize + 1, dtype.itemsize), np.uint8, buffer, 0, (1, 1)
    )
    return rows[offsets].view(dtype).ravel()


def _fields(path: Path, buffer: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, ...]:
    """(refid, flag, mapq, start, end) of the records at ``offsets`` (SAM spec 4.2); ``end`` =
    start + the reference length of the CIGAR (int64), -1 when unmapped or without CIGAR."""
    fixed = _gather(buffer, offsets, RECORD)
    n_ops = fixed["n_cigar_op"]
    cigar = offsets + 36 + fixed["l_read_name"]
    if np.any(cigar + 4 * n_ops.astype(np.int64) > offsets + 4 + fixed["block_size"]):
        raise InputError(path, "cannot be read as BAM/CRAM (a record is shorter than its CIGAR)")
    start, flag = fixed["pos"].astype(np.int64), fixed["flag"]
    has_ops = n_ops > 0
    if (n_ops == 1).all():  # one operation per read: no gather by read needed
        ops = _gather(buffer, cigar, CIGAR_OP)
        span = np.where((REFERENCE_OPS >> (ops & 0xF)) & 1, ops >> 4, 0).astype(np.int64)
    else:
        first_op = np.cumsum(n_ops, dtype=np.int64) - n_ops
        owner = np.repeat(np.arange(len(offsets)), n_ops)
        ops = _gather(
            buffer, cigar[owner] + 4 * (np.arange(len(owner)) - first_op[owner]), CIGAR_OP
        )
        spans = np.where((REFERENCE_OPS >> (ops & 0xF)) & 1, ops >> 4, 0).astype(np.int64)
        span = np.zeros(len(offsets), dtype=np.int64)
        if len(spans):
            span[has_ops] = np.add.reduceat(spans, first_op[has_ops])
    end = np.where(~has_ops | (flag & UNMAPPED != 0), -1, start + span)
    return fixed["refid"], flag, fixed["mapq"], start, end


def _bam_records(path: Path, start: int | None = None) -> Iterator[tuple[np.ndarray, ...]]:
    """(refid, flag, mapq, start, end) arrays of the BAM's records in file order, one chunk of
    CHUNK_BYTES compressed at a time (memory: one inflated chunk, reused); from the first
    record, or from the virtual offset ``start`` (compressed offset << 16 | offset in the
    block) of one."""
    carry, reused = np.empty(0, dtype=np.uint8), np.empty(0, dtype=np.uint8)
    first = None if start is None else start & 0xFFFF
    for chunk in _bgzf_blocks(path, (start or 0) >> 16):
        reused, blocks = _inflate(path, chunk, carry, reused)
        if len(carry):  # a record cut by the last chunk's end: one segment with the first block
            blocks = blocks[1:]
        limit = len(carry) + sum(isize for _, isize in chunk)
        padded = reused[: limit + len(PADDING)]
        buffer = padded[:limit]
        if first is None and (first := _header_length(buffer)) is None:
            carry = buffer.copy()
            continue
        size = _at_every_byte(padded, "<i4")  # the int32 at every byte, one past the end too
        offsets, tail = _record_offsets(path, size, first, blocks, limit)
        first, carry = 0, buffer[tail:].copy()
        if len(offsets):
            yield _fields(path, buffer, offsets)
    if len(carry) or first is None:
        raise InputError(path, "cannot be read as BAM/CRAM (its last record is cut)")


def _i32(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 4], "little", signed=True)


def _first_records(path: Path, n_refs: int) -> list[int | None] | None:
    """Per reference, the virtual offset of its first record (None: no record), read from the
    ``.bai`` beside the BAM (the smallest chunk start of its bins; SAM spec 5.2); None without
    a ``.bai`` (a ``.csi`` only) or when it does not list ``n_refs`` references."""
    index = next((p for p in (Path(f"{path}.bai"), path.with_suffix(".bai")) if p.is_file()), None)
    if index is None:
        return None
    data = index.read_bytes()
    if data[:4] != b"BAI\x01" or int.from_bytes(data[4:8], "little") != n_refs:
        return None
    return _bai_firsts(data, n_refs)


def _bai_firsts(data: bytes, n_refs: int) -> list[int | None]:
    """Per reference, the smallest chunk start of its bins in the ``.bai`` bytes ``data``."""
    at, firsts = 8, []
    for _ in range(n_refs):
        n_bins, at, smallest = _i32(data, at), at + 4, None
        for _ in range(n_bins):
            bin_id, n_chunks = _i32(data, at), _i32(data, at + 4)
            if n_chunks and bin_id != PSEUDO_BIN:
                low = int(np.frombuffer(data, "<u8", 2 * n_chunks, at + 8)[::2].min())
                smallest = low if smallest is None else min(smallest, low)
            at += 8 + 16 * n_chunks
        at += 4 + 8 * _i32(data, at)  # the linear index
        firsts.append(smallest)
    return firsts


class _ReadStats:
    """Reads seen on peak chromosomes, kept, and dropped per filter reason."""

    def __init__(self) -> None:
        self.reads = self.kept = 0
        self.dropped: dict[str, int] = {}

    def add(self, kept: np.ndarray, dropped: dict[str, np.ndarray]) -> None:
        self.reads += len(kept)
        self.kept += int(kept.sum())
        for reason, mask in dropped.items():
            self.dropped[reason] = self.dropped.get(reason, 0) + int(mask.sum())

    def merge(self, other: _ReadStats) -> None:
        self.reads += other.reads
        self.kept += other.kept
        for reason, n in other.dropped.items():
            self.dropped[reason] = self.dropped.get(reason, 0) + n

    def nonzero(self) -> dict[str, int]:
        return {reason: n for reason, n in self.dropped.items() if n}


def _add_reads(
    rules: ReadFilter, tally: SiteTally, stats: _ReadStats, target: str, *fields: np.ndarray
) -> None:
    """Filter one contig's reads (flag, mapq, start, end) and add their sites to the tally."""
    flag, mapq, start, end = fields
    dropped = rules.dropped(flag, mapq, end)
    kept = ~np.logical_or.reduce(list(dropped.values()))
    stats.add(kept, dropped)
    tally.add(target, rules.sites(flag[kept], start[kept], end[kept]))


def _unsorted(path: str | Path, contig: str) -> InputError:
    return InputError(
        path, f"is not sorted by coordinate on {contig}; fix: {_sort_command(Path(path))}"
    )


def _count_contig(
    bam: Any, contig: str, target: str, rules: ReadFilter, tally: SiteTally, stats: _ReadStats
) -> None:
    """Add one CRAM contig's kept reads to the tally; an unsorted stretch is an error."""
    previous = -1
    for flag, mapq, start, end in _chunks(bam, contig):
        if start[0] < previous or np.any(start[1:] < start[:-1]):
            raise _unsorted(tally.path, contig)
        previous = int(start[-1])
        _add_reads(rules, tally, stats, target, flag, mapq, start, end)


def _count_records(
    records: Iterator[tuple[np.ndarray, ...]],
    refs: range,
    references: Sequence[str],
    targets: Sequence[str | None],
    job: _Job,
) -> None:
    """Add the kept reads of ``records`` on the references ``refs`` (the first record on one
    of them) that have peaks; stop at the first record past them. Records out of coordinate
    order are an error."""
    path, rules, tally, stats = job
    last = (refs.start, -1)  # (refid, start) of the previous chunk's last placed record
    for refid, flag, mapq, start, end in records:
        past = np.flatnonzero((refid >= refs.stop) | (refid < 0))
        cut = int(past[0]) if len(past) else len(refid)
        refid, flag, mapq, start, end = (a[:cut] for a in (refid, flag, mapq, start, end))
        if cut:
            step = np.diff(refid, prepend=last[0])
            back = (step < 0) | ((step == 0) & (np.diff(start, prepend=last[1]) < 0))
            if back.any():
                raise _unsorted(path, references[int(refid[np.argmax(back)])])
            last = (int(refid[-1]), int(start[-1]))
        bounds = np.flatnonzero(np.diff(refid)) + 1
        for lo, hi in zip([0, *bounds], [*bounds, cut], strict=True):
            if lo < hi and (target := targets[int(refid[lo])]) is not None:
                chosen = slice(lo, hi)
                fields = (flag[chosen], mapq[chosen], start[chosen], end[chosen])
                _add_reads(rules, tally, stats, target, *fields)
        if len(past):
            return


_Job = tuple[Path, ReadFilter, SiteTally, "_ReadStats"]
_FORKED: dict[str, Any] = {}  # a counting run's state, inherited by its forked workers


def _count_span(span: list[tuple[int, range]]) -> tuple[np.ndarray, int, _ReadStats]:
    """In a worker: count the runs of references of ``span`` (first record's virtual offset,
    references) into a tally of its own; its counts, sites and read statistics."""
    path, rules, tally, references, targets = (_FORKED[k] for k in FORKED_KEYS)
    tally = copy.copy(tally)  # the peak index shared, counts of its own
    tally.counts = np.zeros_like(tally.counts)
    tally.sites_on_peak_chromosomes = 0
    stats = _ReadStats()
    for offset, refs in span:
        job = (path, rules, tally, stats)
        _count_records(_bam_records(path, offset), refs, references, targets, job)
    return tally.counts, tally.sites_on_peak_chromosomes, stats


FORKED_KEYS = ("path", "rules", "tally", "references", "targets")


def _spans(
    firsts: Sequence[int | None], targets: Sequence[str | None], parts: int, size: int
) -> list[list[tuple[int, range]]]:
    """The references with reads and peaks dealt, in file order, into at most ``parts`` spans
    of about equal compressed bytes; each span a list of runs (virtual offset of the run's
    first record, consecutive references read in one pass)."""
    with_reads = [ref for ref, offset in enumerate(firsts) if offset is not None]
    ends = [firsts[ref] >> 16 for ref in with_reads[1:]] + [size]
    nbytes = {ref: end - (firsts[ref] >> 16) for ref, end in zip(with_reads, ends, strict=True)}
    chosen = [ref for ref in with_reads if targets[ref] is not None]
    total = sum(nbytes[ref] for ref in chosen) or 1
    spans: list[list[tuple[int, range]]] = [[] for _ in range(parts)]
    done = 0
    for ref in chosen:
        span = spans[min(parts * (2 * done + nbytes[ref]) // (2 * total), parts - 1)]  # by middle
        if span and span[-1][1].stop == ref:  # the next reference of the file: the same run
            span[-1] = (span[-1][0], range(span[-1][1].start, ref + 1))
        else:
            span.append((firsts[ref], range(ref, ref + 1)))
        done += nbytes[ref]
    return [span for span in spans if span]


def _count_bam(
    path: Path,
    references: Sequence[str],
    rules: ReadFilter,
    tally: SiteTally,
    stats: _ReadStats,
    threads: int,
) -> None:
    """Add the kept reads of the BAM's references that have peaks. With a ``.bai`` only those
    references are read, and with ``threads`` > 1 by that many forked processes (each over
    whole references, about equal bytes); without one, the whole file in one pass."""
    targets = [tally.peak_chrom(name) for name in references]  # a naming mismatch raises here
    firsts = _first_records(path, len(references))
    if firsts is None:
        job = (path, rules, tally, stats)
        _count_records(_bam_records(path), range(len(references)), references, targets, job)
        return
    parts = max(1, min(threads, len(references)))
    spans = _spans(firsts, targets, parts, path.stat().st_size)
    _FORKED.update(path=path, rules=rules, tally=tally, references=references, targets=targets)
    try:
        if len(spans) <= 1:
            results = [_count_span(span) for span in spans]
        else:
            context = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(len(spans), mp_context=context) as pool:
                results = list(pool.map(_count_span, spans))
    finally:
        _FORKED.clear()
    for counts, sites, part in results:
        tally.counts += counts
        tally.sites_on_peak_chromosomes += sites
        stats.merge(part)


def _check_peaks_in_header(
    path: Path,
    peaks: pd.DataFrame,
    tally: SiteTally,
    lengths: dict[str, int],
    source: str | Path,
    chromosomes: Collection[str] | None,
) -> None:
    """Refuse a peak (on ``chromosomes``; None: every peak) on a chromosome the BAM's header
    lacks or ending past its length there: no read of this file can be in it."""
    by_peak = {}
    for name, length in lengths.items():
        target = tally.peak_chrom(name)  # a strict naming mismatch is an error here
        if target is not None:
            by_peak[target] = length
    if not by_peak:  # no peak chromosome at all: SiteTally.check names what the file has
        return
    table = peaks if chromosomes is None else peaks[peaks["chrom"].isin(list(chromosomes))]
    if "line" not in table:
        table = table.assign(line=np.arange(1, len(table) + 1))
    check_within_lengths(source or path, table, by_peak, f"the header of {path}")


def count_reads(
    path: str | Path,
    peaks: pd.DataFrame,
    rules: ReadFilter,
    source: str | Path = "",
    chrom_naming: str = "strict",
    threads: int = 1,
    chromosomes: Collection[str] | None = None,
) -> tuple[np.ndarray, CountSummary]:
    """(n_peaks,) int64 insertion sites of the BAM/CRAM's kept reads inside each peak, and the
    summary (reads on the peaks' chromosomes, kept, sites in peaks).

    ``peaks`` needs chrom, start, end (and ``line``, the peak file's line, for errors);
    ``rules`` says which reads count and whether to shift; ``source`` names the peak file in
    errors; ``chrom_naming`` is ``strict`` or ``harmonise``; ``threads`` BGZF inflating
    threads (BAM); the peaks on ``chromosomes`` (None: every peak) must lie within the
    header's sequences.
    """
    path = Path(path)
    tally = SiteTally(peaks, path, source, chrom_naming)
    stats = _ReadStats()
    bam = open_alignments(path)
    cram = _is_cram(path)
    references = list(bam.references)
    try:
        lengths = dict(zip(references, bam.lengths, strict=True))
        _check_peaks_in_header(path, peaks, tally, lengths, source, chromosomes)
        if cram:
            for contig in references:
                target = tally.peak_chrom(contig)
                if target is not None:
                    _count_contig(bam, contig, target, rules, tally, stats)
    except OSError as err:  # htslib: a corrupt block or record inside the file
        raise InputError(path, f"cannot be read as BAM/CRAM ({err})") from None
    finally:
        with contextlib.suppress(OSError):  # closing fails again after a read error
            bam.close()
    if not cram:
        _count_bam(path, references, rules, tally, stats, threads)
    if stats.reads and not stats.kept:
        raise InputError(
            path,
            f"none of {stats.reads:,} reads on the peaks' chromosomes passes the read filters "
            f"(dropped per reason: {stats.nonzero()}; prepare.bam: {asdict(rules)})",
        )
    tally.check("read")
    summary = tally.summary("read", stats.reads, stats.kept, stats.kept)
    log.info(
        "%s: %d reads on the peaks' chromosomes, %d kept (dropped per reason, a read may have "
        "several: %s), %d insertion sites in peaks (%.1f%% of the kept reads)",
        path,
        stats.reads,
        stats.kept,
        stats.nonzero(),
        summary.in_peaks,
        100.0 * summary.in_peaks / max(stats.kept, 1),
    )
    return tally.counts, summary


def count_read_insertions(
    path: str | Path,
    peaks: pd.DataFrame,
    rules: ReadFilter,
    source: str | Path = "",
    chrom_naming: str = "strict",
    threads: int = 1,
    chromosomes: Collection[str] | None = None,
) -> np.ndarray:
    """The per-peak counts of :func:`count_reads`."""
    return count_reads(path, peaks, rules, source, chrom_naming, threads, chromosomes)[0]


__all__ = [
    "ReadFilter",
    "check_alignment_index",
    "count_read_insertions",
    "count_reads",
    "open_alignments",
    "read_filter",
]
