"""Accessibility from a fragments file: Tn5 insertion sites per peak, bulk or pseudobulk.

A ``counts_file`` in the cell-type sheet is a bedGraph (``chrom start end count``, matched to
peaks by exact coordinates, :func:`getdiff.genomics.peaks.read_counts_file`), a fragments file (10x
Genomics layout: ``chrom start end barcode [count]``, plain, gzip or bgzip; ``#`` header lines
skipped) or a BAM/CRAM (counted by :mod:`getdiff.genomics.bam`). :func:`counts_format` tells them
apart from the content, not the name: BAM/CRAM by their magic bytes, a fragments file by a barcode,
not a number, in column 4; content that fits no format unambiguously is refused (see there), and so
is a "fragments" file whose lines are the peaks themselves (a ``chrom start end name count``
table of counts per peak, where every peak would count 2).

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
:class:`getdiff.genomics.insertions.SiteTally` (sorted once, two binary searches per peak;
chromosome naming checked or harmonised there). Logged: fragments read, kept by barcode, insertion
sites in peaks (FRiP), the share of listed barcodes found; errors name the files: no barcode of the
list in the fragments (blamed on the list), a barcode under two groups, a ``1`` vs ``chr1`` naming
mismatch (under ``chrom_naming="strict"``), no fragment on the peaks' chromosomes, no site in any
peak, and a malformed line by its number (:func:`line_problem`: the first data line's number of
fields, whole-number coordinates >= 0, end > start), whatever ``threads``.
"""

from __future__ import annotations

import gzip
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from getdiff.errors import InputError
from getdiff.genomics.insertions import CountSummary, SiteTally
from getdiff.genomics.intervals import check_match_rate
from getdiff.io import check_regular_file, is_gzipped, open_text, reading

log = logging.getLogger(__name__)

BLOCK_BYTES = 8 << 20  # text per parsed block; bounds memory whatever the file size
ALIGNMENT_MAGIC = {b"BAM\x01": "bam", b"CRAM": "cram"}  # counted by getdiff.genomics.bam
LAYOUT = "chrom start end barcode [count] (a fragments file)"
FORMATS = (
    "expected a fragments file (chrom start end barcode [count], one line per fragment), a "
    "bedGraph (chrom start end count) or a BAM/CRAM"
)
# Lines of the first block compared with the peaks; when this share or more of them are the
# peaks themselves, the file is a table of counts per peak, not fragments.
PEAK_TABLE_SAMPLE, PEAK_TABLE_SHARE = 10_000, 0.5


def counts_format(path: str | Path) -> str:
    """``bam``, ``cram``, ``fragments`` or ``bedgraph``, from the content: the magic bytes, then
    column 4 of the first data line (a barcode, not a number, makes a fragments file; a number,
    with exactly 4 columns, a bedGraph). Ambiguous content is refused, naming the formats
    expected: fewer than 4 columns, ``.`` or nothing in column 4 (a BED without names), a number
    there with more than 4 columns (numeric barcodes, or a bedGraph with extra columns), a SAM
    file. A named pipe or device is refused before it is opened."""
    check_regular_file(path)
    with reading(path):
        with open(path, "rb") as raw:
            head = raw.read(4)
        if is_gzipped(path):  # BGZF is gzip: a BAM's magic is inside the first block
            with gzip.open(path, "rb") as handle:
                head = handle.read(4)
    if head in ALIGNMENT_MAGIC:
        return ALIGNMENT_MAGIC[head]
    fields = _first_fields(path)
    if fields[0].startswith("@"):
        raise InputError(
            path,
            "a SAM file (text); expected a BAM/CRAM: samtools sort -o x.bam "
            f"{path} && samtools index x.bam",
            _first_data_line(path),
        )
    if len(fields) < 4:
        words = " ".join(fields).split()
        if len(words) == 4 and _is_number(words[3]):
            return "bedgraph"  # split on whitespace, as the bedGraph reader does
        spaces = " (separated by spaces? fragments are tab-separated)" if len(words) > 3 else ""
        raise InputError(
            path,
            f"{len(fields)} tab-separated columns on the first data line{spaces}; {FORMATS}",
            _first_data_line(path),
        )
    if fields[3].strip() in ("", "."):
        raise InputError(
            path,
            f"column 4 of the first data line is {fields[3]!r}, no barcode (a BED of peaks with "
            f"counts?); {FORMATS}",
            _first_data_line(path),
        )
    if not _is_number(fields[3]):
        _check_fragment_columns(path, fields)
        return "fragments"
    if len(fields) > 4:
        raise InputError(
            path,
            f"{len(fields)} columns with a number in column 4 ({fields[3]!r}): fragments with "
            f"numeric barcodes, or a bedGraph with extra columns? {FORMATS} (a bedGraph has "
            "exactly 4 columns; barcodes that are not numbers: awk -v OFS='\\t' "
            "'{$4 = \"cell\" $4} 1')",
            _first_data_line(path),
        )
    return "bedgraph"


