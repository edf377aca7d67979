"""Motif scan -> per-peak, per-cluster motif scores (sum of the scores of overlapping hits).

Inputs:
- a motif scan, tab-separated ``chrom start end name score [strand ...]`` (0-based; plain,
  gzip or bgzip; header lines ``#``/``track``/``browser`` allowed at the top; blank lines skipped;
  CRLF accepted; extra columns ignored). ``name`` is a cluster name, or a motif name mapped to a
  cluster by an optional two-column ``motif<TAB>cluster`` file (names absent from the mapping
  are looked up as cluster names). Scores must be finite and >= 0: a negative score would cancel
  positive hits in the sum and then be clipped away by max-scaling, so it is rejected as an input
  error rather than silently changing the features.
- peaks: a table with ``chrom``, ``start``, ``end`` (any order; peaks may overlap each other).
- the cluster names, in feature order (default: the 282 clusters bundled in
  ``getdiff/data/cluster_names.txt``).

Output of :func:`aggregate_motif_scores`: a float32 ``scipy.sparse.csr_array`` (n_peaks,
n_clusters) in the peaks' row order; entry [i, c] = sum of the scores of hits of cluster c with
``hit.start < peak.end`` and ``hit.end > peak.start`` (any overlap). Plus a dict of counts (lines
read, hits used, hits skipped per reason) for the metadata.

Reading. The scan goes through pyarrow's CSV reader
(:func:`getdiff.genomics.intervals.read_bed_columns`) when it is in the clean form that reader
takes; otherwise, or when a value fails a check, it is read again by pandas, chunk by chunk, which
accepts the rest of the format above and names the line of an error. The fast reader runs in a
background thread (:class:`getdiff.io.ReadAhead`; pyarrow releases the GIL), parsing the next
blocks while earlier ones are summed, or the whole scan while the peaks load
(:func:`scan_read_ahead`). Each chunk's overlapping (peak, hit) pairs are found by binary search
(:func:`getdiff.genomics.intervals.overlap_pairs`) and summed per (peak, cluster) by scipy's COO ->
CSR. Memory is bounded by the sums plus a few blocks of the scan, never by the scan's size. With a
bgzipped scan larger than 1 GiB, a ``.tbi`` index beside it (not older than the scan, else the
scan is streamed; :func:`getdiff.genomics.indexes.check_index`), only the
peaks' regions are read by tabix query instead (:func:`aggregate_motif_scores` ``use_index``):
streaming parses ~2-5 M lines/s, a query returns ~0.15 M hits/s, so querying only pays off when
most of the scan lies outside the peaks.
Chromosome naming: a scan chromosome absent from the peaks whose other spelling (``1`` <->
``chr1``) is present is an error (``chrom_naming="strict"``) or renamed (``"harmonise"``); a peak
chromosome without any scan hit is logged as a warning (its peaks get all-zero motif scores). Scan
names that are no known cluster are an error listing the closest names, or dropped (counted) with
``unknown_clusters="drop"``.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import io
import logging
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from getdiff.defaults import DATA_DIR
from getdiff.errors import GetdiffError, InputError, raise_first_bad_line
from getdiff.genomics.indexes import check_index
from getdiff.genomics.intervals import (
    CATEGORY,
    COORDINATE,
    COORDINATE_PATTERN,
    HEADER_PATTERN,
    MAX_COORDINATE,
    NUMBER,
    ChromNames,
    ChromPeaks,
    IrregularText,
    count_header_lines,
    index_peaks,
    merge_blocks,
    overlap_pairs,
    read_bed_columns,
)
from getdiff.io import ReadAhead, is_gzipped, open_text, reading

if TYPE_CHECKING:
    from scipy import sparse

log = logging.getLogger(__name__)

DEFAULT_CLUSTER_NAMES = DATA_DIR / "cluster_names.txt"
INDEX_MIN_BYTES = 1 << 30  # smaller scans are streamed even when indexed (faster)
_SCAN_COLUMNS = "5 columns: chrom start end name score"
_BYTES_PER_LINE = 40  # of a typical scan line: chunk_lines -> the fast reader's block size
# Text per block of a scan too large to parse whole. Memory holds about two blocks (the one being
# summed, one parsed ahead): the 10M-hit bench prepares in 3.5-3.8 s and 554-576 MiB.
_MAX_BLOCK_BYTES = 16 << 20
# (peak, cluster, score) pairs gathered (12 bytes each) before scipy sums them: each sum costs
# O(pairs + sums so far), so a large batch keeps a 10M-hit scan to one or two.
_PENDING_PAIRS = 8_000_000
# Chunks the reading thread may hold ready: about one 16 MiB block's worth of parsed batches, so
# it converts a whole block while the peaks load instead of one batch per batch summed.
_AHEAD = 8
# Features are float32: a larger score (or sum, checked after summing) would be inf.
MAX_SCORE = float(np.finfo(np.float32).max)


def load_cluster_names(path: str | Path | None = None) -> list[str]:
    """Cluster names in feature order, one per line (blank lines ignored); default: bundled 282."""
    path = DEFAULT_CLUSTER_NAMES if path is None else Path(path)
    with reading(path):  # a directory, not UTF-8, ...: InputError naming the file
        try:
            with open_text(path) as handle:
                lines = [(number, line.strip()) for number, line in enumerate(handle, start=1)]
        except FileNotFoundError:
            raise InputError(path, "cluster-name file not found") from None
    lines = [(number, name) for number, name in lines if name]
    if not lines:
        raise InputError(path, "no cluster names found: expected one name per line")
    seen: dict[str, int] = {}
    for number, name in lines:
        if name in seen:
            raise InputError(
                path,
                f"cluster name {name!r} is listed twice (first on line {seen[name]}); expected "
                "unique names",
                number,
            )
        seen[name] = number
    return [name for _, name in lines]


def _closest(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    return f"closest known: {', '.join(close)}" if close else "no close match"


def load_motif_mapping(path: str | Path, cluster_names: Sequence[str]) -> dict[str, str]:
    """Read a ``motif<TAB>cluster`` file; every cluster must be one of ``cluster_names``."""
    known = set(cluster_names)
    mapping: dict[str, str] = {}
    with reading(path), open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip() or re.match(HEADER_PATTERN, line):
                continue
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 2 or not fields[0].strip() or not fields[1].strip():
                raise InputError(path, "expected 2 tab-separated columns: motif cluster", number)
            motif, cluster = fields[0].strip(), fields[1].strip()
            if cluster not in known:
                raise InputError(
                    path,
                    f"unknown cluster {cluster!r} ({_closest(cluster, cluster_names)})",
                    number,
                )
            if mapping.get(motif, cluster) != cluster:
                raise InputError(
                    path, f"motif {motif!r} is mapped to two clusters; expected one", number
                )
            mapping[motif] = cluster
    if not mapping:
        raise InputError(path, "no mapping found: the file is empty or holds only header lines")
    return mapping


def _int_column(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(int64 values, bad mask) for a column pandas may have parsed as int, float or text."""
    if pd.api.types.is_integer_dtype(values.dtype):
        return values.to_numpy(np.int64), np.zeros(len(values), dtype=bool)
    if pd.api.types.is_float_dtype(values.dtype):  # pandas saw a blank line or a decimal
        raw = values.to_numpy(np.float64)
        ok = np.isfinite(raw) & (raw == np.floor(raw)) & (np.abs(raw) < MAX_COORDINATE)
        return np.where(ok, raw, 0).astype(np.int64), ~ok
    text = values.astype(str)
    ok = text.str.fullmatch(COORDINATE_PATTERN).to_numpy(dtype=bool)
    out = pd.to_numeric(text.where(ok, "0")).to_numpy(np.int64)
    return out, ~ok


