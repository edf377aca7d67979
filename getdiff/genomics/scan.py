"""Motif scanning: a genome FASTA and a motif database -> the motif scan that prepare reads.

``getdiff scan --config FILE --outdir DIR`` (rule ``scan_motifs``) scans the union of every cell
type's peaks (merged, on ``prepare.chromosomes``, widened by the longest motif minus one base and
by ``scan.flank``), so every hit that overlaps a peak is found, as in a genome-wide scan, at the
cost of tens of Mb instead of gigabases. Scanning is MOODS (moods-python), run in ``threads``
processes; the FASTA is read with pysam (plain, or bgzip with .fai/.gzi); motif files are parsed
with Biopython's ``Bio.motifs`` (MEME minimal format, JASPAR format); ``jaspar:CORE:vertebrates``
names the JASPAR release that pyjaspar ships (offline).

Scores (docs/DATA_CONTRACT.md, "Motif scanning"):
- background b: A, C, G, T frequencies of the scanned sequences, both strands (so b_A = b_T);
- a motif's probabilities p from n sites (MEME ``nsites=``, default 20; JASPAR counts: the
  column's total) get the pseudocount ``scan.pseudocount`` spread by the background,
  f = (p n + ps b) / (n + ps), and score log2(f / b) per base (bits), summed over the window;
- a window is a hit when its score is at least the motif's threshold: the score whose p-value under
  the background is ``scan.pvalue`` (MOODS's dynamic programming, as FIMO), and never below 0; a
  motif too short to reach that p-value keeps only its best-scoring words (MOODS's rule);
- both strands: the reverse complement matrix scored with the same threshold (the background is
  strand-symmetric, so both strands have one score distribution);
- lowercase (soft-masked) bases are scanned like uppercase; a window holding any other letter
  (N, IUPAC codes) is never a hit (nor one that runs past a peak region's end).

Inputs are checked before any scanning: the FASTA's index against the FASTA
(:func:`getdiff.genomics.indexes.check_fasta_index`: rebuilt or refused), the peaks against the
chromosome lengths (:func:`getdiff.genomics.intervals.check_within_lengths`), every fetched base
against the IUPAC letters. Worker processes die with the scan, SIGKILL included
(:func:`getdiff.workers.worker_pool`).

Outputs in DIR, written as one set: ``motif_scan.tsv.gz`` (``chrom start end name score strand``,
0-based, bgzip, sorted) with its tabix index, ``motifs.tsv`` (per motif: width, sites, threshold,
hits) and ``motif_names.txt`` (the motif names in file order: the feature list when no
``motif_to_cluster`` maps motifs to clusters).
"""

from __future__ import annotations

import argparse
import io
import logging
import struct
import time
import zlib
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyranges as pr

from getdiff.config import add_config_arguments, config_from_args, load_cell_types
from getdiff.errors import ConfigError, InputError
from getdiff.genomics.fasta import fasta_names, fetch_sequence, open_fasta
from getdiff.genomics.intervals import check_within_lengths
from getdiff.genomics.motif_files import DNA, Motif, read_motifs
from getdiff.genomics.peaks import genome_order, read_peak_file
from getdiff.io import check_regular_file, exclusive, output_set
from getdiff.paths import SCAN_FILES, in_folder
from getdiff.workers import worker_pool

log = logging.getLogger(__name__)

# MOODS's lookahead window: its set-up time grows steeply with it (3 s at 8, 61 s at 10 for the
# 2,038 JASPAR CORE vertebrate matrix-strands, measured here) while the scan itself changes little.
MOODS_WINDOW = 8
BATCH_BASES = 1 << 18  # sequence per scanning task (~0.5 s of one process with 1,019 motifs)
BATCH_SPAN = 8 << 20  # genome span fetched per task (regions far apart start a new task)
SCORE_DECIMALS = 4


def output_paths(outdir: str | Path) -> dict[str, Path]:
    """The scan's output set (getdiff.paths.SCAN_FILES); the scan itself first (it marks a
    complete set)."""
    return in_folder(outdir, SCAN_FILES)


