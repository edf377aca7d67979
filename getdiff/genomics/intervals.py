"""Genomic intervals: reading BED-like text fast, overlaps, chromosome names, match rates.

Coordinates are 0-based, half-open (BED): two intervals overlap when ``a.start < b.end`` and
``a.end > b.start`` on the same chromosome. Tables are pandas frames with ``chrom``, ``start``,
``end`` columns in any order.

Reading. :func:`read_bed_columns` reads chosen columns of a tab-separated file with pyarrow's
multithreaded CSV reader (plain, gzip or bgzip), in blocks. It accepts only the common, clean
form: header lines at the top only, no blank line, the same number of fields on every line, no
padding around fields, coordinates of plain digits, UTF-8 throughout (checked on the raw text, as
pyarrow checks only the columns it converts). Anything else raises :class:`IrregularText`,
and the caller reads the file line by line instead (:func:`read_bed_fields` and
:func:`parse_coordinates` here; the motif scan in pandas chunks), which accepts more and names the
line of an error. So both readers give the same table wherever the fast one answers.

Overlaps. :func:`index_peaks` indexes peaks per chromosome (:class:`ChromPeaks`) for
:func:`overlap_pairs` (every (peak, interval) pair that overlaps, nested and overlapping peaks
included; the motif scan) and for counting insertion sites (:mod:`getdiff.genomics.insertions`), by
two binary searches per interval. :func:`overlapping` marks the rows of one table overlapping
another with pyranges (missing regions in impute). The motif scan's millions of hits use the binary
searches instead: on 100k peaks x 1M hits they take 0.07 s, pyranges 0.29 s to build its ranges
plus 0.25 s to join. pyranges is the 0.1.x line: pyranges1 needs Python >= 3.12 and getdiff
supports 3.11.

Chromosome names: :func:`natural_chrom_key` orders them (chr1 < chr2 < ... < chr10 < chrX);
:func:`harmonise_chrom` gives the other spelling (``chr1`` <-> ``1``), which every input matched to
the peaks (motif scan, counts files, missing regions) renames under ``prepare.chrom_naming:
harmonise``; :class:`ChromNames` applies that rule (or its error) to the scan and counts files.

Match rates. Whenever one input is matched against another (motif hits to peaks, counts to
peaks, missing regions to windows) the fraction matched is logged. None matched is an error
naming both files with the usual causes (genome build, chromosome naming, 0/1-based
coordinates); below ``LOW_MATCH_RATE`` it is a WARNING with the numbers.
:func:`check_within_lengths` is the one check of intervals against the genome's sequence
lengths (a FASTA index, a BAM header): past a chromosome's end is an error naming the line.
"""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from getdiff.errors import InputError, raise_first_bad_line
from getdiff.io import is_gzipped, open_text, reading

log = logging.getLogger(__name__)

# A BED coordinate: an integer of at most 18 digits, so it fits int64 (a longer one is an
# error naming the line, not an overflow).
COORDINATE_PATTERN = r"[+-]?\d{1,18}"
MAX_COORDINATE = 10**18
HEADER_PATTERN = r"^(?:#|track\b|browser\b)"
LOW_MATCH_RATE = 0.5
MISMATCH_HINT = (
    "check that both use the same genome build, the same chromosome naming ('chr1' vs '1'; "
    "prepare.chrom_naming: harmonise) and 0-based BED coordinates (off by one base: 1-based)"
)


def natural_chrom_key(chrom: str) -> tuple[int, int, str]:
    """Sort key giving chr1 < chr2 < ... < chr10 < ... < chr22 < chrX < chrY < chrM < others."""
    bare = chrom[3:] if chrom.lower().startswith("chr") else chrom
    if bare.isdigit():
        return (0, int(bare), "")
    order = {"X": 1, "Y": 2, "M": 3, "MT": 3}
    return (1, order.get(bare.upper(), 4), bare)


def harmonise_chrom(chrom: str) -> str:
    """The other naming convention of a chromosome: ``chr1`` <-> ``1``, ``chrM`` <-> ``MT``."""
    if chrom.startswith("chr"):
        bare = chrom[3:]
        return "MT" if bare == "M" else bare
    return "chrM" if chrom == "MT" else f"chr{chrom}"


def _ranges(table: pd.DataFrame) -> object:
    import pyranges as pr  # 40 ms to import; prepare does not need it

    return pr.PyRanges(
        pd.DataFrame(
            {
                "Chromosome": table["chrom"].astype(str).to_numpy(),
                "Start": table["start"].to_numpy(np.int64),
                "End": table["end"].to_numpy(np.int64),
                "row": np.arange(len(table)),
            }
        )
    )