def _check_fragment_columns(path: str | Path, fields: list[str]) -> None:
    """Refuse a BED6+ (a narrowPeak of another replicate) or any file whose column 5 is not a
    fragment's read count, taken for fragments: each of its lines would count as a fragment."""
    if len(fields) >= 6 and fields[5].strip() in ("+", "-", "."):
        problem = f"column 6 of the first data line is a strand ({fields[5]!r}): a BED6+/narrowPeak"
    elif len(fields) >= 5 and not fields[4].strip().isdigit():
        problem = f"column 5 of the first data line ({fields[4]!r}) is no read count"
    else:
        return
    raise InputError(path, f"{problem}, not fragments; {FORMATS}", _first_data_line(path))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _first_data_line(path: str | Path) -> int | None:
    with reading(path), open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip() and not line.startswith(("#", "track", "browser")):
                return number
    return None


def _first_fields(path: str | Path) -> list[str]:
    """The tab-separated fields of the first data line (an empty file is an error)."""
    with reading(path), open_text(path) as handle:
        for line in handle:
            if line.strip() and not line.startswith(("#", "track", "browser")):
                return line.rstrip("\n").split("\t")
    raise InputError(path, "no counts found: the file is empty or holds only headers")


def read_barcodes(path: str | Path, group: str, require_groups: bool = False) -> np.ndarray:
    """The barcodes of ``group``: every line's barcode, or those whose second field is ``group``.
    A barcode under two groups (it would count in both pseudobulks), a line without a barcode
    or with an empty group is an error naming the line; so is a plain list when
    ``require_groups`` (a group was asked for by name)."""
    with reading(path), open_text(path) as handle:
        lines = [(n, line.rstrip("\n").split("\t")) for n, line in enumerate(handle, start=1)]
    numbered = [(n, f) for n, f in lines if "".join(f).strip() and not f[0].startswith("#")]
    if not numbered:
        raise InputError(path, "no barcodes found: the file is empty")
    for number, fields in numbered:
        if not fields[0].strip() or (len(fields) >= 2 and not fields[1].strip()):
            raise InputError(
                path, "an empty barcode or group; expected barcode[<TAB>group] lines", number
            )
    rows = [fields for _, fields in numbered]
    grouped = [fields for fields in rows if len(fields) >= 2]
    if grouped and len(grouped) != len(rows):
        raise InputError(path, "mixes lines with and without a group; expected barcode[<TAB>group]")
    if grouped:
        _check_one_group_each(path, numbered)
        chosen = [fields[0].strip() for fields in grouped if fields[1].strip() == group]
        if not chosen:
            groups = sorted({fields[1].strip() for fields in grouped})
            if not group:
                raise InputError(
                    path,
                    f"a barcode<TAB>group table: name the group (--group); groups: {groups[:10]}",
                )
            raise InputError(path, f"no barcode of group {group!r}; groups: {groups[:10]}")
        return np.unique(chosen)
    if require_groups:
        raise InputError(
            path,
            f"one barcode per line, no groups, but group {group!r} was asked for; expected "
            "barcode<TAB>group lines (or no --group: every barcode listed)",
        )
    return np.unique([fields[0].strip() for fields in rows])


def _check_one_group_each(path: str | Path, numbered: list[tuple[int, list[str]]]) -> None:
    """A barcode listed under two groups is an error naming it, both groups and both lines: a
    cell is of one cell type, and counting it in both pseudobulks would be silently wrong."""
    first: dict[str, tuple[str, int]] = {}
    for number, fields in numbered:
        barcode, group = fields[0].strip(), fields[1].strip()
        seen = first.setdefault(barcode, (group, number))
        if seen[0] != group:
            raise InputError(
                path,
                f"barcode {barcode!r} is listed under group {seen[0]!r} (line {seen[1]}) and "
                f"group {group!r}; expected each barcode in one group (a cell is of one cell type)",
                number,
            )


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
    # No quoting: a '"' in a barcode must not join the lines up to the next one into a field.
    options = pacsv.ParseOptions(
        delimiter="\t", quote_char=False, invalid_row_handler=_header_or_short
    )
    types = {"chrom": pa.string(), "start": pa.int64(), "end": pa.int64(), "barcode": pa.string()}
    convert = pacsv.ConvertOptions(
        column_types=types,
        include_columns=names[: 4 if barcode else 3],
        null_values=[],  # "", "NA", "nan" as a coordinate are errors, not nulls
        quoted_strings_can_be_null=False,
    )
    read = pacsv.ReadOptions(column_names=names, block_size=BLOCK_BYTES)
    # Decompressed in C (bgzip's many gzip members included), off the Python thread.
    with _decompressed(path, threads) as handle:
        # '#' lines at the top are headers whatever their fields ("#chrom<TAB>start<TAB>...").
        handle.read(_leading_headers(path)[1])
        reader = pacsv.open_csv(handle, read, options, convert)
        yield from reader


