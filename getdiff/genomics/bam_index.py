"""A BAM/CRAM index checked against its alignments before it is trusted: older than the file,
or a ``.bai`` whose reference count or first records do not fit the BAM (a rewritten BAM read
through its old index gives other reads, and peaks undercounted without a word)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from getdiff.genomics.bam_records import BGZF_MAGIC, inflater
from getdiff.genomics.indexes import check_index

PSEUDO_BIN = 37450  # the .bai bin holding a reference's offsets and read counts, not reads


def is_cram(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == b"CRAM"


def index_paths(path: Path) -> list[Path]:
    """The index files beside ``path`` that htslib may open for it (``x.bam.bai``, ``x.bai``,
    ``x.bam.csi``, ``x.csi``; ``x.cram.crai``, ``x.crai``)."""
    suffixes = (".crai",) if is_cram(path) else (".bai", ".csi")
    found: list[Path] = []
    for suffix in suffixes:
        for candidate in (Path(f"{path}{suffix}"), path.with_suffix(suffix)):
            if candidate.exists() and not candidate.is_dir() and candidate not in found:
                found.append(candidate)
    return found


def check_alignment_index(path: str | Path, n_refs: int) -> None:
    """Refuse an index of ``path`` that is older than it, or a ``.bai`` whose reference count or
    first records do not fit it (:func:`getdiff.genomics.indexes.check_index`): read through it, a
    BAM rewritten after indexing gives other reads, and peaks undercounted without a word."""
    path = Path(path)
    for index in index_paths(path):
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
    decompress, errors = inflater()
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


def _i32(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 4], "little", signed=True)


def first_records(path: Path, n_refs: int) -> list[int | None] | None:
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