def _float_column(values: pd.Series) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(values.dtype):
        return values.to_numpy(np.float64)
    return pd.to_numeric(values.astype(str), errors="coerce").to_numpy(np.float64)


@dataclass
class _Hits:
    """One validated chunk of the scan."""

    chrom: pd.Categorical
    start: np.ndarray
    end: np.ndarray
    name: pd.Categorical
    score: np.ndarray
    line: np.ndarray | None  # 1-based line numbers (None when read through the index)


def _validate_chunk(path: str | Path, chunk: pd.DataFrame, lines: np.ndarray | None) -> _Hits:
    """Type and check one chunk; ``lines`` are the rows' 1-based line numbers (None: unknown)."""
    blank = chunk.isna().all(axis=1).to_numpy()
    if blank.any():
        chunk = chunk[~blank]
        lines = None if lines is None else lines[~blank]
    where = lines if lines is not None else np.arange(len(chunk))
    missing = (chunk[3].isna() | chunk[4].isna()).to_numpy()
    no_chrom = chunk[0].isna().to_numpy() & ~missing
    _checked(
        path,
        where,
        lines is None,
        [
            (missing, f"expected at least {_SCAN_COLUMNS}"),
            (no_chrom, "expected a chromosome name in column 1, got an empty field"),
        ],
    )
    start, bad_start = _int_column(chunk[1])
    end, bad_end = _int_column(chunk[2])
    score = _float_column(chunk[4])
    bad_score = ~(np.abs(score) <= MAX_SCORE)  # NaN too
    _checked(
        path,
        where,
        lines is None,
        [
            (bad_start, "start (column 2) must be an integer below 10^18"),
            (bad_end, "end (column 3) must be an integer below 10^18"),
            (bad_score, f"score (column 5) must be a finite number below {MAX_SCORE:.2g}"),
        ],
    )
    _checked(
        path,
        where,
        lines is None,
        [
            ((start < 0) | (end < 0), "coordinates must be >= 0 (0-based BED)"),
            (start >= end, "start must be < end (0-based half-open BED)"),
            (score < 0, "score (column 5) must be >= 0 (scores are summed per peak)"),
        ],
    )
    return _Hits(_categorical(chunk[0]), start, end, _categorical(chunk[3]), score, lines)


