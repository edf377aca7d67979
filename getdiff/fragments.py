"""Accessibility from a fragments file: Tn5 insertion sites per peak, bulk or pseudobulk.

A ``counts_file`` in the cell-type sheet is a bedGraph (``chrom start end count``, matched to
peaks by exact coordinates, :func:`getdiff.peaks.read_counts_file`) or a fragments file
(10x Genomics layout: ``chrom start end barcode [count]``, plain, gzip or bgzip; ``#`` header
lines skipped). :func:`counts_format` tells them apart from the content, not the name: a
fragments file has a barcode, not a number, in column 4. BAM/CRAM input is recognised and
refused (not supported yet).

Counting (:func:`count_insertions`). Fragment coordinates are 0-based half-open and already
Tn5-shifted (as cellranger-atac writes them), so each fragment has two insertion sites,
``start`` and ``end - 1``. A peak's count is the number of insertion sites inside it; a fragment
counts once whatever its ``count`` column (read support, i.e. PCR duplicates). With a barcode
file (sheet column ``barcodes``) only the fragments of those barcodes count: one barcode per
line, or ``barcode<TAB>group`` lines of which those whose group is the cell type's name are used,
so one fragments file defines several cell types (pseudobulk).

The file is streamed in blocks (pyarrow's CSV reader): memory is bounded by the block size and
the peaks, not by the file. Per block, the insertion sites of each chromosome are sorted once and
every peak of that chromosome is counted by two binary searches (overlapping peaks each get their
sites). Logged: fragments read, kept by barcode, insertion sites in peaks (FRiP); errors name the
files: no barcode of the list in the fragments, no fragment on the peaks' chromosomes, no site in
any peak.
"""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from getdiff.errors import InputError
from getdiff.intervals import check_match_rate
from getdiff.io import is_gzipped, open_text, reading

log = logging.getLogger(__name__)

BLOCK_BYTES = 8 << 20  # text per parsed block; bounds memory whatever the file size
BAM_MAGIC = b"BAM\x01"
CRAM_MAGIC = b"CRAM"


def counts_format(path: str | Path) -> str:
    """``bedgraph`` or ``fragments``, from the first data line; BAM/CRAM are refused."""
    fields = _first_fields(path)
    if len(fields) >= 4:
        try:
            float(fields[3])
        except ValueError:
            return "fragments"
    return "bedgraph"


def _first_fields(path: str | Path) -> list[str]:
    """The tab-separated fields of the first data line (BAM/CRAM and empty files refused)."""
    with reading(path):
        with open(path, "rb") as raw:
            head = raw.read(4)
        if is_gzipped(path):
            with gzip.open(path, "rb") as handle:
                head = handle.read(4)
        if head in (BAM_MAGIC, CRAM_MAGIC):
            raise InputError(
                path,
                "is a BAM/CRAM file; counts_file takes a fragments file or a bedGraph "
                "(make fragments with e.g. sinto fragments, or count with bedtools multicov)",
            )
        with open_text(path) as handle:
            for line in handle:
                if line.strip() and not line.startswith(("#", "track", "browser")):
                    fields = line.rstrip("\n").split("\t")
                    break
            else:
                raise InputError(path, "no counts found: the file is empty or holds only headers")
    return fields


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


def _blocks(path: Path):
    """The fragments file as record batches of chrom, start, end, barcode."""
    extra = max(len(_first_fields(path)) - 4, 0)  # the count column, and any after it
    names = ["chrom", "start", "end", "barcode", *(f"extra{i}" for i in range(extra))]
    # Arrow decompresses in C++ (bgzip's many gzip members included), off the Python thread.
    handle = pa.input_stream(str(path), compression="gzip" if is_gzipped(path) else None)
    options = pacsv.ParseOptions(delimiter="\t", invalid_row_handler=_header_or_short)
    types = {"chrom": pa.string(), "start": pa.int64(), "end": pa.int64(), "barcode": pa.string()}
    convert = pacsv.ConvertOptions(column_types=types, include_columns=names[:4])
    read = pacsv.ReadOptions(column_names=names, block_size=BLOCK_BYTES)
    with handle:
        reader = pacsv.open_csv(handle, read, options, convert)
        yield from reader