# --- scores ------------------------------------------------------------------------------------


def log_odds(motif: Motif, background: np.ndarray, pseudocount: float) -> np.ndarray:
    """(4, width) log2 odds of the pseudocounted motif frequencies against the background."""
    sites = motif.sites
    frequencies = (motif.probabilities * sites + pseudocount * background[:, None]) / (
        sites + pseudocount
    )
    return np.log2(frequencies / background[:, None])


def reverse_complement(matrix: np.ndarray) -> np.ndarray:
    """Rows A C G T -> T G C A and columns reversed."""
    return matrix[::-1, ::-1].copy()


DP_PRECISION = 2000.0  # MOODS's DEFAULT_DP_PRECISION (core/moods_tools.h): score units per bit


def threshold_from_p(matrix: np.ndarray, background: Sequence[float], pvalue: float) -> float:
    """``MOODS.tools.threshold_from_p(matrix, background, pvalue)``, the same double, 3x faster.

    MOODS rounds the scores to integers (DP_PRECISION per bit), computes the probability of
    every integer total by dynamic programming over the columns, and returns the lowest total
    whose upper tail stays at most ``pvalue``. Only the tail matters, so here each column's table
    covers only the totals that can still end in the final tail's window (those within the
    remaining columns' best scores of it), widened until the tail holds the answer; every value
    kept is computed by the same additions and multiplications in the same order as MOODS's
    (numpy applies them elementwise), so the sums, and the threshold, are MOODS's to the bit
    (tests/test_scan.py compares them on every JASPAR CORE vertebrate matrix)."""
    import MOODS.tools

    scaled = DP_PRECISION * matrix
    integer = np.where(matrix > 0.0, np.trunc(scaled + 0.5), np.trunc(scaled - 0.5))
    integer = integer.astype(np.int64)
    n, lowest = integer.shape[1], int(integer.min())
    shifted = (integer - lowest).tolist()
    top = np.cumsum(integer.max(axis=0) - lowest).tolist()  # the highest total after each column
    total = top[-1]
    bg = [float(b) for b in background]
    window = max(total >> 4, 64)
    while True:
        low = max(total - window, 0)  # the final totals computed: [low, total]
        lows = [max(low - (total - t), 0) for t in top]
        table = np.zeros(top[0] - lows[0] + 1)
        for j in range(4):
            if shifted[j][0] >= lows[0]:
                table[shifted[j][0] - lows[0]] += bg[j]
        for i in range(1, n):
            lo, hi, prev_lo, prev_hi = lows[i], top[i], lows[i - 1], top[i - 1]
            new = np.zeros(hi - lo + 1)
            for j in range(4):
                s = shifted[j][i]
                first, last = max(lo, s, prev_lo + s), min(hi, prev_hi + s)
                if first <= last:
                    source = table[first - s - prev_lo : last - s - prev_lo + 1]
                    new[first - lo : last - lo + 1] += bg[j] * source
            table = new
        tail = np.cumsum(table[::-1])  # P(total >= r) for r = total, total - 1, ..., low
        if tail[0] > pvalue:  # even the best word is more frequent than pvalue
            rows = matrix.tolist()
            return MOODS.tools.max_score(rows) - MOODS.tools.min_delta(rows) / 2
        above = np.flatnonzero(tail > pvalue)
        if len(above):
            return (total - int(above[0]) + n * lowest + 1) / DP_PRECISION
        if low == 0:  # pvalue above every total's tail: MOODS's own answer (its minimum - 1)
            return MOODS.tools.threshold_from_p(matrix.tolist(), bg, pvalue)
        window *= 2


def _thresholds_from_p(task: tuple[list[np.ndarray], list[float], float]) -> list[float]:
    matrices, background, pvalue = task
    return [threshold_from_p(m, background, pvalue) for m in matrices]