def _categorical(values: pd.Series) -> pd.Categorical:
    """The column as a Categorical of str, without a round trip through strings if already one."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return pd.Categorical(values).remove_unused_categories()
    return pd.Categorical(values.astype(str))


def _checked(
    path: str | Path, where: np.ndarray, no_lines: bool, checks: list[tuple[np.ndarray, str]]
) -> None:
    if not no_lines:
        raise_first_bad_line(path, where, checks)
        return
    for bad, message in checks:
        if bad.any():
            raise InputError(path, message)


def _read_csv(source: object, *, compression: str | None, **kwargs: object) -> object:
    return pd.read_csv(
        source,
        sep="\t",
        header=None,
        usecols=[0, 1, 2, 3, 4],
        dtype={0: "category", 3: "category"},
        skip_blank_lines=False,
        keep_default_na=False,  # "nan" stays text and fails the score check, unlike a gap
        na_values=[""],
        quoting=csv.QUOTE_NONE,
        compression=compression,
        **kwargs,
    )


def _stream_chunks(path: str | Path, chunk_lines: int) -> Iterator[_Hits]:
    with reading(path):
        yield from _read_chunks(path, chunk_lines)


def _arrow_chunks(path: str | Path, chunk_lines: int) -> Iterator[_Hits]:
    """The scan in blocks of about ``chunk_lines`` lines by the fast reader; IrregularText for a
    file or value it leaves to :func:`_read_chunks` (which names the line)."""
    kinds = {0: CATEGORY, 1: COORDINATE, 2: COORDINATE, 3: CATEGORY, 4: NUMBER}
    block_bytes = min(chunk_lines * _BYTES_PER_LINE, _MAX_BLOCK_BYTES)
    for block in read_bed_columns(path, kinds, block_bytes=block_bytes):
        start, end, score = block[1], block[2], block[4]
        if not ((start < end).all() and ((score >= 0) & (score <= MAX_SCORE)).all()):
            raise IrregularText("a value fails a check")
        yield _Hits(block[0], start, end, block[3], score, None)


def _read_chunks(path: str | Path, chunk_lines: int) -> Iterator[_Hits]:
    header = count_header_lines(path)
    compression = "gzip" if is_gzipped(path) else None
    try:
        reader = _read_csv(path, compression=compression, skiprows=header, chunksize=chunk_lines)
        with reader as chunks:
            for chunk in chunks:
                lines = header + chunk.index.to_numpy() + 1
                yield _validate_chunk(path, chunk, lines)
    except pd.errors.EmptyDataError:
        return
    except ValueError as err:  # pandas < 3 raises its ParserError for a short first line too
        if "usecols" in str(err).lower():
            line = _first_short_line(path, header)
            raise InputError(path, f"expected at least {_SCAN_COLUMNS}", line) from None
        if isinstance(err, pd.errors.ParserError):
            raise InputError(path, f"malformed scan: {err}; expected {_SCAN_COLUMNS}") from None
        raise


def _first_short_line(path: str | Path, header: int, fields: int = 5) -> int:
    """The number of the first data line with fewer than ``fields`` tab-separated fields."""
    with open_text(path) as handle:
        for number, text in enumerate(handle, start=1):
            if number > header and len(text.rstrip("\r\n").split("\t")) < fields:
                return number
    return header + 1


def _indexed_chunks(
    path: str | Path, index: dict[str, ChromPeaks], resolve: dict[str, str]
) -> Iterator[_Hits]:
    """Hits overlapping the peaks, read by tabix query (one query per merged peak block)."""
    import pysam  # 40 ms to import; only an indexed scan needs it

    with pysam.TabixFile(str(path)) as tabix:
        for scan_chrom in tabix.contigs:
            chrom = resolve.get(scan_chrom)
            if chrom is None or chrom not in index:
                continue
            starts, ends = merge_blocks(index[chrom])
            texts: list[str] = []
            owners: list[int] = []
            for b, (lo, hi) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
                got = list(tabix.fetch(scan_chrom, lo, hi))
                texts.extend(got)
                owners.extend([b] * len(got))
            if not texts:
                continue
            frame = _read_csv(io.StringIO("\n".join(texts)), compression=None)
            hits = _validate_chunk(path, frame, None)
            # A hit spanning the gap between two blocks is returned by both queries: keep it
            # only in the first (the block where it does not start before the previous end).
            owner = np.asarray(owners)
            previous_end = np.r_[-1, ends][owner]
            keep = hits.start >= previous_end
            yield _Hits(
                hits.chrom[keep],
                hits.start[keep],
                hits.end[keep],
                hits.name[keep],
                hits.score[keep],
                None,
            )


def scan_has_index(path: str | Path) -> bool:
    """True when the scan can be queried by region: bgzip with a .tbi beside it."""
    return Path(f"{path}.tbi").exists() and is_gzipped(path)


def _scan_contigs(path: str | Path) -> list[str]:
    import pysam

    with pysam.TabixFile(str(path)) as tabix:
        return list(tabix.contigs)


class _Resolver:
    """Maps scan chromosome / name categories to peak chromosomes / cluster indices, checking."""

    def __init__(
        self,
        path: str | Path,
        peak_chroms: set[str],
        cluster_names: Sequence[str],
        mapping: dict[str, str] | None,
        chrom_naming: str,
        unknown_clusters: str,
    ) -> None:
        self.path = path
        self.cluster_names = list(cluster_names)
        self.cluster_index = {name: i for i, name in enumerate(cluster_names)}
        self.mapping = mapping or {}
        self.unknown_clusters = unknown_clusters
        self.names = ChromNames(peak_chroms, path, chrom_naming, this="the scan")

    def chrom(self, scan_chrom: str, line: int | None) -> str | None:
        """Peak chromosome for a scan chromosome (None: no peaks there)."""
        return self.names.resolve(scan_chrom, line)

    def clusters(self, names: pd.Categorical, lines: np.ndarray | None) -> np.ndarray:
        """Cluster index per hit (-1 = unknown and dropped)."""
        per_category = np.array(
            [self.cluster_index.get(self.mapping.get(name, name), -1) for name in names.categories],
            dtype=np.int64,
        )
        index = per_category[names.codes] if len(per_category) else np.zeros(0, np.int64)
        unknown = index < 0
        if unknown.any() and self.unknown_clusters != "drop":
            first = int(np.flatnonzero(unknown)[0])
            name = str(names[first])
            raise InputError(
                self.path,
                f"unknown motif cluster {name!r} ({_closest(name, self.cluster_names)}); expected "
                "a name from the cluster list or the motif_to_cluster mapping (or set "
                "prepare.unknown_clusters: drop)",
                None if lines is None else int(lines[first]),
            )
        return index


def _reads_by_index(scan: Path, use_index: bool | None) -> bool:
    """Whether to query the scan by region (tabix) rather than stream it. A .tbi older than the
    scan (:func:`getdiff.genomics.indexes.check_index`) is refused when asked for, else streamed
    past."""
    if use_index is None:
        chosen = scan_has_index(scan) and scan.stat().st_size >= INDEX_MIN_BYTES
        if chosen and not _fresh_tbi(scan, required=False):
            return False
        return chosen
    if use_index and not scan_has_index(scan):
        raise InputError(scan, "expected a bgzipped scan with a .tbi index beside it")
    return use_index and _fresh_tbi(scan, required=True)


def _fresh_tbi(scan: Path, required: bool) -> bool:
    try:
        check_index(scan, [Path(f"{scan}.tbi")], f"tabix -f -p bed {scan}")
    except InputError as err:
        if required:
            raise
        log.warning("%s; the scan is streamed instead", err)
        return False
    return True


def _chunk_pairs(
    hits: _Hits,
    index: dict[str, ChromPeaks],
    resolver: _Resolver,
    stats: dict[str, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(peak row, cluster, score) of every overlapping (peak, hit) pair of one chunk; counts
    what was used into ``stats``."""
    stats["scan_records"] += len(hits.start)
    cluster = resolver.clusters(hits.name, hits.line)
    known = cluster >= 0
    stats["hits_unknown_cluster_dropped"] += int((~known).sum())
    peak_rows, pair_hits = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for code, scan_chrom in enumerate(hits.chrom.categories):
        first = np.flatnonzero(hits.chrom.codes == code)
        if len(first) == 0:
            continue
        line = None if hits.line is None else int(hits.line[first[0]])
        target = resolver.chrom(str(scan_chrom), line)
        rows = first[known[first]]
        if target is None:
            stats["hits_on_chromosomes_without_peaks"] += len(rows)
            continue
        peak, which = overlap_pairs(index[target], hits.start[rows], hits.end[rows])
        # which is sorted: count distinct hits without np.unique's sort.
        stats["hits_overlapping_peaks"] += (
            int(np.count_nonzero(np.diff(which))) + 1 if len(which) else 0
        )
        peak_rows.append(peak)
        pair_hits.append(rows[which])
    peak, hit = np.concatenate(peak_rows), np.concatenate(pair_hits)
    return peak.astype(np.int32), cluster[hit].astype(np.int32), hits.score[hit].astype(np.float32)