def _header_or_short(row: pacsv.InvalidRow) -> str:
    """Skip ``#`` header lines; any other malformed line is an error (raised by the reader)."""
    return "skip" if (row.text or "").startswith("#") else "error"


class _Tally:
    """Insertion sites per peak, accumulated over blocks; peaks grouped by chromosome."""

    def __init__(self, peaks: pd.DataFrame) -> None:
        self.counts = np.zeros(len(peaks), dtype=np.int64)
        self.index = {
            chrom: (rows.to_numpy(), peaks["start"].to_numpy()[rows], peaks["end"].to_numpy()[rows])
            for chrom, rows in pd.Series(np.arange(len(peaks))).groupby(peaks["chrom"].to_numpy())
        }
        self.fragments = self.kept = self.on_peak_chromosomes = 0

    def add(self, block: pa.RecordBatch, barcodes: pa.Array | None) -> None:
        self.fragments += block.num_rows
        if barcodes is not None:
            block = block.filter(pc.is_in(block.column("barcode"), value_set=barcodes))
        self.kept += block.num_rows
        chrom = block.column("chrom").dictionary_encode()
        codes = chrom.indices.to_numpy(zero_copy_only=False)
        start = block.column("start").to_numpy()
        end = block.column("end").to_numpy()
        for code, name in enumerate(chrom.dictionary.to_pylist()):
            if name not in self.index:
                continue
            rows = codes == code
            self.on_peak_chromosomes += int(rows.sum())
            sites = np.sort(np.concatenate([start[rows], end[rows] - 1]))
            peak_rows, peak_start, peak_end = self.index[name]
            inside = np.searchsorted(sites, peak_end) - np.searchsorted(sites, peak_start)
            self.counts[peak_rows] += inside


def count_insertions(
    path: str | Path, peaks: pd.DataFrame, barcodes: np.ndarray | None = None, source: str = ""
) -> np.ndarray:
    """(n_peaks,) int64 insertion sites of the fragments file inside each peak (module doc).

    ``peaks`` needs chrom, start, end; ``barcodes`` (optional) selects the fragments counted;
    ``source`` names the peak file (and barcode file) in errors.
    """
    path = Path(path)
    tally = _Tally(peaks)
    wanted = None if barcodes is None else pa.array(barcodes, pa.string())
    try:
        with reading(path):
            for block in _blocks(path):
                tally.add(block, wanted)
    except pa.ArrowInvalid as err:
        raise InputError(
            path, f"not a fragments file ({err}); expected chrom start end barcode [count]"
        ) from None
    _check_tally(path, tally, barcodes is not None, source)
    in_peaks = int(tally.counts.sum())
    log.info(
        "%s: %d fragments, %d kept%s, %d insertion sites in peaks (%.1f%% of the kept sites)",
        path,
        tally.fragments,
        tally.kept,
        " by barcode" if barcodes is not None else "",
        in_peaks,
        100.0 * in_peaks / max(2 * tally.kept, 1),
    )
    return tally.counts


def _check_tally(path: Path, tally: _Tally, filtered: bool, source: str) -> None:
    """The match-rate rule for fragments: barcodes, chromosomes, then sites in peaks."""
    if filtered:
        what = "fragments with a listed barcode"
        check_match_rate(tally.kept, tally.fragments, what, path, source)
        if tally.kept == 0:
            return
    if tally.on_peak_chromosomes == 0:
        raise InputError(
            path,
            f"no fragment lies on a chromosome of the peaks ({source}); check the genome build "
            "and chromosome naming (chr1 vs 1)",
        )
    if not tally.counts.any():
        raise InputError(
            path,
            f"no insertion site lies in any peak of {source}; check the genome build and "
            "0- vs 1-based coordinates",
        )
    with_sites = int(np.count_nonzero(tally.counts))
    check_match_rate(with_sites, len(tally.counts), "peaks with insertion sites", path, source)


__all__ = ["count_insertions", "counts_format", "read_barcodes"]
