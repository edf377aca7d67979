"""Accessibility from a BAM/CRAM: the Tn5 insertion sites of the reads, counted per peak.

Input: a coordinate-sorted BAM or CRAM with its index beside it (``.bai``/``.csi``/``.crai``),
given as a sheet ``counts_file`` (recognised by its magic bytes, see
:func:`getdiff.fragments.counts_format`). A CRAM is decoded without its reference: only flag,
position, mapping quality and CIGAR are asked for. Needs pysam (the ``tabix`` extra).

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

Reading: only contigs named like a peak chromosome (:class:`getdiff.insertions.SiteTally`
checks or harmonises ``1`` vs ``chr1``) are fetched through the index, in chunks of
``CHUNK_READS`` reads; per read only pysam's four attribute reads run in Python, into typed
arrays; filters, shifts and the per-peak count are numpy over the chunk (the tally sorts the
sites and binary-searches each peak). Memory is one chunk plus the peaks.

Errors (one line, naming the file): no index, or a sort order other than coordinate (with the
samtools command that fixes it), not a BAM/CRAM, a naming mismatch with the peaks, no read on
the peaks' chromosomes, no read passing the filters, no site in any peak. Logged: reads on the
peaks' chromosomes, reads dropped per filter, sites in peaks, the share of peaks with sites.
"""

from __future__ import annotations

import array
import contextlib
import itertools
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from getdiff.errors import InputError
from getdiff.insertions import SiteTally

log = logging.getLogger(__name__)

CHUNK_READS = 1 << 20  # reads per vectorised chunk: ~40 MiB of arrays, bounds memory
FORWARD_SHIFT, REVERSE_SHIFT = 4, -5
# SAM flag bits (SAM spec 1.4)
PAIRED, PROPER_PAIR, UNMAPPED, REVERSE = 0x1, 0x2, 0x4, 0x10
SECONDARY, QCFAIL, DUPLICATE, SUPPLEMENTARY = 0x100, 0x200, 0x400, 0x800
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
    path = Path(path)
    try:
        import pysam
    except ImportError:
        raise InputError(
            path, "is a BAM/CRAM; counting reads needs pysam (pip install 'getdiff[tabix]')"
        ) from None
    options = [f"required_fields={CRAM_FIELDS:#x}".encode()] if _is_cram(path) else []
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
    return bam


def _is_cram(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == b"CRAM"


def _chunks(bam: Any, contig: str) -> Iterator[tuple[np.ndarray, ...]]:
    """(flag, mapq, start, end) int64 arrays of the contig's reads, CHUNK_READS at a time;
    ``end`` is -1 where pysam has none (unmapped, no CIGAR)."""
    reads = bam.fetch(contig)
    while True:
        flag, mapq, start, end = (array.array("q") for _ in range(4))
        # The one per-read Python loop: pysam gives no bulk access to these fields.
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

    def nonzero(self) -> dict[str, int]:
        return {reason: n for reason, n in self.dropped.items() if n}


def _count_contig(
    bam: Any, contig: str, target: str, rules: ReadFilter, tally: SiteTally, stats: _ReadStats
) -> None:
    """Add one contig's kept reads to the tally; an unsorted stretch is an error."""
    previous = -1
    for flag, mapq, start, end in _chunks(bam, contig):
        if start[0] < previous or np.any(start[1:] < start[:-1]):
            raise InputError(
                tally.path,
                f"is not sorted by coordinate on {contig}; fix: {_sort_command(Path(tally.path))}",
            )
        previous = int(start[-1])
        dropped = rules.dropped(flag, mapq, end)
        kept = ~np.logical_or.reduce(list(dropped.values()))
        stats.add(kept, dropped)
        tally.add(target, rules.sites(flag[kept], start[kept], end[kept]))


def count_read_insertions(
    path: str | Path,
    peaks: pd.DataFrame,
    rules: ReadFilter,
    source: str | Path = "",
    chrom_naming: str = "strict",
) -> np.ndarray:
    """(n_peaks,) int64 insertion sites of the BAM/CRAM's kept reads inside each peak.

    ``peaks`` needs chrom, start, end; ``rules`` says which reads count and whether to shift;
    ``source`` names the peak file in errors; ``chrom_naming`` is ``strict`` or ``harmonise``.
    """
    path = Path(path)
    tally = SiteTally(peaks, path, source, chrom_naming)
    stats = _ReadStats()
    bam = open_alignments(path)
    try:
        for contig in bam.references:
            target = tally.peak_chrom(contig)
            if target is not None:
                _count_contig(bam, contig, target, rules, tally, stats)
    except OSError as err:  # htslib: a corrupt block or record inside the file
        raise InputError(path, f"cannot be read as BAM/CRAM ({err})") from None
    finally:
        with contextlib.suppress(OSError):  # closing fails again after a read error
            bam.close()
    if stats.reads and not stats.kept:
        raise InputError(
            path,
            f"none of {stats.reads:,} reads on the peaks' chromosomes passes the read filters "
            f"(dropped per reason: {stats.nonzero()}; prepare.bam: {asdict(rules)})",
        )
    tally.check("read")
    in_peaks = int(tally.counts.sum())
    log.info(
        "%s: %d reads on the peaks' chromosomes, %d kept (dropped per reason, a read may have "
        "several: %s), %d insertion sites in peaks (%.1f%% of the kept reads)",
        path,
        stats.reads,
        stats.kept,
        stats.nonzero(),
        in_peaks,
        100.0 * in_peaks / max(stats.kept, 1),
    )
    return tally.counts


__all__ = ["ReadFilter", "count_read_insertions", "open_alignments", "read_filter"]
