"""Accessibility from a fragments file: Tn5 insertion sites per peak, bulk or pseudobulk.

A ``counts_file`` in the cell-type sheet is a bedGraph (``chrom start end count``, matched to
peaks by exact coordinates, :func:`getdiff.peaks.read_counts_file`), a fragments file (10x
Genomics layout: ``chrom start end barcode [count]``, plain, gzip or bgzip; ``#`` header lines
skipped) or a BAM/CRAM (counted by :mod:`getdiff.bam`). :func:`counts_format` tells them apart
from the content, not the name: BAM/CRAM by their magic bytes, a fragments file by a barcode, not
a number, in column 4.

Counting (:func:`count_insertions`). Fragment coordinates are 0-based half-open and already
Tn5-shifted (as cellranger-atac writes them), so each fragment has two insertion sites,
``start`` and ``end - 1``. A peak's count is the number of insertion sites inside it; a fragment
counts once whatever its ``count`` column (read support, i.e. PCR duplicates). With a barcode
file (sheet column ``barcodes``) only the fragments of those barcodes count: one barcode per
line, or ``barcode<TAB>group`` lines of which those whose group is the cell type's name are used,
so one fragments file defines several cell types (pseudobulk).

The file is streamed in blocks (pyarrow's CSV reader, gzip decoded by ISA-L where python-isal
is installed, in a thread of its own with ``threads`` > 1): memory is bounded by the block size and
the peaks, not by the file. Per block and chromosome the sites go to a
:class:`getdiff.insertions.SiteTally` (sorted once, two binary searches per peak; chromosome
naming checked or harmonised there). Logged: fragments read, kept by barcode, insertion sites in
peaks (FRiP); errors name the files: no barcode of the list in the fragments, a ``1`` vs ``chr1``
naming mismatch (under ``chrom_naming="strict"``), no fragment on the peaks' chromosomes, no site
in any peak.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from getdiff.errors import InputError
from getdiff.insertions import CountSummary, SiteTally
from getdiff.intervals import check_match_rate
from getdiff.io import is_gzipped, open_text, reading

log = logging.getLogger(__name__)

BLOCK_BYTES = 8 << 20  # text per parsed block; bounds memory whatever the file size
ALIGNMENT_MAGIC = {b"BAM\x01": "bam", b"CRAM": "cram"}  # counted by getdiff.bam


def counts_format(path: str | Path) -> str:
    """``bam``, ``cram``, ``fragments`` or ``bedgraph``, from the content: the magic bytes, then
    column 4 of the first data line (a barcode, not a number, makes a fragments file)."""
    with reading(path):
        with open(path, "rb") as raw:
            head = raw.read(4)
        if is_gzipped(path):  # BGZF is gzip: a BAM's magic is inside the first block
            with gzip.open(path, "rb") as handle:
                head = handle.read(4)
    if head in ALIGNMENT_MAGIC:
        return ALIGNMENT_MAGIC[head]
    fields = _first_fields(path)
    if len(fields) >= 4:
        try:
            float(fields[3])
        except ValueError:
            return "fragments"
    return "bedgraph"


def _first_fields(path: str | Path) -> list[str]:
    """The tab-separated fields of the first data line (an empty file is an error)."""
    with reading(path), open_text(path) as handle:
        for line in handle:
            if line.strip() and not line.startswith(("#", "track", "browser")):
                return line.rstrip("\n").split("\t")
    raise InputError(path, "no counts found: the file is empty or holds only headers")


def read_barcodes(path: str | Path, group: str) -> np.ndarray:
    """The barcodes of ``group``: every line's barcode, or those whose second field is ``group``."""
    with reading(path), open_text(path) as handle:
        lines = [line.rstrip("\n").split("\t") for line in handle]
    rows = [fields for fields in lines if fields[0].strip() and not fields[0].startswith("#")]
    if not rows:
        raise InputError(path, "no barcodes found: the file is empty")
    grouped = [fields for fields in rows if len(fields) >= 2]
    if grouped and len(grouped) != len(rows):
        raise InputError(path, "mixes lines with and without a group; expected barcode[<TAB>group]")
    if grouped:
        chosen = [fields[0].strip() for fields in grouped if fields[1].strip() == group]
        if not chosen:
            groups = sorted({fields[1].strip() for fields in grouped})
            raise InputError(path, f"no barcode of group {group!r}; groups: {groups[:10]}")
        return np.unique(chosen)
    return np.unique([fields[0].strip() for fields in rows])


def _decompressed(path: Path, threads: int) -> Any:
    """The file as a binary stream: ISA-L's gzip decoder where python-isal is installed (a
    third faster than Arrow's zlib here; with ``threads`` > 1 it inflates in a thread of its
    own, ahead of the parser), else Arrow's; plain text as it is."""
    if not is_gzipped(path):
        return pa.input_stream(str(path))
    try:
        from isal import igzip, igzip_threaded
    except ImportError:
        return pa.input_stream(str(path), compression="gzip")
    if threads > 1:
        return igzip_threaded.open(path, "rb", threads=1, block_size=1 << 20)
    return igzip.open(path, "rb")


