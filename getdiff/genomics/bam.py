"""Accessibility from a BAM/CRAM: the Tn5 insertion sites of the reads, counted per peak.

Input: a coordinate-sorted BAM or CRAM with its index beside it (``.bai``/``.csi``/``.crai``),
given as a sheet ``counts_file`` (recognised by its magic bytes, see
:func:`getdiff.genomics.fragments.counts_format`). A CRAM is decoded without its reference: only
flag, position, mapping quality and CIGAR are asked for.

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
like a peak chromosome (:class:`getdiff.genomics.insertions.SiteTally` checks or harmonises ``1`` vs
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
(:func:`getdiff.genomics.intervals.check_within_lengths`: its reads cannot be there, so its count
would be a silent 0), no read on the peaks' chromosomes, no read passing the filters, no site in any
peak. Logged: reads on the peaks' chromosomes, reads dropped per filter, sites in peaks, the
share of peaks with sites.
"""

from __future__ import annotations

import array
import contextlib
import copy
import itertools
import logging
import multiprocessing
from collections.abc import Collection, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from getdiff.errors import InputError
from getdiff.genomics.bam_index import check_alignment_index, first_records, index_paths, is_cram
from getdiff.genomics.bam_records import (
    DUPLICATE,
    PAIRED,
    PROPER_PAIR,
    QCFAIL,
    REVERSE,
    SECONDARY,
    SUPPLEMENTARY,
    UNMAPPED,
    bam_records,
)
from getdiff.genomics.insertions import CountSummary, SiteTally
from getdiff.genomics.intervals import check_within_lengths
from getdiff.io import check_regular_file

log = logging.getLogger(__name__)

CHUNK_READS = 1 << 20  # CRAM reads per vectorised chunk: ~40 MiB of arrays, bounds memory
FORWARD_SHIFT, REVERSE_SHIFT = 4, -5
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
    for index in index_paths(path):
        check_regular_file(index)  # htslib would block on a named pipe, or skip it unsaid
    options = [f"required_fields={CRAM_FIELDS:#x}".encode()] if is_cram(path) else []
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
        _count_records(bam_records(path, offset), refs, references, targets, job)
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
    firsts = first_records(path, len(references))
    if firsts is None:
        job = (path, rules, tally, stats)
        _count_records(bam_records(path), range(len(references)), references, targets, job)
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
    cram = is_cram(path)
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