def score_thresholds(
    matrices: Sequence[np.ndarray], background: np.ndarray, pvalue: float, processes: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Per matrix: the score at p-value ``pvalue`` under the background (MOODS), at least 0, and
    whether ``pvalue`` is reachable at all. A matrix whose best word is already more frequent
    than ``pvalue`` gets a threshold just under its best score, so only its best words are hits
    (MOODS's rule, and so the Vierstra scan's; FIMO would report none)."""
    chunks = [list(matrices[i::processes]) for i in range(processes)]
    tasks = [(chunk, background.tolist(), pvalue) for chunk in chunks]
    if processes > 1:
        with worker_pool(processes) as pool:
            parts = list(pool.map(_thresholds_from_p, tasks))
    else:
        parts = [_thresholds_from_p(tasks[0])]
    found = np.empty(len(matrices), dtype=np.float64)
    for i, part in enumerate(parts):
        found[i::processes] = part
    best_word = np.array(
        [np.prod(((m == m.max(axis=0)) * background[:, None]).sum(axis=0)) for m in matrices]
    )
    return np.maximum(found, 0.0), best_word <= pvalue


def read_scan_peaks(
    peak_files: Sequence[Path], chromosomes: Sequence[str]
) -> dict[Path, pd.DataFrame]:
    """Each peak file's peaks on ``chromosomes`` (``chrom start end line``)."""
    found = {}
    for path in peak_files:
        peaks = read_peak_file(path, duplicates="first")
        found[path] = peaks.loc[
            peaks["chrom"].isin(list(chromosomes)), ["chrom", "start", "end", "line"]
        ]
    if all(peaks.empty for peaks in found.values()):
        raise InputError(peak_files[0], f"no peak lies on prepare.chromosomes {chromosomes[:5]}...")
    return found


def scan_regions(
    peak_files: Sequence[Path] | dict[Path, pd.DataFrame], chromosomes: Sequence[str], widen: int
) -> pd.DataFrame:
    """Union of the peaks on ``chromosomes``, widened by ``widen`` bp each side, merged; sorted.
    ``peak_files``: the files, or their peaks as :func:`read_scan_peaks` gives them."""
    if not isinstance(peak_files, dict):
        peak_files = read_scan_peaks(peak_files, chromosomes)
    peaks = pd.concat(list(peak_files.values()), ignore_index=True)
    ranges = pr.PyRanges(
        pd.DataFrame(
            {
                "Chromosome": peaks["chrom"].to_numpy(),
                "Start": np.maximum(peaks["start"].to_numpy(np.int64) - widen, 0),
                "End": peaks["end"].to_numpy(np.int64) + widen,
            }
        )
    )
    # slack=1 also merges book-ended regions, so no motif is lost at the seam.
    merged = ranges.merge(slack=1).df
    regions = pd.DataFrame(
        {
            "chrom": merged["Chromosome"].astype(str).to_numpy(),
            "start": merged["Start"].to_numpy(np.int64),
            "end": merged["End"].to_numpy(np.int64),
        }
    )
    order = genome_order(regions["chrom"], regions["start"].to_numpy(), regions["end"].to_numpy())
    return regions.iloc[order].reset_index(drop=True)


@dataclass(frozen=True)
class Batch:
    """Regions of one chromosome scanned as one task (their sequences joined by an N)."""

    fasta_chrom: str
    chrom: str
    starts: np.ndarray
    ends: np.ndarray
    joined: bytes | None = None  # the joined sequence once fetched (_background keeps it)


def batches(regions: pd.DataFrame, names: dict[str, str], lengths: dict[str, int]) -> list[Batch]:
    """Consecutive regions in tasks of about BATCH_BASES bases and at most ~BATCH_SPAN span."""
    tasks = []
    for chrom, table in regions.groupby("chrom", sort=False):
        fasta_chrom = names[chrom]
        starts = table["start"].to_numpy(np.int64)
        ends = np.minimum(table["end"].to_numpy(np.int64), lengths[fasta_chrom])
        keep = ends > starts
        starts, ends = starts[keep], ends[keep]
        if not len(starts):
            continue
        by_bases = np.cumsum(ends - starts) // BATCH_BASES
        by_span = (starts - starts[0]) // BATCH_SPAN
        key = by_bases * (by_span.max() + 1) + by_span  # both non-decreasing along the regions
        cuts = np.flatnonzero(np.diff(key)) + 1
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(starts)], strict=True):
            tasks.append(Batch(fasta_chrom, str(chrom), starts[lo:hi], ends[lo:hi]))
    return tasks


