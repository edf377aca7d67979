"""Peak files -> one validated, filtered, sorted table of peaks with their counts.

Input: a BED3+ / narrowPeak file (plain or gzip; ``track``/``browser``/``#`` lines and blank lines
are skipped wherever they are; CRLF accepted; columns split on whitespace). Optional per-peak
counts come from a 1-based column of the peak file or from a separate bedGraph-like file
``chrom start end count`` matched by exact coordinates (peaks missing from it get count 0).

Output (:func:`load_peaks`): a DataFrame with columns ``chrom`` (str), ``start``, ``end`` (int64,
0-based half-open BED coordinates), ``name`` (str; ``chrom:start-end`` when the file has no name or
``.``), ``counts`` (float64, NaN when the cell type has no counts) and ``line`` (1-based line of
the peak in its file), restricted to the selected chromosomes, sorted by natural chromosome order
(chr1, chr2, ..., chr10, ..., chrX), then start, then end. Every per-peak value moves with its
coordinates. Also returns how many peaks were dropped, per reason.

Errors are :class:`~getdiff.errors.InputError` naming the file, the line and what was expected:
malformed lines, non-integer / negative coordinates, start >= end, duplicate peaks (same chrom,
start and end; unless ``duplicate_peaks`` says otherwise, see :func:`resolve_duplicates`),
non-numeric / NaN / inf / negative counts, empty files, unreadable files (missing,
truncated or corrupt gzip, not UTF-8). Unsorted input is accepted.

Two readers, one result: a file in the common clean form is parsed by pyarrow
(:func:`~getdiff.genomics.intervals.read_bed_columns`, 0.04 s for 100k peaks); any other file, or
one with a value that fails a check, by the line-by-line pandas reader (0.6 s), which takes the
whole format above and names the line of an error.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from getdiff.errors import InputError, raise_first_bad_line
from getdiff.genomics.bam import ReadFilter, count_read_insertions
from getdiff.genomics.fragments import count_insertions, counts_format
from getdiff.genomics.intervals import (
    COORDINATE,
    NUMBER,
    TEXT,
    IrregularText,
    check_match_rate,
    count_header_lines,
    harmonise_chrom,
    natural_chrom_key,
    parse_coordinates,
    read_bed_columns,
    read_bed_fields,
)

log = logging.getLogger(__name__)

DUPLICATE_PEAKS = ("error", "first", "merge")
DEFAULT_CHROMOSOMES: tuple[str, ...] = tuple(f"chr{i}" for i in range(1, 23)) + ("chrX",)


def genome_order(chrom: pd.Series, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Indices sorting rows by natural chromosome order, then start, then end (stable)."""
    names = sorted(pd.unique(chrom), key=natural_chrom_key)
    rank = pd.Categorical(chrom, categories=names).codes
    return np.lexsort((end, start, rank))


def parse_count_values(
    path: str | Path, text: pd.Series, numbers: np.ndarray, column: int
) -> np.ndarray:
    """Validate a column of counts: numeric, finite, >= 0 (float64)."""
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    hits = np.flatnonzero(bad)
    shown = repr(text.iloc[hits[0]]) if len(hits) else ""
    raise_first_bad_line(
        path,
        numbers,
        [
            (bad, f"expected a finite number (count) in column {column}, got {shown}"),
            (values < 0, f"count in column {column} must be >= 0"),
        ],
    )
    return values


def _check_duplicates(path: str | Path, table: pd.DataFrame) -> None:
    dup = table.duplicated(["chrom", "start", "end"], keep="first").to_numpy()
    if dup.any():
        row = table.iloc[int(np.flatnonzero(dup)[0])]
        same = table[
            (table["chrom"] == row["chrom"])
            & (table["start"] == row["start"])
            & (table["end"] == row["end"])
        ]
        raise InputError(
            path,
            f"duplicate peak {row['chrom']}:{row['start']}-{row['end']} (same as line "
            f"{int(same['line'].iloc[0])}); expected each peak once",
            int(row["line"]),
        )


def resolve_duplicates(path: str | Path, table: pd.DataFrame, how: str) -> pd.DataFrame:
    """Peaks listed more than once (same chrom, start, end), as ``prepare.duplicate_peaks`` says.

    ``error``: InputError naming both lines. ``first``: the first line of each is kept.
    ``merge``: one peak each, the first line's name, the largest count (MACS2 ``--call-summits``
    repeats a peak once per summit, each line with that summit's signal).
    """
    if how not in DUPLICATE_PEAKS:
        raise ValueError(f"duplicate_peaks must be one of {DUPLICATE_PEAKS}, got {how!r}")
    if how == "error":
        _check_duplicates(path, table)
        return table
    key = ["chrom", "start", "end"]
    repeated = table.duplicated(key, keep="first").to_numpy()
    if not repeated.any():
        return table
    if how == "merge":
        table = table.assign(counts=table.groupby(key, sort=False)["counts"].transform("max"))
    kept = table[~repeated].reset_index(drop=True)
    log.warning(
        "%s: %d lines repeat the coordinates of an earlier peak; %s (prepare.duplicate_peaks: %s)",
        path,
        int(repeated.sum()),
        "kept the first line of each" if how == "first" else "merged, keeping the largest count",
        how,
    )
    return kept


