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

Output of :func:`aggregate_motif_scores`: float32 array (n_peaks, n_clusters) in the peaks' row
order; entry [i, c] = sum of the scores of hits of cluster c with ``hit.start < peak.end`` and
``hit.end > peak.start`` (any overlap). Plus a dict of counts (lines read, hits used, hits skipped
per reason) for the metadata.

The scan is read in chunks of ``chunk_lines`` lines, so memory is bounded by peaks x clusters plus
one chunk, never by the scan's size. With a bgzipped scan larger than 1 GiB, a ``.tbi`` index
beside it and pysam importable, only the peaks' regions are read by tabix query instead
(:func:`aggregate_motif_scores` ``use_index``): streaming parses ~1.5 M lines/s, a query returns
~0.15 M hits/s, so querying only pays off when most of the scan lies outside the peaks.
Chromosome naming: a scan chromosome absent from the peaks whose other spelling (``1`` <->
``chr1``) is present is an error (``chrom_naming="strict"``) or renamed (``"harmonise"``); a peak
chromosome without any scan hit is logged as a warning (its peaks get all-zero motif scores). Scan
names that are no known cluster are an error listing the closest names, or dropped (counted) with
``unknown_clusters="drop"``.
"""

from __future__ import annotations

import csv
import difflib
import logging
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from getdiff.errors import InputError, raise_first_bad_line
from getdiff.intervals import COORDINATE_PATTERN, MAX_COORDINATE
from getdiff.io import is_gzipped, open_text, reading
from getdiff.peaks import HEADER_PATTERN, genome_order, harmonise_chrom

log = logging.getLogger(__name__)

DEFAULT_CLUSTER_NAMES = Path(__file__).parent / "data" / "cluster_names.txt"
INDEX_MIN_BYTES = 1 << 30  # smaller scans are streamed even when indexed (faster)
_SCAN_COLUMNS = "5 columns: chrom start end name score"


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


@dataclass
class _ChromPeaks:
    """Peaks of one chromosome sorted by start: the arrays the overlap search needs."""

    rows: np.ndarray  # row of each peak in the caller's table
    starts: np.ndarray
    ends: np.ndarray
    max_end: np.ndarray  # running max of ends: monotone even when peaks nest


def _index_peaks(peaks: pd.DataFrame) -> dict[str, _ChromPeaks]:
    start = peaks["start"].to_numpy(np.int64)
    end = peaks["end"].to_numpy(np.int64)
    order = genome_order(peaks["chrom"], start, end)
    chroms = peaks["chrom"].to_numpy()[order]
    index: dict[str, _ChromPeaks] = {}
    bounds = np.flatnonzero(np.r_[True, chroms[1:] != chroms[:-1], True])
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        rows = order[lo:hi]
        ends = end[rows]
        index[str(chroms[lo])] = _ChromPeaks(rows, start[rows], ends, np.maximum.accumulate(ends))
    return index


def _add_overlaps(
    flat: np.ndarray,
    n_clusters: int,
    peaks: _ChromPeaks,
    hit_start: np.ndarray,
    hit_end: np.ndarray,
    cluster: np.ndarray,
    score: np.ndarray,
) -> int:
    """Add each hit's score to every overlapping peak; returns how many hits overlapped a peak."""
    # Candidates for a hit are peaks [lo, hi): start < hit end and running max end > hit start.
    hi = np.searchsorted(peaks.starts, hit_end, side="left")
    lo = np.searchsorted(peaks.max_end, hit_start, side="right")
    n = np.maximum(hi - lo, 0)
    total = int(n.sum())
    if total == 0:
        return 0
    hit = np.repeat(np.arange(len(n)), n)
    offset = np.arange(total) - np.repeat(np.cumsum(n) - n, n)
    pos = lo[hit] + offset
    real = peaks.ends[pos] > hit_start[hit]  # only false when peaks nest
    hit, pos = hit[real], pos[real]
    np.add.at(flat, peaks.rows[pos] * n_clusters + cluster[hit], score[hit])
    # hit is sorted: count distinct values without np.unique's extra sort.
    return int(np.count_nonzero(np.diff(hit))) + 1 if len(hit) else 0