def _joined_sequence(fasta: Any, batch: Batch) -> tuple[bytes, np.ndarray]:
    """The batch's sequences joined with one N between regions, and each region's offset."""
    lengths = batch.ends - batch.starts
    offsets = np.r_[0, np.cumsum(lengths + 1)[:-1]]
    if batch.joined is not None:
        return batch.joined, offsets
    span_start = int(batch.starts[0])
    span = fetch_sequence(fasta, batch.fasta_chrom, span_start, int(batch.ends[-1])).tobytes()
    starts, ends = (batch.starts - span_start).tolist(), (batch.ends - span_start).tolist()
    joined = b"N".join([span[s:e] for s, e in zip(starts, ends, strict=True)])
    return joined, offsets


def _fast_match_wrapping(match: type) -> None:
    """Wrap MOODS's hits as fast as Python can. Scanner.scan returns each hit as an instance of
    the SWIG proxy class ``MOODS.scan.match``, into which SWIG stores the C++ object as the
    attribute ``this`` through the class's ``__setattr__``: a Python function (SWIG's
    ``_swig_setattr``) that, for ``this``, only puts it in the instance's ``__dict__``.
    ``object.__setattr__`` does the same in C (``pos`` and ``score`` stay properties, so setting
    them still reaches C++): 1.2 s less of the 8.3 s that scanning 11 Mb for 300 JASPAR motifs
    took here (936,000 hits), half of a scan call on a hit-dense sequence."""
    if match.__dict__.get("__setattr__") is not object.__setattr__:
        match.__setattr__ = object.__setattr__


class _Worker:
    """Per-process state: the open FASTA, a MOODS scanner holding every matrix, their widths."""

    fasta: Any = None
    scanner: Any = None
    widths: np.ndarray = np.zeros(0, dtype=np.int64)
    names: Any = None
    setup: Any = None  # the set-up tuple these were built from (a forked worker inherits them)
    match_pos: Any = None  # the getters behind MOODS.scan.match's properties pos and score
    match_score: Any = None


def _start_worker(
    fasta_path: str,
    matrices: list[list[list[float]]],
    background: list[float],
    thresholds: list,
    names: list[str],
) -> None:
    import MOODS.scan
    import pysam

    _fast_match_wrapping(MOODS.scan.match)
    _Worker.match_pos = MOODS.scan.match.pos.fget
    _Worker.match_score = MOODS.scan.match.score.fget
    _Worker.fasta = pysam.FastaFile(fasta_path)  # checked by the parent (open_fasta)
    _Worker.widths = np.array([len(m[0]) for m in matrices], dtype=np.int64)
    _Worker.names = pa.array(names)
    if matrices:
        _Worker.scanner = MOODS.scan.Scanner(MOODS_WINDOW)
        _Worker.scanner.set_motifs(matrices, background, thresholds)
    _Worker.setup = (fasta_path, matrices, background, thresholds, names)


def _join_worker(*setup: Any) -> None:
    """A pool worker's set-up: a worker forked from a process that already set up this scan
    keeps the scanner it inherited (MOODS's set-up, 0.7 s for 600 matrices, runs once, not once
    per process) and only opens its own FASTA handle (a forked one shares the file offset);
    any other worker (spawned, or a stale fork) sets up in full."""
    import pysam

    if _Worker.setup is not None and _Worker.setup == setup:
        _Worker.fasta = pysam.FastaFile(setup[0])
    else:
        _start_worker(*setup)