def _blocks(path: Path, threads: int = 1, barcode: bool = True) -> Iterator[pa.RecordBatch]:
    """The fragments file as record batches of chrom, start, end and (``barcode``) barcode;
    without it the barcode strings are never converted (a fifth faster)."""
    extra = max(len(_first_fields(path)) - 4, 0)  # the count column, and any after it
    names = ["chrom", "start", "end", "barcode", *(f"extra{i}" for i in range(extra))]
    options = pacsv.ParseOptions(delimiter="\t", invalid_row_handler=_header_or_short)
    types = {"chrom": pa.string(), "start": pa.int64(), "end": pa.int64(), "barcode": pa.string()}
    convert = pacsv.ConvertOptions(column_types=types, include_columns=names[: 4 if barcode else 3])
    read = pacsv.ReadOptions(column_names=names, block_size=BLOCK_BYTES)
    # Decompressed in C (bgzip's many gzip members included), off the Python thread.
    with _decompressed(path, threads) as handle:
        reader = pacsv.open_csv(handle, read, options, convert)
        yield from reader


def _first_bad_line(path: Path) -> int | None:
    """The number of the first data line that is not ``chrom start end barcode ...`` with
    integer coordinates (read again line by line, only once the fast reader has failed)."""
    with reading(path), open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            if line.startswith("#"):
                continue
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 4 or not (fields[1].isdigit() and fields[2].isdigit()):
                return number
    return None


def _header_or_short(row: pacsv.InvalidRow) -> str:
    """Skip ``#`` header lines; any other malformed line is an error (raised by the reader)."""
    return "skip" if (row.text or "").startswith("#") else "error"


def _add_block(tally: SiteTally, block: pa.RecordBatch) -> int:
    """Count one block's insertion sites (``start``, ``end - 1``) into the tally, chromosome by
    chromosome; returns how many of its fragments lie on a peak chromosome."""
    chrom = block.column("chrom").dictionary_encode()
    codes = chrom.indices.to_numpy(zero_copy_only=False)
    start = block.column("start").to_numpy()
    end = block.column("end").to_numpy()
    on_peaks = 0
    for code, name in enumerate(chrom.dictionary.to_pylist()):
        target = tally.peak_chrom(name)
        if target is None:
            continue
        rows = codes == code
        on_peaks += int(rows.sum())
        tally.add(target, np.concatenate([start[rows], end[rows] - 1]))
    return on_peaks


def count_fragments(
    path: str | Path,
    peaks: pd.DataFrame,
    barcodes: np.ndarray | None = None,
    source: str = "",
    chrom_naming: str = "strict",
    threads: int = 1,
) -> tuple[np.ndarray, CountSummary]:
    """(n_peaks,) int64 insertion sites of the fragments file inside each peak (module doc),
    and the summary (fragments read, kept by barcode, sites in peaks).

    ``peaks`` needs chrom, start, end; ``barcodes`` (optional) selects the fragments counted;
    ``source`` names the peak file (and barcode file) in errors; ``chrom_naming`` (``strict`` or
    ``harmonise``) says what a ``1`` vs ``chr1`` difference does (:mod:`getdiff.insertions`);
    ``threads`` > 1 inflates in a thread of its own.
    """
    path = Path(path)
    tally = SiteTally(peaks, path, source, chrom_naming)
    wanted = None if barcodes is None else pa.array(barcodes, pa.string())
    fragments = kept = 0
    try:
        with reading(path):
            for block in _blocks(path, threads, barcode=wanted is not None):
                fragments += block.num_rows
                if wanted is not None:
                    block = block.filter(pc.is_in(block.column("barcode"), value_set=wanted))
                kept += block.num_rows
                _add_block(tally, block)
    except pa.ArrowInvalid as err:
        raise InputError(
            path,
            f"not a fragments file ({err}); expected chrom start end barcode [count]",
            _first_bad_line(path),
        ) from None
    if wanted is not None:
        check_match_rate(kept, fragments, "fragments with a listed barcode", path, source)
    tally.check("fragment")
    summary = tally.summary("fragment", fragments, kept, 2 * kept)
    log.info(
        "%s: %d fragments, %d kept%s, %d insertion sites in peaks (%.1f%% of the kept sites)",
        path,
        fragments,
        kept,
        " by barcode" if barcodes is not None else "",
        summary.in_peaks,
        100.0 * summary.in_peaks / max(2 * kept, 1),
    )
    return tally.counts, summary


def count_insertions(
    path: str | Path,
    peaks: pd.DataFrame,
    barcodes: np.ndarray | None = None,
    source: str = "",
    chrom_naming: str = "strict",
) -> np.ndarray:
    """The per-peak counts of :func:`count_fragments`."""
    return count_fragments(path, peaks, barcodes, source, chrom_naming)[0]


__all__ = ["count_fragments", "count_insertions", "counts_format", "read_barcodes"]