def _add_pairs(
    sums: sparse.csr_array, pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
) -> sparse.csr_array:
    """``sums`` plus the scores of ``pairs``, summed per (peak, cluster) by scipy's COO -> CSR
    (float32 sums, as GET's features are float32)."""
    from scipy import sparse

    old = sums.tocoo()
    peak = np.concatenate([old.coords[0], *(p[0] for p in pairs)])
    cluster = np.concatenate([old.coords[1], *(p[1] for p in pairs)])
    score = np.concatenate([old.data, *(p[2] for p in pairs)])
    return sparse.coo_array((score, (peak, cluster)), shape=sums.shape).tocsr()


def _sum_chunks(
    scan: Path,
    chunks: Iterator[_Hits],
    shape: tuple[int, int],
    index: dict[str, ChromPeaks],
    resolver: _Resolver,
) -> tuple[sparse.csr_array, dict[str, int]]:
    """Per-peak, per-cluster sums over all chunks, with progress logged per chunk."""
    stats = {
        "scan_records": 0,
        "hits_overlapping_peaks": 0,
        "hits_unknown_cluster_dropped": 0,
        "hits_on_chromosomes_without_peaks": 0,
    }
    # scipy.sparse takes 0.1 s to import: imported here, it loads while the scan is parsed.
    from scipy import sparse

    sums = sparse.csr_array(shape, dtype=np.float32)
    pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    began = logged = time.perf_counter()
    for hits in chunks:
        pending.append(_chunk_pairs(hits, index, resolver, stats))
        if sum(len(pairs[0]) for pairs in pending) > _PENDING_PAIRS:
            sums, pending = _add_pairs(sums, pending), []
        if time.perf_counter() - logged > 5:
            logged = time.perf_counter()
            log.info(
                "motif scan %s: %d records read (%.0f records/s), %d hits in peaks so far",
                scan,
                stats["scan_records"],
                stats["scan_records"] / (logged - began),
                stats["hits_overlapping_peaks"],
            )
    sums = _add_pairs(sums, pending)
    if not np.isfinite(sums.data).all():
        raise InputError(
            scan,
            f"the scores of the hits in one peak sum past {MAX_SCORE:.2g} (float32); expected "
            "motif scores such as log-odds or -log10 p-values",
        )
    log.info(
        "motif scan %s: %d records read in %.1f s, %d hits in peaks",
        scan,
        stats["scan_records"],
        time.perf_counter() - began,
        stats["hits_overlapping_peaks"],
    )
    if stats["scan_records"]:
        _check_coverage(scan, index, resolver, stats)
    return sums, stats