# A coordinate as pyarrow's int64 parser reads it: digits, spaces around them ignored.
COORDINATE = re.compile(r" *(-?[0-9]{1,18}) *")


def line_problem(fields: list[str], expected: int) -> str | None:
    """What is wrong with one fragments line split on tabs (None: nothing): ``expected`` fields
    (those of the first data line, at least 4), whole-number coordinates >= 0 below 10^18,
    end > start."""
    if len(fields) != expected:
        return f"{len(fields)} tab-separated fields, expected {expected} as on the first data line"
    values = []
    for name, value in (("start", fields[1]), ("end", fields[2])):
        found = COORDINATE.fullmatch(value)
        if found is None:
            return f"{name} must be a whole number below 10^18 (0-based), got {value!r}"
        values.append(int(found.group(1)))
        if values[-1] < 0:
            return f"{name} is negative ({values[-1]}); expected coordinates >= 0 (0-based)"
    if values[1] <= values[0]:
        return (
            f"end {values[1]} is not past start {values[0]} (0-based half-open: a fragment "
            "covers at least one base)"
        )
    return None


def _leading_headers(path: Path) -> tuple[int, int]:
    """(lines, bytes) of the lines at the top of the file that start with '#' (a UTF-8
    byte-order mark before the first one included)."""
    lines = size = 0
    with reading(path), gzip.open(path, "rb") if is_gzipped(path) else open(path, "rb") as raw:
        for line in raw:
            text = line.removeprefix(b"\xef\xbb\xbf") if not lines else line
            if not text.startswith(b"#") or b"\r" in line.rstrip(b"\r\n"):
                break  # data, or lines ended by a lone CR: left to the reader
            lines, size = lines + 1, size + len(line)
    return lines, size


def _first_bad_line(path: Path) -> tuple[int, str] | None:
    """The first data line (number, what is wrong) that is not ``chrom start end barcode ...``
    (:func:`line_problem`), read again line by line once a block has failed a check."""
    expected, headers = len(_first_fields(path)), _leading_headers(path)[0]
    with reading(path), open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.rstrip("\n").split("\t")
            if number <= headers or not line.rstrip("\n"):
                continue
            if line.startswith("#") and len(fields) != expected:
                continue  # as the fast reader: '#' lines it finds invalid
            problem = line_problem(fields, expected)
            if problem is not None:
                return number, problem
    return None


def _bad_line_error(path: Path, detail: str) -> InputError:
    """The error of a file whose fast reading failed: its first bad line, or ``detail``."""
    found = _first_bad_line(path)
    if found is None:
        return InputError(path, f"not a fragments file ({detail}); expected {LAYOUT}")
    number, problem = found
    return InputError(path, f"{problem}; expected {LAYOUT}", number)


def _check_coordinates(path: Path, block: pa.RecordBatch) -> None:
    """Negative coordinates or end <= start: an error naming the first such line."""
    start = block.column("start").to_numpy()
    end = block.column("end").to_numpy()
    if (start < 0).any() or (end <= start).any():
        raise _bad_line_error(path, "a negative coordinate or end <= start")