def _count_header_lines(path: str | Path) -> int:
    n = 0
    with open_text(path) as handle:
        for line in handle:
            if line.strip() and not re.match(HEADER_PATTERN, line):
                break
            n += 1
    return n


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
    blank = chunk[0].isna().to_numpy()
    if blank.any():
        chunk = chunk[~blank]
        lines = None if lines is None else lines[~blank]
    where = lines if lines is not None else np.arange(len(chunk))
    missing = (chunk[3].isna() | chunk[4].isna()).to_numpy()
    _checked(path, where, lines is None, [(missing, f"expected at least {_SCAN_COLUMNS}")])
    start, bad_start = _int_column(chunk[1])
    end, bad_end = _int_column(chunk[2])
    score = _float_column(chunk[4])
    bad_score = ~np.isfinite(score)
    _checked(
        path,
        where,
        lines is None,
        [
            (bad_start, "start (column 2) must be an integer below 10^18"),
            (bad_end, "end (column 3) must be an integer below 10^18"),
            (bad_score, "score (column 5) must be a finite number"),
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


def _read_chunks(path: str | Path, chunk_lines: int) -> Iterator[_Hits]:
    header = _count_header_lines(path)
    compression = "gzip" if is_gzipped(path) else None
    try:
        reader = _read_csv(path, compression=compression, skiprows=header, chunksize=chunk_lines)
        with reader as chunks:
            for chunk in chunks:
                lines = header + chunk.index.to_numpy() + 1
                yield _validate_chunk(path, chunk, lines)
    except pd.errors.EmptyDataError:
        return
    except pd.errors.ParserError as err:
        raise InputError(path, f"malformed scan: {err}; expected {_SCAN_COLUMNS}") from None
    except ValueError as err:
        if "Usecols" in str(err) or "usecols" in str(err):
            raise InputError(path, f"expected at least {_SCAN_COLUMNS}", header + 1) from None
        raise


def _merge_blocks(peaks: _ChromPeaks) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint regions covering the peaks of one chromosome (overlapping peaks merged)."""
    new = np.r_[True, peaks.starts[1:] > peaks.max_end[:-1]]
    first = np.flatnonzero(new)
    last = np.r_[first[1:], len(new)] - 1
    return peaks.starts[first], peaks.max_end[last]


def _indexed_chunks(
    path: str | Path, index: dict[str, _ChromPeaks], resolve: dict[str, str]
) -> Iterator[_Hits]:
    """Hits overlapping the peaks, read by tabix query (one query per merged peak block)."""
    import io

    import pysam

    with pysam.TabixFile(str(path)) as tabix:
        for scan_chrom in tabix.contigs:
            chrom = resolve.get(scan_chrom)
            if chrom is None or chrom not in index:
                continue
            starts, ends = _merge_blocks(index[chrom])
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
    """True when the scan can be queried by region: bgzip + .tbi beside it + pysam importable."""
    if not Path(f"{path}.tbi").exists() or not is_gzipped(path):
        return False
    try:
        import pysam  # noqa: F401
    except ImportError:
        return False
    return True


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
        self.peak_chroms = peak_chroms
        self.cluster_names = list(cluster_names)
        self.cluster_index = {name: i for i, name in enumerate(cluster_names)}
        self.mapping = mapping or {}
        self.chrom_naming = chrom_naming
        self.unknown_clusters = unknown_clusters
        self.chroms: dict[str, str | None] = {}
        self.renamed: dict[str, str] = {}

    def chrom(self, scan_chrom: str, line: int | None) -> str | None:
        """Peak chromosome for a scan chromosome (None: no peaks there)."""
        if scan_chrom in self.chroms:
            return self.chroms[scan_chrom]
        target: str | None = scan_chrom if scan_chrom in self.peak_chroms else None
        other = harmonise_chrom(scan_chrom)
        if target is None and other in self.peak_chroms:
            if self.chrom_naming != "harmonise":
                raise InputError(
                    self.path,
                    f"chromosome naming mismatch: the scan has {scan_chrom!r}, the peaks have "
                    f"{other!r}; expected the same naming (or set prepare.chrom_naming: harmonise)",
                    line,
                )
            target = other
            self.renamed[scan_chrom] = other
        self.chroms[scan_chrom] = target
        return target

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


def _hit_chunks(
    scan: Path,
    index: dict[str, _ChromPeaks],
    resolver: _Resolver,
    use_index: bool | None,
    chunk_lines: int,
) -> tuple[Iterator[_Hits], bool]:
    """The scan's hits in chunks (streamed, or by tabix query of the peak regions) and which."""
    if use_index is None:
        indexed = scan_has_index(scan) and scan.stat().st_size >= INDEX_MIN_BYTES
    elif use_index and not scan_has_index(scan):
        raise InputError(scan, "expected a bgzipped scan with a .tbi index beside it (and pysam)")
    else:
        indexed = use_index
    if indexed:
        contigs = _scan_contigs(scan)
        resolve = {c: t for c in contigs if (t := resolver.chrom(c, None)) is not None}
        log.info("reading motif scan %s by tabix query of the peak regions", scan)
        return _indexed_chunks(scan, index, resolve), True
    log.info("streaming motif scan %s", scan)
    return _stream_chunks(scan, chunk_lines), False


def _add_chunk(
    flat: np.ndarray,
    n_clusters: int,
    hits: _Hits,
    index: dict[str, _ChromPeaks],
    resolver: _Resolver,
    stats: dict[str, int],
) -> None:
    """Add one chunk's hits to the per-peak sums, per scan chromosome; count what was used."""
    stats["scan_records"] += len(hits.start)
    cluster = resolver.clusters(hits.name, hits.line)
    known = cluster >= 0
    stats["hits_unknown_cluster_dropped"] += int((~known).sum())
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
        stats["hits_overlapping_peaks"] += _add_overlaps(
            flat,
            n_clusters,
            index[target],
            hits.start[rows],
            hits.end[rows],
            cluster[rows],
            hits.score[rows].astype(np.float32),
        )


def _check_coverage(
    scan: Path, index: dict[str, _ChromPeaks], resolver: _Resolver, stats: dict[str, int]
) -> None:
    """Errors for a scan on none of the peaks' chromosomes; a warning for uncovered ones."""
    if stats["hits_on_chromosomes_without_peaks"] == stats["scan_records"]:
        seen = sorted(c for c in resolver.chroms)[:5]
        raise InputError(
            scan,
            f"no motif hit lies on the peaks' chromosomes: the scan has {seen}, the peaks have "
            f"{sorted(index)[:5]}; expected the same chromosome names",
        )
    if resolver.renamed:
        log.info("scan chromosomes renamed to match the peaks: %s", resolver.renamed)
    scanned = set(resolver.chroms.values())
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
) -> tuple[np.ndarray, dict[str, int]]:
    """Per-peak, per-cluster sum of overlapping hit scores (see the module docstring).

    ``use_index``: None = query by region when :func:`scan_has_index` and the scan is larger
    than ``INDEX_MIN_BYTES``, True = query by region (index required), False = stream.
    """
    scan = Path(scan)
    if not scan.exists() and not scan.is_symlink():  # a symlink loop: reading says so
        raise InputError(scan, "motif scan not found")
    n_clusters = len(cluster_names)
    features = np.zeros((len(peaks), n_clusters), dtype=np.float32)
    index = _index_peaks(peaks)
    resolver = _Resolver(scan, set(index), cluster_names, mapping, chrom_naming, unknown_clusters)
    chunks, indexed = _hit_chunks(scan, index, resolver, use_index, chunk_lines)
    stats = {
        "scan_records": 0,
        "hits_overlapping_peaks": 0,
        "hits_unknown_cluster_dropped": 0,
        "hits_on_chromosomes_without_peaks": 0,
    }
    began = time.perf_counter()
    for hits in chunks:
        _add_chunk(features.reshape(-1), n_clusters, hits, index, resolver, stats)
        log.info(
            "motif scan: %d records read (%.0f records/s), %d hits in peaks",
            stats["scan_records"],
            stats["scan_records"] / max(time.perf_counter() - began, 1e-9),
            stats["hits_overlapping_peaks"],
        )
    if stats["scan_records"] == 0 and not indexed:
        raise InputError(scan, "no motif hits found: the file is empty or holds only header lines")
    if stats["scan_records"]:
        _check_coverage(scan, index, resolver, stats)
    return features, stats


__all__ = [
    "DEFAULT_CLUSTER_NAMES",
    "aggregate_motif_scores",
    "load_cluster_names",
    "load_motif_mapping",
    "scan_has_index",
]