def _check_coverage(
    scan: Path, index: dict[str, ChromPeaks], resolver: _Resolver, stats: dict[str, int]
) -> None:
    """Errors for a scan on none of the peaks' chromosomes; a warning for uncovered ones."""
    if stats["hits_on_chromosomes_without_peaks"] == stats["scan_records"]:
        seen = sorted(resolver.names.resolved)[:5]
        raise InputError(
            scan,
            f"no motif hit lies on the peaks' chromosomes: the scan has {seen}, the peaks have "
            f"{sorted(index)[:5]}; expected the same chromosome names",
        )
    if resolver.names.renamed:
        log.info("scan chromosomes renamed to match the peaks: %s", resolver.names.renamed)
    scanned = set(resolver.names.resolved.values())
    absent = [chrom for chrom in index if chrom not in scanned]
    if absent:
        # Not an error: a scan may cover only part of the genome, but the user must know.
        log.warning(
            "%s has no motif hit on peak chromosome(s) %s: their %d peaks get all-zero motif "
            "features; expected the scan to cover every chromosome of the peaks",
            scan,
            absent[:10],
            sum(len(index[chrom].rows) for chrom in absent),
        )


@contextlib.contextmanager
def scan_read_ahead(
    scan: str | Path, chunk_lines: int = 1_000_000, use_index: bool | None = None
) -> Iterator[ReadAhead[_Hits] | None]:
    """The scan's chunks parsed by a background thread from now on, for
    :func:`aggregate_motif_scores` ``ahead``: pyarrow's parser releases the GIL, so the scan is
    parsed while the peaks load. None when the scan would not be streamed (tabix, or not a
    readable file: :func:`aggregate_motif_scores` then says why, after the peaks' errors)."""
    scan = Path(scan)
    try:
        streamed = scan.is_file() and not (use_index or _reads_by_index(scan, use_index))
    except (GetdiffError, OSError):  # e.g. a name too long: said in turn, after the peaks
        streamed = False
    if not streamed:
        yield None
        return
    with _read_ahead(scan, chunk_lines) as ahead:
        yield ahead