def _read_fast(path: str | Path, named: bool, counts_index: int | None) -> pd.DataFrame | None:
    """chrom, start, end (, name) (, counts), line by the fast reader of
    :func:`~getdiff.genomics.intervals.read_bed_columns`; None when it declines the file or a value
    fails a check (the line-by-line reader then names the line)."""
    kinds = {0: TEXT, 1: COORDINATE, 2: COORDINATE}
    if named:
        kinds[3] = TEXT
    if counts_index is not None:
        if counts_index in kinds:
            return None
        kinds[counts_index] = NUMBER
    try:
        blocks = list(read_bed_columns(path, kinds, optional=(3,) if named else ()))
    except IrregularText as why:
        log.debug("%s: read line by line (%s)", path, why)
        return None
    columns = {}
    for column in kinds:
        parts = [block[column] for block in blocks]
        columns[column] = None if parts[0] is None else np.concatenate(parts)
    start, end = columns[1], columns[2]
    if not (start < end).all():
        return None
    table = pd.DataFrame({"chrom": pd.Series(columns[0], dtype=str), "start": start, "end": end})
    if named:
        table["name"] = columns[3] if columns[3] is not None else None
    if counts_index is not None:
        counts = columns[counts_index]
        if not (np.isfinite(counts).all() and (counts >= 0).all()):
            return None
        table["counts"] = counts + 0.0  # -0 -> 0, as the line-by-line reader gives
    table["line"] = count_header_lines(path) + np.arange(len(table)) + 1
    return table


def read_bed_regions(path: str | Path) -> pd.DataFrame:
    """Intervals of a BED3+ file in file order: chrom, start, end, line (duplicates allowed)."""
    table = _read_fast(path, named=False, counts_index=None)
    if table is not None:
        return table
    fields, numbers = read_bed_fields(path, "regions", 3)
    table = parse_coordinates(path, fields, numbers, "3 columns: chrom start end")
    table["line"] = numbers
    return table


def _peaks_by_line(path: str | Path, counts_column: int | None) -> pd.DataFrame:
    """:func:`read_peak_file`'s columns read line by line, naming the line of any error."""
    fields, numbers = read_bed_fields(path, "peaks", max(4, counts_column or 0))
    table = parse_coordinates(path, fields, numbers, "3 columns: chrom start end")
    table["name"] = fields[3].astype(object) if fields.shape[1] > 3 else None
    if counts_column is not None:
        index = counts_column - 1
        if fields.shape[1] <= index:
            missing = np.ones(len(table), dtype=bool)
        else:
            missing = fields[index].isna().to_numpy()
        raise_first_bad_line(
            path,
            numbers,
            [(missing, f"expected a count in column {counts_column} (counts_column)")],
        )
        table["counts"] = parse_count_values(path, fields[index], numbers, counts_column)
    table["line"] = numbers
    return table


def read_peak_file(
    path: str | Path, counts_column: int | None = None, duplicates: str = "error"
) -> pd.DataFrame:
    """Read and validate a peak file, in file order (see the module docstring for columns)."""
    counts_index = None if counts_column is None else counts_column - 1
    table = _read_fast(path, named=True, counts_index=counts_index)
    if table is None:
        table = _peaks_by_line(path, counts_column)
    names = table["name"].astype(object)
    unnamed = names.isna() | names.eq(".")
    default = table["chrom"] + ":" + table["start"].astype(str) + "-" + table["end"].astype(str)
    table["name"] = names.where(~unnamed, default).astype(str)
    if counts_column is None:
        table["counts"] = np.nan
    table = table[["chrom", "start", "end", "name", "counts", "line"]]
    return resolve_duplicates(path, table, duplicates)


def read_counts_file(path: str | Path) -> pd.DataFrame:
    """Read a ``chrom start end count`` file (columns chrom start end counts line)."""
    table = _read_fast(path, named=False, counts_index=3)
    if table is None:
        fields, numbers = read_bed_fields(path, "counts", 4)
        missing = fields[3].isna().to_numpy() if fields.shape[1] > 3 else np.ones(len(fields), bool)
        raise_first_bad_line(
            path, numbers, [(missing, "expected 4 columns: chrom start end count")]
        )
        table = parse_coordinates(path, fields, numbers, "4 columns: chrom start end count")
        table["counts"] = parse_count_values(path, fields[3], numbers, 4)
        table["line"] = numbers
    _check_duplicates(path, table)
    return table