# MOODS 1.9.4 misses the hits of a matrix shorter than its window that end in the last window
# bases before an N or the sequence's end. So MOODS is given no N and no end: every letter other
# than A, C, G, T (and the separators between regions) becomes filler, the sequence is padded
# with filler, and the hits touching filler are dropped here.
_FILLER = np.frombuffer(b"ACGT", dtype=np.uint8)[np.random.default_rng(0).integers(0, 4, 4096)]
_VALID = np.zeros(256, dtype=bool)
_VALID[np.frombuffer(b"ACGTacgt", dtype=np.uint8)] = True


def _scannable(joined: bytes) -> tuple[str, np.ndarray]:
    """The sequence given to MOODS (no N, padded at the end) and the prefix sum of invalid
    positions of ``joined``, to drop any window that touches one."""
    codes = np.frombuffer(joined, dtype=np.uint8)
    invalid = ~_VALID[codes]
    padded = np.concatenate([codes, _FILLER[:MOODS_WINDOW]])
    padded[: len(codes)][invalid] = _FILLER[np.flatnonzero(invalid) % len(_FILLER)]
    return padded.tobytes().decode("ascii"), np.r_[0, np.cumsum(invalid)]


def batch_hits(batch: Batch) -> dict[str, np.ndarray]:
    """Hits of every matrix in the batch: start, matrix (2 x motif + strand), score; sorted."""
    joined, offsets = _joined_sequence(_Worker.fasta, batch)
    sequence, invalid_before = _scannable(joined)
    found = _Worker.scanner.scan(sequence)
    position_of, score_of = _Worker.match_pos, _Worker.match_score
    positions, matrix, scores = [], [], []
    for index, matches in enumerate(found):
        if matches:
            positions.append(np.fromiter(map(position_of, matches), np.int64, len(matches)))
            scores.append(np.fromiter(map(score_of, matches), np.float64, len(matches)))
            matrix.append(np.full(len(matches), index, dtype=np.int32))
    if not positions:
        empty = np.zeros(0, dtype=np.int64)
        return {"start": empty, "matrix": empty.astype(np.int32), "score": empty.astype(float)}
    position, matrix = np.concatenate(positions), np.concatenate(matrix)
    end = position + _Worker.widths[matrix]
    clean = end <= len(joined)
    clean[clean] = invalid_before[end[clean]] == invalid_before[position[clean]]
    position, matrix, score = position[clean], matrix[clean], np.concatenate(scores)[clean]
    region = np.searchsorted(offsets, position, side="right") - 1
    hits = {
        "start": batch.starts[region] + position - offsets[region],
        "matrix": matrix,
        "score": score,
    }
    order = np.lexsort((hits["matrix"], hits["start"]))
    return {key: value[order] for key, value in hits.items()}


def _in_order(pool: ProcessPoolExecutor | None, function: Any, tasks: Sequence) -> Iterator:
    """``map`` with at most 4 tasks per worker in flight (bounded memory), results in order."""
    if pool is None:
        yield from map(function, tasks)
        return
    pending: deque[Future] = deque()
    depth = 4 * pool._max_workers
    for task in tasks:
        pending.append(pool.submit(function, task))
        if len(pending) >= depth:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


_STRANDS = pa.array(["+", "-"])  # matrix 2 x motif + strand: even forward, odd reverse