def _read_ahead(scan: Path, chunk_lines: int) -> ReadAhead[_Hits]:
    """The fast reader's chunks of the scan, parsed by a background thread."""
    return ReadAhead(partial(_arrow_chunks, scan, chunk_lines), _AHEAD)


def aggregate_motif_scores(
    scan: str | Path,
    peaks: pd.DataFrame,
    cluster_names: Sequence[str],
    *,
    mapping: dict[str, str] | None = None,
    chrom_naming: str = "strict",
    unknown_clusters: str = "error",
    chunk_lines: int = 1_000_000,
    use_index: bool | None = None,
    ahead: ReadAhead[_Hits] | None = None,
) -> tuple[sparse.csr_array, dict[str, int]]:
    """Per-peak, per-cluster sum of overlapping hit scores (see the module docstring).

    ``use_index``: None = query by region when :func:`scan_has_index` and the scan is larger
    than ``INDEX_MIN_BYTES``, True = query by region (index required), False = stream.
    ``ahead``: the scan's chunks from :func:`scan_read_ahead` with the same ``chunk_lines`` and
    ``use_index``, already being parsed.
    """
    scan = Path(scan)
    if not scan.exists() and not scan.is_symlink():  # a symlink loop: reading says so
        raise InputError(scan, "motif scan not found")
    shape = (len(peaks), len(cluster_names))
    index = index_peaks(peaks)
    # A fresh resolver per pass: it records the names it has seen.
    resolver = partial(
        _Resolver, scan, set(index), cluster_names, mapping, chrom_naming, unknown_clusters
    )

    if _reads_by_index(scan, use_index):
        checked = resolver()
        contigs = {c: t for c in _scan_contigs(scan) if (t := checked.chrom(c, None)) is not None}
        log.info("reading motif scan %s by tabix query of the peak regions", scan)
        return _sum_chunks(scan, _indexed_chunks(scan, index, contigs), shape, index, checked)
    log.info("streaming motif scan %s", scan)
    # The next block is parsed while this one is summed.
    chunks = _read_ahead(scan, chunk_lines) if ahead is None else ahead
    try:
        sums, stats = _sum_chunks(scan, iter(chunks), shape, index, resolver())
    except IrregularText as why:
        log.info("%s: reading it line by line (%s)", scan, why)
    except InputError:
        pass  # read again line by line, so the error names its line
    else:
        return sums, stats
    finally:
        chunks.close()
    sums, stats = _sum_chunks(scan, _stream_chunks(scan, chunk_lines), shape, index, resolver())
    if stats["scan_records"] == 0:
        raise InputError(scan, "no motif hits found: the file is empty or holds only header lines")
    return sums, stats


__all__ = [
    "DEFAULT_CLUSTER_NAMES",
    "aggregate_motif_scores",
    "load_cluster_names",
    "load_motif_mapping",
    "scan_has_index",
    "scan_read_ahead",
]