def _check_not_a_peak_table(
    path: Path, block: pa.RecordBatch, peaks: pd.DataFrame, tally: SiteTally
) -> None:
    """Refuse a table of counts per peak (``chrom start end name count``) taken for fragments:
    its lines are the peaks themselves, and each peak would get 2 (its two ends)."""
    sample = block.slice(0, PEAK_TABLE_SAMPLE)
    chrom = pd.Series(sample.column("chrom").to_pylist(), dtype=object)
    names = {name: tally.names.resolve(name) for name in pd.unique(chrom)}
    lines = pd.DataFrame(
        {
            "chrom": chrom.map(names),
            "start": sample.column("start").to_numpy(),
            "end": sample.column("end").to_numpy(),
        }
    ).dropna()
    keys = peaks[["chrom", "start", "end"]].drop_duplicates()
    same = len(lines.merge(keys, on=["chrom", "start", "end"]))
    if sample.num_rows and same >= PEAK_TABLE_SHARE * sample.num_rows:
        raise InputError(
            path,
            f"{same:,} of its first {sample.num_rows:,} lines are peaks of {tally.source} "
            "(same chrom, start and end): a table of counts per peak, not fragments (each peak "
            f"would count 2); {FORMATS} (a count column: cut -f 1-3,5 {path} > counts.bedGraph)",
        )


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
    barcode_file: str | Path | None = None,
) -> tuple[np.ndarray, CountSummary]:
    """(n_peaks,) int64 insertion sites of the fragments file inside each peak (module doc),
    and the summary (fragments read, kept by barcode, sites in peaks).

    ``peaks`` needs chrom, start, end; ``barcodes`` (optional) selects the fragments counted,
    read from ``barcode_file`` (named in the errors of a list that matches nothing); ``source``
    names the peak file in errors; ``chrom_naming`` (``strict`` or ``harmonise``) says what a
    ``1`` vs ``chr1`` difference does (:mod:`getdiff.genomics.insertions`); ``threads`` > 1
    inflates in a thread of its own. A line with a negative coordinate or end <= start, or a file
    whose lines are the peaks themselves (a table of counts per peak), is an error.
    """
    path = Path(path)
    check_regular_file(path)
    tally = SiteTally(peaks, path, source, chrom_naming)
    wanted = None if barcodes is None else pa.array(barcodes, pa.string())
    found = None if barcodes is None else np.zeros(len(barcodes), dtype=bool)
    fragments = kept = 0
    try:
        with reading(path):
            for block in _blocks(path, threads, barcode=wanted is not None):
                _check_coordinates(path, block)
                if not fragments:
                    _check_not_a_peak_table(path, block, peaks, tally)
                fragments += block.num_rows
                if wanted is not None:
                    where = pc.index_in(block.column("barcode"), value_set=wanted)
                    listed = where.is_valid()
                    found[where.filter(listed).to_numpy()] = True
                    block = block.filter(listed)
                kept += block.num_rows
                _add_block(tally, block)
    except pa.ArrowInvalid as err:
        raise _bad_line_error(path, str(err)) from None
    if found is not None:
        spaced = any(" " in barcode for barcode in barcodes[:1000])
        _check_barcodes_found(
            path, barcode_file, (int(found.sum()), len(found), spaced), kept, fragments
        )
    tally.check("fragment")
    summary = tally.summary("fragment", fragments, kept, 2 * kept)
    _warn_if_swapped(path, source, summary, len(peaks))
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


def _warn_if_swapped(path: Path, source: str, summary: CountSummary, n_peaks: int) -> None:
    """A WARNING when the inputs look swapped: fewer fragments than peaks, or more sites in
    peaks than sites (peaks piled on each other, as fragments are)."""
    if summary.seen < n_peaks or summary.in_peaks > summary.sites:
        log.warning(
            "%s: %d fragments (%d insertion sites, %d of them in peaks) for %d peaks of %s: a "
            "fragments file holds far more fragments than there are peaks, and a site rarely "
            "lies in two peaks; are the fragments file and the peak file swapped?",
            path,
            summary.seen,
            summary.sites,
            summary.in_peaks,
            n_peaks,
            source,
        )


def _check_barcodes_found(
    path: Path,
    barcode_file: str | Path | None,
    listed: tuple[int, int, bool],
    kept: int,
    seen: int,
) -> None:
    """No listed barcode in the fragments is an error blaming the barcode list (the fragments
    file is fine: it holds fragments, of other barcodes); else both match rates are logged.
    ``listed``: (barcodes found, barcodes listed, whether some listed barcode holds a space)."""
    found, total, spaced = listed
    source = barcode_file if barcode_file is not None else "the barcode list"
    if seen and not found:
        hint = "barcode and group separated by a space, not a tab? " if spaced else ""
        raise InputError(
            source,
            f"no match: none of its {total:,} barcodes occurs in the {seen:,} fragments of "
            f"{path}; expected barcodes spelled as in that file ({hint}a '-1' suffix added or "
            "dropped? the barcodes of another sample?)",
        )
    check_match_rate(found, total, "listed barcodes found in the fragments", source, path)
    check_match_rate(kept, seen, "fragments with a listed barcode", path, source)


def count_insertions(
    path: str | Path,
    peaks: pd.DataFrame,
    barcodes: np.ndarray | None = None,
    source: str = "",
    chrom_naming: str = "strict",
    barcode_file: str | Path | None = None,
) -> np.ndarray:
    """The per-peak counts of :func:`count_fragments`."""
    return count_fragments(path, peaks, barcodes, source, chrom_naming, barcode_file=barcode_file)[
        0
    ]


__all__ = [
    "count_fragments",
    "count_insertions",
    "counts_format",
    "line_problem",
    "read_barcodes",
]