def attach_counts(peaks: pd.DataFrame, counts: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Set ``peaks.counts`` from a counts table by exact coordinates; missing peaks get 0.

    Returns the updated peaks and how many peaks had no entry in the counts table.
    """
    merged = peaks.drop(columns="counts").merge(
        counts[["chrom", "start", "end", "counts"]], on=["chrom", "start", "end"], how="left"
    )
    missing = int(merged["counts"].isna().sum())
    merged["counts"] = merged["counts"].fillna(0.0)
    return merged, missing


def select_and_sort(
    path: str | Path,
    peaks: pd.DataFrame,
    chromosomes: Sequence[str],
    drop_zero_accessibility: bool,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Keep peaks on ``chromosomes`` (and with counts > 0 if asked), sorted in genome order."""
    dropped: dict[str, int] = {}
    on_selected = peaks["chrom"].isin(list(chromosomes)).to_numpy()
    if not on_selected.any():
        seen = sorted(pd.unique(peaks["chrom"]), key=natural_chrom_key)[:5]
        hint = ""
        if any(harmonise_chrom(c) in set(chromosomes) for c in seen):
            hint = " (naming mismatch: the peaks use names without/with 'chr')"
        raise InputError(
            path,
            f"no peak lies on the selected chromosomes {list(chromosomes)[:5]}...; the file has "
            f"{seen}{hint}",
        )
    dropped["chromosome_not_selected"] = int((~on_selected).sum())
    keep = on_selected
    if drop_zero_accessibility and peaks["counts"].notna().all():
        zero = (peaks["counts"] == 0).to_numpy()
        dropped["zero_accessibility"] = int((zero & on_selected).sum())
        keep = keep & ~zero
    kept = peaks[keep]
    order = genome_order(kept["chrom"], kept["start"].to_numpy(), kept["end"].to_numpy())
    return kept.iloc[order].reset_index(drop=True), dropped


def load_peaks(
    path: str | Path,
    *,
    counts_column: int | None = None,
    counts_file: str | Path | None = None,
    chromosomes: Sequence[str] = DEFAULT_CHROMOSOMES,
    drop_zero_accessibility: bool = True,
    duplicate_peaks: str = "error",
    barcodes: np.ndarray | None = None,
    chrom_naming: str = "strict",
    read_filter: ReadFilter | None = None,
    barcode_file: str | Path | None = None,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Read, validate, filter and sort one cell type's peaks -> (peaks, dropped per reason).

    ``counts_file`` is a bedGraph, a fragments file or a BAM/CRAM (told apart by content, see
    :mod:`getdiff.genomics.fragments`); ``barcodes`` selects the fragments counted (fragments only;
    read from ``barcode_file``, named in errors);
    ``chrom_naming`` applies to fragments and BAM/CRAM; ``read_filter`` (``prepare.bam``) is
    needed for a BAM/CRAM.
    """
    if counts_column is not None and counts_file is not None:
        raise ValueError("give counts_column or counts_file, not both")
    peaks = read_peak_file(path, counts_column=counts_column, duplicates=duplicate_peaks)
    missing = None
    kind = counts_format(counts_file) if counts_file is not None else None
    if barcodes is not None and kind != "fragments":
        names = {"bedgraph": "a bedGraph", "bam": "a BAM", "cram": "a CRAM", None: "missing"}
        raise InputError(
            counts_file or path, f"barcodes need a fragments file; the counts_file is {names[kind]}"
        )
    if kind == "fragments":
        counts = count_insertions(
            counts_file, peaks, barcodes, str(path), chrom_naming, barcode_file=barcode_file
        )
        peaks = peaks.assign(counts=counts.astype(np.float64))
    elif kind in ("bam", "cram"):
        if read_filter is None:
            raise ValueError("a BAM/CRAM counts_file needs read_filter (prepare.bam)")
        counts = count_read_insertions(
            counts_file, peaks, read_filter, path, chrom_naming, chromosomes=chromosomes
        )
        peaks = peaks.assign(counts=counts.astype(np.float64))
    elif kind == "bedgraph":
        peaks, missing = attach_counts(peaks, read_counts_file(counts_file))
        matched = len(peaks) - missing
        check_match_rate(matched, len(peaks), "peaks found in the counts", counts_file, path)
    peaks, dropped = select_and_sort(path, peaks, chromosomes, drop_zero_accessibility)
    if missing is not None:
        dropped["missing_from_counts_file"] = missing
    return peaks, dropped


__all__ = [
    "DEFAULT_CHROMOSOMES",
    "DUPLICATE_PEAKS",
    "attach_counts",
    "genome_order",
    "harmonise_chrom",
    "load_peaks",
    "natural_chrom_key",
    "read_bed_regions",
    "read_counts_file",
    "read_peak_file",
    "resolve_duplicates",
    "select_and_sort",
]