def overlapping(table: pd.DataFrame, other: pd.DataFrame) -> np.ndarray:
    """(len(table),) bool: rows of ``table`` overlapping at least one interval of ``other``."""
    hit = np.zeros(len(table), dtype=bool)
    if len(table) == 0 or len(other) == 0:
        return hit
    found = _ranges(table).overlap(_ranges(other))
    if len(found):
        hit[found.df["row"].to_numpy()] = True
    return hit


def overlap_rows(table: pd.DataFrame, other: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Every overlapping (row of ``table``, row of ``other``) pair, sorted by both."""
    if len(table) == 0 or len(other) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    joined = _ranges(table).join(_ranges(other), suffix="_other")
    if not len(joined):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    pairs = joined.df[["row", "row_other"]].to_numpy(np.int64)
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    return pairs[:, 0], pairs[:, 1]


CHROM_NAMING = ("strict", "harmonise")


class ChromNames:
    """One input's chromosome names -> the peaks' names under ``prepare.chrom_naming``.

    A name the peaks have is kept; a name whose other spelling (:func:`harmonise_chrom`) the peaks
    have is an InputError under "strict" and renamed under "harmonise"; any other name (a contig,
    a chromosome without peaks) resolves to None. ``this`` and ``peaks`` name the two sides in
    the error ("the scan", "the peaks").
    """

    def __init__(
        self,
        peak_chroms: set[str],
        path: str | Path,
        chrom_naming: str,
        this: str = "this file",
        peaks: str = "the peaks",
    ) -> None:
        if chrom_naming not in CHROM_NAMING:
            raise ValueError(f"chrom_naming must be one of {CHROM_NAMING}, got {chrom_naming!r}")
        self.peak_chroms, self.path, self.chrom_naming = peak_chroms, path, chrom_naming
        self.this, self.peaks = this, peaks
        self.resolved: dict[str, str | None] = {}  # name in the input -> peak chromosome

    def resolve(self, name: str, line: int | None = None) -> str | None:
        """The peaks' chromosome for ``name`` (None: no peak there); ``line`` for the error."""
        if name in self.resolved:
            return self.resolved[name]
        target: str | None = name if name in self.peak_chroms else None
        other = harmonise_chrom(name)
        if target is None and other in self.peak_chroms:
            if self.chrom_naming != "harmonise":
                raise InputError(
                    self.path,
                    f"chromosome naming mismatch: {self.this} has {name!r}, {self.peaks} have "
                    f"{other!r}; expected the same naming (or set prepare.chrom_naming: harmonise)",
                    line,
                )
            target = other
        self.resolved[name] = target
        return target

    @property
    def renamed(self) -> dict[str, str]:
        """Names of the input renamed to the peaks' spelling (``harmonise``)."""
        return {name: chrom for name, chrom in self.resolved.items() if chrom not in (None, name)}


def check_match_rate(
    matched: int, total: int, what: str, source: str | Path, target: str | Path
) -> float:
    """Log ``matched / total`` of ``what``; 0 is an InputError naming both files, a low rate a
    warning. Returns the rate (1.0 when there is nothing to match)."""
    if total == 0:
        return 1.0
    rate = matched / total
    message = f"{matched:,} of {total:,} {what} ({rate:.1%}) between {source} and {target}"
    if matched == 0:
        raise InputError(source, f"no match: {message}; {MISMATCH_HINT}")
    if rate < LOW_MATCH_RATE:
        log.warning("low match rate: %s (below %.0f%%)", message, 100 * LOW_MATCH_RATE)
    else:
        log.info("matched %s", message)
    return rate


def check_within_lengths(
    path: str | Path, table: pd.DataFrame, lengths: dict[str, int], source: str | Path
) -> None:
    """Refuse intervals that do not fit the genome: the first (by file line) whose chromosome
    ``lengths`` lacks, or that ends past its chromosome's length, is an InputError naming its
    line and the length. ``table``: ``chrom start end line``; ``lengths``: sequence lengths keyed
    by the table's spelling, from ``source`` (a FASTA index, a BAM header). Clipping such peaks
    would give them silently empty (all-zero) features; they come from another genome build."""
    known = table["chrom"].map(lengths)
    absent = known.isna().to_numpy()
    past = ~absent & (table["end"].to_numpy() > known.fillna(0).to_numpy())
    bad = np.flatnonzero(absent | past)
    if not len(bad):
        return
    first = bad[np.argmin(table["line"].to_numpy()[bad])]
    row, length = table.iloc[first], known.iloc[first]
    where = f"{row['chrom']}:{row['start']}-{row['end']}"
    if np.isnan(length):
        message = (
            f"interval {where}: no sequence {row['chrom']!r} in {source}; expected every "
            "interval on a sequence of it (another genome build, or a file filtered to fewer "
            "chromosomes? remove those intervals or use the full file)"
        )
    else:
        message = (
            f"interval {where} ends past the end of {row['chrom']} ({int(length):,} bp "
            f"in {source}); expected intervals of this genome build (another build? clip them "
            "to the chromosome sizes: bedtools slop -b 0 -g sizes, or bedClip)"
        )
    raise InputError(path, message, int(row["line"]))


# --------------------------------------------------------------------------- reading


class IrregularText(Exception):
    """A file the fast reader leaves to the line-by-line reader (see the module docstring)."""


# Column kinds of read_bed_columns: what each holds and how it is checked.
CATEGORY = "category"  # names repeated on many lines (chromosomes, motifs): pd.Categorical
TEXT = "text"  # one name per line: object array of str
COORDINATE = "coordinate"  # plain digits, at most 18: int64
NUMBER = "number"  # pyarrow's float parser: float64 (the caller checks finiteness and sign)
_ARROW_TYPES = {
    CATEGORY: pa.dictionary(pa.int32(), pa.string()),
    TEXT: pa.string(),
    COORDINATE: pa.string(),
    NUMBER: pa.float64(),
}
# Files up to this size (on disk; x3 when compressed) are parsed whole, by all cores; larger
# ones block by block, so memory stays one block whatever the size.
WHOLE_FILE_BYTES = 64 << 20


def count_header_lines(path: str | Path) -> int:
    """How many lines at the top of a text file are header lines (``#``, track, browser) or
    blank."""
    return _file_start(path)[0]


def _file_start(path: str | Path) -> tuple[int, int]:
    """(header lines at the top, tab-separated fields on the first data line; 0 if none)."""
    n = 0
    with open_text(path) as handle:
        for line in handle:
            if line.strip() and not re.match(HEADER_PATTERN, line):
                return n, line.rstrip("\n").count("\t") + 1
            n += 1
    return n, 0


def _padded(values: pa.Array) -> bool:
    """True when a string value is empty or has whitespace around it."""
    if len(values) == 0:
        return False
    trimmed = pc.utf8_trim_whitespace(values)
    return not (
        pc.all(pc.equal(trimmed, values)).as_py() and pc.min(pc.utf8_length(values)).as_py()
    )


def _converted(values: pa.Array, kind: str, optional: bool) -> object:
    if values.null_count:
        if optional and values.null_count == len(values):
            return None
        raise IrregularText("a line has fewer fields than the first")
    if kind == CATEGORY:
        if _padded(values.dictionary):
            raise IrregularText("an empty or padded name")
        names = pd.Index(values.dictionary.to_numpy(zero_copy_only=False), dtype=object)
        return pd.Categorical.from_codes(values.indices.to_numpy(zero_copy_only=False), names)
    if kind == TEXT:
        if _padded(values):
            raise IrregularText("an empty or padded name")
        return values.to_numpy(zero_copy_only=False)
    if kind == COORDINATE:
        if len(values) and not (
            pc.all(pc.ascii_is_decimal(values)).as_py()
            and pc.max(pc.binary_length(values)).as_py() <= 18
        ):
            raise IrregularText("a coordinate that is not plain digits, or over 18 of them")
        return pc.cast(values, pa.int64()).to_numpy()
    return values.to_numpy(zero_copy_only=False)


def read_bed_columns(
    path: str | Path,
    kinds: dict[int, str],
    optional: tuple[int, ...] = (),
    block_bytes: int = 16 << 20,
) -> Iterator[dict[int, object]]:
    """Blocks of the 0-based columns ``kinds`` of a tab-separated file, after its header lines.

    Each block is ``{column: values}`` (see the kinds above); an ``optional`` column that no line
    has is None. Raises :class:`IrregularText`, possibly after some blocks, when the file is not
    in the clean form this reader accepts (module docstring). Block k's first row is on line
    ``count_header_lines(path) + rows before it + 1``.
    """
    try:
        yield from _arrow_blocks(path, kinds, optional, block_bytes)
    except (pa.ArrowException, OSError, ValueError, EOFError, zlib.error) as err:
        # ValueError covers UnicodeDecodeError; OSError a bad gzip: the other reader names them.
        raise IrregularText(f"{path}: {err}") from None


def _text_blocks(
    path: str | Path, compression: str | None, block_bytes: int | None
) -> Iterator[pa.Buffer]:
    """The file's (decompressed) bytes in blocks of about ``block_bytes`` (None: one block) that
    end at a line end, each checked to be UTF-8: pyarrow checks only the columns it converts, and
    the line-by-line reader rejects a bad byte anywhere."""
    with pa.input_stream(str(path), compression=compression) as source:
        rest = b""
        while chunk := source.read(block_bytes):
            data = rest + chunk
            cut = data.rfind(b"\n") + 1
            if cut:
                yield _utf8(data, cut)
            rest = data[cut:]
            if block_bytes is None:
                break
        if rest:
            yield _utf8(rest, len(rest))


def _utf8(data: bytes, end: int) -> pa.Buffer:
    """``data[:end]`` as a pyarrow buffer, without copying it; UnicodeDecodeError if it is not
    UTF-8 (the rest of ``data`` may end inside a character)."""
    if not data.isascii():
        str(memoryview(data)[:end], "utf-8")
    return pa.py_buffer(data).slice(0, end)


def _arrow_blocks(
    path: str | Path, kinds: dict[int, str], optional: tuple[int, ...], block_bytes: int
) -> Iterator[dict[int, object]]:
    header, fields = _file_start(path)
    if fields == 0:
        raise IrregularText("no data line")
    types = {f"f{column}": _ARROW_TYPES[kind] for column, kind in kinds.items()}
    parse = pa_csv.ParseOptions(delimiter="\t", quote_char=False, ignore_empty_lines=False)
    convert = pa_csv.ConvertOptions(
        column_types=types,
        include_columns=list(types),
        include_missing_columns=True,
        null_values=[],
        strings_can_be_null=False,
        check_utf8=False,  # _text_blocks checked every byte
    )
    compression = "gzip" if is_gzipped(path) else None
    whole = Path(path).stat().st_size * (3 if compression else 1) <= WHOLE_FILE_BYTES
    blocks = _text_blocks(path, compression, None if whole else block_bytes)
    for number, block in enumerate(blocks):
        read = pa_csv.ReadOptions(
            skip_rows=header if number == 0 else 0,
            column_names=[f"f{i}" for i in range(fields)],  # every line: the first line's count
            block_size=min(block_bytes, 4 << 20),  # parsed in parallel within a block
        )
        table = pa_csv.read_csv(
            pa.BufferReader(block), read_options=read, parse_options=parse, convert_options=convert
        )
        for batch in table.to_batches():
            if _header_like(batch.column("f0")):
                raise IrregularText("a header line below the first data line")
            yield {
                column: _converted(batch.column(f"f{column}"), kind, column in optional)
                for column, kind in kinds.items()
            }


def _header_like(values: pa.Array) -> bool:
    """True when a first field starts like a header line (``#``, track, browser)."""
    names = values.dictionary if pa.types.is_dictionary(values.type) else values
    return len(names) > 0 and pc.any(pc.match_substring_regex(names, HEADER_PATTERN)).as_py()


def read_bed_fields(path: str | Path, what: str, columns: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Split a BED-like text file into its first ``columns`` string fields and the data lines'
    numbers.

    Fields are tab-separated; a line without any tab is split on runs of whitespace instead (the
    documented fallback for space-separated files), so a name holding spaces in a tab-separated
    file stays one field. Fields after the first ``columns`` are not split out, so memory does not
    grow with the widest line. Header lines (``#``, ``track``, ``browser``) and blank lines are
    skipped wherever they are.
    """
    with reading(path), open_text(path) as handle:
        text = handle.read()
    lines = pd.Series(text.split("\n"), dtype="str")
    keep = ~(lines.str.strip().eq("") | lines.str.contains(HEADER_PATTERN, regex=True))
    numbers = np.flatnonzero(keep.to_numpy()) + 1
    if len(numbers) == 0:
        raise InputError(path, f"no {what} found: the file is empty or holds only header lines")
    kept = lines[keep].reset_index(drop=True)
    tabbed = kept.str.contains("\t", regex=False)
    parts = [
        kept[tabbed].str.split("\t", n=columns, expand=True),
        kept[~tabbed].str.strip().str.split(n=columns, expand=True),
    ]
    fields = pd.concat([p for p in parts if len(p)]).sort_index()
    fields = fields.reindex(columns=range(columns)).astype(object)
    for column in fields:
        values = fields[column]
        stripped = values.where(values.isna(), values.astype(str).str.strip())
        fields[column] = stripped.where(stripped.ne("") & stripped.notna(), None)
    return fields, numbers


def parse_coordinates(
    path: str | Path, fields: pd.DataFrame, numbers: np.ndarray, columns: str
) -> pd.DataFrame:
    """Validate columns 0-2 as ``chrom start end`` and return them typed (chrom str, int64)."""
    if fields.shape[1] < 3:
        missing = np.ones(len(fields), dtype=bool)
    else:
        missing = fields[2].isna().to_numpy()
    no_chrom = fields[0].isna().to_numpy() & ~missing
    raise_first_bad_line(
        path,
        numbers,
        [
            (missing, f"expected at least {columns}"),
            (no_chrom, "expected a chromosome name in column 1, got an empty field"),
        ],
    )
    checks = []
    coords = {}
    for col, label in ((1, "start"), (2, "end")):
        text = fields[col]
        bad = ~text.str.fullmatch(COORDINATE_PATTERN).to_numpy(dtype=bool)
        hits = np.flatnonzero(bad)
        shown = repr(text.iloc[hits[0]]) if len(hits) else ""
        checks.append((bad, f"{label} must be an integer below 10^18, got {shown}"))
        coords[label] = pd.to_numeric(text.where(~bad, "0")).to_numpy(dtype=np.int64)
    start, end = coords["start"], coords["end"]
    checks.append(((start < 0) | (end < 0), "coordinates must be >= 0 (0-based BED)"))
    checks.append((start >= end, "start must be < end (0-based half-open BED)"))
    raise_first_bad_line(path, numbers, checks)
    return pd.DataFrame({"chrom": fields[0].astype(str), "start": start, "end": end})


# --------------------------------------------------------------------------- overlaps


@dataclass
class ChromPeaks:
    """Peaks of one chromosome sorted by start: the arrays :func:`overlap_pairs` searches."""

    rows: np.ndarray  # row of each peak in the caller's table
    starts: np.ndarray
    ends: np.ndarray
    max_end: np.ndarray  # running max of ends: monotone even when peaks nest


def index_peaks(peaks: pd.DataFrame) -> dict[str, ChromPeaks]:
    """Peaks (``chrom``, ``start``, ``end``; any order, overlaps allowed) per chromosome."""
    start = peaks["start"].to_numpy(np.int64)
    end = peaks["end"].to_numpy(np.int64)
    codes, names = pd.factorize(peaks["chrom"].to_numpy())
    order = np.lexsort((end, start, codes))
    bounds = np.flatnonzero(np.r_[True, codes[order][1:] != codes[order][:-1], True])
    index: dict[str, ChromPeaks] = {}
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        rows = order[lo:hi]
        ends = end[rows]
        chrom = str(names[codes[rows[0]]])
        index[chrom] = ChromPeaks(rows, start[rows], ends, np.maximum.accumulate(ends))
    return index


def overlap_pairs(
    peaks: ChromPeaks, start: np.ndarray, end: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Every overlapping (peak row, interval) pair of intervals [start, end) on the chromosome
    of ``peaks``: two arrays, sorted by interval."""
    # Candidates for an interval are peaks [lo, hi): start < its end, running max end > its start.
    hi = np.searchsorted(peaks.starts, end, side="left")
    lo = np.searchsorted(peaks.max_end, start, side="right")
    n = np.maximum(hi - lo, 0)
    total = int(n.sum())
    interval = np.repeat(np.arange(len(n)), n)
    position = lo[interval] + np.arange(total) - np.repeat(np.cumsum(n) - n, n)
    real = peaks.ends[position] > start[interval]  # only false when peaks nest
    return peaks.rows[position[real]], interval[real]


def merge_blocks(peaks: ChromPeaks) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint regions covering the peaks of one chromosome (overlapping peaks merged)."""
    new = np.r_[True, peaks.starts[1:] > peaks.max_end[:-1]]
    first = np.flatnonzero(new)
    last = np.r_[first[1:], len(new)] - 1
    return peaks.starts[first], peaks.max_end[last]