def _hit_lines(batch: Batch, hits: dict[str, np.ndarray]) -> bytes:
    """The batch's hits as scan lines: chrom start end name score strand."""
    matrix = hits["matrix"]
    # The text columns as dictionaries (the CSV writer writes their values): 2.5x faster to
    # build than arrays of strings, the same bytes.
    table = pa.table(
        {
            "chrom": pa.DictionaryArray.from_arrays(
                pa.array(np.zeros(len(matrix), dtype=np.int32)), pa.array([batch.chrom])
            ),
            "start": pa.array(hits["start"]),
            "end": pa.array(hits["start"] + _Worker.widths[matrix]),
            "name": pa.DictionaryArray.from_arrays(pa.array(matrix // 2), _Worker.names),
            "score": pa.array(np.round(hits["score"], SCORE_DECIMALS)),
            "strand": pa.DictionaryArray.from_arrays(pa.array(matrix % 2), _STRANDS),
        }
    )
    sink = io.BytesIO()
    options = pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    pacsv.write_csv(table, sink, options)
    return sink.getvalue()


# The scan is an intermediate file (prepare reads it once): BGZF blocks deflated at level 1,
# by ISA-L where python-isal is installed (the ``fast`` extra), else by zlib. Against Biopython's
# writer at zlib's default level 6 this is 13x faster (36 MB of scan lines: 0.10 s against
# 1.3 s) for a file 16% larger; the lines, and so what tabix and prepare read, are the same.
BGZF_LEVEL = 1
_BGZF_INPUT = 0xFF00  # uncompressed bytes per block (htslib's): its deflate always fits 64 KiB
_BGZF_HEADER = b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\xff\x06\x00BC\x02\x00"


def _deflater() -> Any:
    try:
        from isal import isal_zlib

        return isal_zlib.compressobj
    except ImportError:
        return zlib.compressobj


def bgzf_blocks(data: bytes, level: int = BGZF_LEVEL) -> bytes:
    """``data`` as BGZF blocks (no end-of-file block): gzip members of at most 64 KiB whose
    extra field holds the block's size, as bgzip writes them."""
    compressobj = _deflater()
    blocks = []
    for start in range(0, len(data), _BGZF_INPUT):
        chunk = data[start : start + _BGZF_INPUT]
        deflate = compressobj(level, zlib.DEFLATED, -15)
        deflated = deflate.compress(chunk) + deflate.flush()
        if len(deflated) + 26 > 1 << 16:  # never for 0xFF00 bytes; stored, to be safe
            deflate = zlib.compressobj(0, zlib.DEFLATED, -15)
            deflated = deflate.compress(chunk) + deflate.flush()
        blocks += [
            _BGZF_HEADER,
            struct.pack("<H", len(deflated) + 25),  # BSIZE: the block's size minus 1
            deflated,
            struct.pack("<II", zlib.crc32(chunk), len(chunk)),
        ]
    return b"".join(blocks)


def _scan_batch(batch: Batch) -> tuple[bytes, np.ndarray]:
    """The batch's scan lines as BGZF blocks (compressed in the worker, so the writer only
    appends bytes; no end-of-file block) and the hits per motif."""
    hits = batch_hits(batch)
    per_motif = np.bincount(hits["matrix"] // 2, minlength=len(_Worker.names))
    return bgzf_blocks(_hit_lines(batch, hits)), per_motif


@dataclass(frozen=True)
class ScanSettings:
    """The ``scan:`` section plus the inputs it reads."""

    genome_fasta: Path
    motifs: str
    peak_files: tuple[Path, ...]
    chromosomes: tuple[str, ...]
    chrom_naming: str
    pvalue: float
    pseudocount: float
    flank: int
    threads: int

    @classmethod
    def from_config(cls, config: dict[str, Any], threads: int | None = None) -> ScanSettings:
        if not config.get("genome_fasta") or not config.get("motifs"):
            raise ConfigError("getdiff scan needs the keys 'genome_fasta' and 'motifs'")
        check_regular_file(config["cell_types"])  # a named pipe would block the sheet's reader
        sheet = load_cell_types(config["cell_types"])
        section = config["scan"]
        return cls(
            genome_fasta=Path(config["genome_fasta"]),
            motifs=str(config["motifs"]),
            peak_files=tuple(dict.fromkeys(Path(p) for p in sheet["peaks"])),
            chromosomes=tuple(config["prepare"]["chromosomes"]),
            chrom_naming=config["prepare"]["chrom_naming"],
            pvalue=section["pvalue"],
            pseudocount=section["pseudocount"],
            flank=section["flank"],
            threads=section["threads"] if threads is None else threads,
        )

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ConfigError(f"threads {self.threads}: expected a whole number >= 1")


# The background pass keeps each batch's sequence for the scan (fetched once, not twice) while
# the regions hold at most this many bases (1 byte each, in this process; sent with the tasks).
KEEP_SEQUENCE_BASES = 1 << 28


def _background(fasta: Any, tasks: list[Batch], path: Path) -> np.ndarray:
    """The background; ``tasks`` get their sequences where they fit KEEP_SEQUENCE_BASES."""
    keep = _bases(tasks) <= KEEP_SEQUENCE_BASES
    counts = np.zeros(256, dtype=np.int64)
    for i, batch in enumerate(tasks):
        joined, _ = _joined_sequence(fasta, batch)
        counts += np.bincount(np.frombuffer(joined, dtype=np.uint8) & 0xDF, minlength=256)
        if keep:
            tasks[i] = replace(batch, joined=joined)
    counts = counts[[ord(b) for b in DNA]]
    if counts.sum() == 0:
        raise InputError(path, "the peaks' sequences hold no A, C, G or T (all N?)")
    at, cg = counts[0] + counts[3], counts[1] + counts[2]
    background = np.array([at, cg, cg, at], dtype=np.float64) / (2 * counts.sum())
    return np.maximum(background, 1e-6)


def _bases(tasks: Sequence[Batch]) -> int:
    return sum(int((b.ends - b.starts).sum()) for b in tasks)


def _write_scan(
    temps: dict[str, Path], results: Iterator, tasks: Sequence[Batch], n_motifs: int
) -> np.ndarray:
    """Append the workers' BGZF blocks into the scan, end it and index it; hits per motif."""
    import pysam
    from Bio import bgzf

    per_motif = np.zeros(n_motifs, dtype=np.int64)
    total_bases = _bases(tasks)
    done, began, reported = 0, time.perf_counter(), 0.0
    with open(temps["scan"], "wb") as out:
        for batch, (blocks, counts) in zip(tasks, results, strict=True):
            out.write(blocks)
            per_motif += counts
            done += int((batch.ends - batch.starts).sum())
            elapsed = time.perf_counter() - began
            if elapsed - reported > 10 or done == total_bases:
                reported = elapsed
                log.info(
                    "scanned %.2f of %.2f Mb (%.0f%%), %d hits, %.3f Mb/s",
                    done / 1e6,
                    total_bases / 1e6,
                    100 * done / max(total_bases, 1),
                    per_motif.sum(),
                    done / 1e6 / max(elapsed, 1e-9),
                )
        out.write(bgzf._bgzf_eof)
    pysam.tabix_index(str(temps["scan"]), preset="bed", force=True, keep_original=True)
    Path(f"{temps['scan']}.tbi").replace(temps["index"])
    return per_motif


def _write_tables(temps: dict[str, Path], motifs: Sequence[Motif], thresholds, hits) -> None:
    table = pd.DataFrame(
        {
            "name": [m.name for m in motifs],
            "alt_name": [m.alt_name for m in motifs],
            "width": [m.width for m in motifs],
            "sites": [m.sites for m in motifs],
            "threshold": np.round(thresholds, SCORE_DECIMALS),
            "hits": hits,
        }
    )
    table.to_csv(temps["motifs"], sep="\t", index=False)
    temps["names"].write_text("".join(f"{m.name}\n" for m in motifs), encoding="utf-8")


@dataclass(frozen=True)
class ScanResult:
    """What a scan wrote, and the background and per-motif thresholds it used."""

    paths: dict[str, Path]
    background: np.ndarray
    thresholds: np.ndarray
    motifs: list[Motif]


def scan_motifs(settings: ScanSettings, outdir: str | Path) -> ScanResult:
    """Scan the peaks' union for every motif; write the output set (see the module docstring)."""
    began = time.perf_counter()
    motifs = read_motifs(settings.motifs)
    fasta = open_fasta(settings.genome_fasta)
    fasta_source = f"the FASTA {settings.genome_fasta}"
    widen = max(m.width for m in motifs) - 1 + settings.flank
    peaks = read_scan_peaks(settings.peak_files, settings.chromosomes)
    chroms = list(pd.unique(pd.concat([p["chrom"] for p in peaks.values()])))
    names = fasta_names(settings.genome_fasta, fasta, chroms, settings.chrom_naming)
    lengths = dict(zip(fasta.references, fasta.lengths, strict=True))
    for path, table in peaks.items():  # never clipped into all-zero features
        check_within_lengths(path, table, {c: lengths[names[c]] for c in chroms}, fasta_source)
    regions = scan_regions(peaks, settings.chromosomes, widen)
    tasks = batches(regions, names, lengths)
    background = _background(fasta, tasks, settings.genome_fasta)
    forward = [log_odds(m, background, settings.pseudocount) for m in motifs]
    thresholds, reachable = score_thresholds(forward, background, settings.pvalue, settings.threads)
    matrices = [x for m in forward for x in (m, reverse_complement(m))]
    unreachable = [m.name for m, ok in zip(motifs, reachable, strict=True) if not ok]
    if unreachable:
        log.warning(
            "%d motifs are too short to reach p < %g (even their best word is more frequent): "
            "only their best-scoring words count as hits (as MOODS does): %s",
            len(unreachable),
            settings.pvalue,
            ", ".join(unreachable[:10]) + (", ..." if len(unreachable) > 10 else ""),
        )
    log.info(
        "scanning %d motifs (both strands, p < %g) over %d regions, %.2f Mb (peaks of %d files "
        "merged, widened by %d bp), background A/T %.3f C/G %.3f, %d processes",
        len(motifs),
        settings.pvalue,
        len(regions),
        _bases(tasks) / 1e6,
        len(settings.peak_files),
        widen,
        background[0],
        background[1],
        settings.threads,
    )
    setup = (
        str(settings.genome_fasta),
        [m.tolist() for m in matrices],
        background.tolist(),
        np.repeat(thresholds, 2).tolist(),
        [m.name for m in motifs],
    )
    paths = output_paths(outdir)
    with exclusive(Path(outdir), "getdiff scan"), output_set(paths) as temps:
        _start_worker(*setup)  # here, so forked workers inherit the scanner (_join_worker)
        if settings.threads > 1:
            with worker_pool(settings.threads, _join_worker, setup) as pool:
                hits = _write_scan(temps, _in_order(pool, _scan_batch, tasks), tasks, len(motifs))
        else:
            hits = _write_scan(temps, _in_order(None, _scan_batch, tasks), tasks, len(motifs))
        _write_tables(temps, motifs, thresholds, hits)
    log.info(
        "motif scan: %d hits (%.2f per kb per motif), %d motifs without a hit -> %s (%.1f s)",
        hits.sum(),
        hits.sum() / max(_bases(tasks) / 1e3, 1) / len(motifs),
        int((hits == 0).sum()),
        paths["scan"],
        time.perf_counter() - began,
    )
    return ScanResult(paths, background, thresholds, motifs)


def run(args: argparse.Namespace) -> None:
    settings = ScanSettings.from_config(config_from_args(args), args.threads)
    scan_motifs(settings, args.outdir)


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "scan",
        help="genome FASTA + motifs -> motif scan of the peaks (bgzip + tabix)",
        description=__doc__.split("\n\n")[0],
    )
    add_config_arguments(parser)
    parser.add_argument("--outdir", required=True, help="directory receiving the scan")
    parser.add_argument(
        "--threads", type=int, default=None, help="processes (default scan.threads)"
    )
    parser.set_defaults(func=run)


__all__ = [
    "Motif",
    "ScanResult",
    "ScanSettings",
    "log_odds",
    "output_paths",
    "read_motifs",
    "reverse_complement",
    "scan_motifs",
    "score_thresholds",
]
