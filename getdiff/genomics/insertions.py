"""Tn5 insertion sites -> counts per peak: the tally that fragments files and BAM/CRAM share.

Contract. Peaks are a table with ``chrom``, ``start``, ``end`` (0-based half-open); an insertion
site is one 0-based base position ``s``, inside a peak when ``start <= s < end`` (overlapping
peaks each count it). Sites arrive per chromosome, in any order and in any number of batches
(:meth:`SiteTally.add`); each batch is sorted once and every peak of its chromosome is counted by
two binary searches, so memory is one batch plus the peaks, whatever the size of the file.

Chromosome names (:meth:`SiteTally.peak_chrom`): a name of the counts file that the peaks lack
but whose other spelling (``chr1`` <-> ``1``, ``chrM`` <-> ``MT``) they have is an error under
``chrom_naming="strict"`` and renamed under ``"harmonise"``, as for the motif scan; other names
the peaks lack (contigs, chrM) are skipped.

:meth:`SiteTally.check` applies the match-rate rule once everything is added: no record on a
peak chromosome and no site in any peak are errors naming both files; the share of peaks with
sites is logged (below 50% a WARNING), and so are the peak chromosomes without a site in any of
their peaks (a WARNING: a file filtered to fewer chromosomes gives them silent zeros).
:meth:`SiteTally.summary` gives the counts of a run (:class:`CountSummary`), which ``getdiff
count`` prints as one line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from getdiff.errors import InputError
from getdiff.genomics.intervals import (
    MISMATCH_HINT,
    ChromNames,
    check_match_rate,
    index_peaks,
    natural_chrom_key,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CountSummary:
    """What one counting run saw: ``seen`` reads on the peaks' chromosomes (BAM/CRAM) or
    fragments in the file, ``kept`` of them after the filters (MAPQ and flags; barcodes),
    their ``sites`` (a read has one, a fragment two), the ``in_peaks`` sites (a site in two
    overlapping peaks counts twice), and how many of the ``peaks`` have a site."""

    unit: str
    seen: int
    kept: int
    sites: int
    in_peaks: int
    peaks_with_sites: int
    peaks: int

    def line(self) -> str:
        """One line: counts and rates (kept / seen, in peaks / sites, peaks with a site)."""
        return (
            f"{self.seen:,} {self.unit}s seen, {self.kept:,} kept ({_rate(self.kept, self.seen)}), "
            f"{self.in_peaks:,} of their {self.sites:,} insertion sites in peaks "
            f"({_rate(self.in_peaks, self.sites)}), {self.peaks_with_sites:,} of {self.peaks:,} "
            f"peaks with a site ({_rate(self.peaks_with_sites, self.peaks)})"
        )


def _rate(part: int, whole: int) -> str:
    return f"{100.0 * part / max(whole, 1):.1f}%"


class SiteTally:
    """Insertion sites per peak of one counts file (``path``) against one peak file
    (``source``); peaks indexed by chromosome once."""

    def __init__(
        self, peaks: pd.DataFrame, path: str | Path, source: str | Path, chrom_naming: str
    ) -> None:
        self.path, self.source = path, source
        self.counts = np.zeros(len(peaks), dtype=np.int64)
        self.index = index_peaks(peaks)
        self.names = ChromNames(set(self.index), path, chrom_naming, peaks=f"the peaks ({source})")
        self.sites_on_peak_chromosomes = 0

    def peak_chrom(self, name: str) -> str | None:
        """The peak chromosome of a name in the counts file (None: no peak there)."""
        return self.names.resolve(name)

    def add(self, chrom: str, sites: np.ndarray) -> None:
        """Count ``sites`` (int64 positions on the peak chromosome ``chrom``) into the peaks."""
        self.sites_on_peak_chromosomes += len(sites)
        sites = np.sort(sites, kind="stable")  # timsort: the sites of a sorted file are near sorted
        peaks = self.index[chrom]
        inside = np.searchsorted(sites, peaks.ends) - np.searchsorted(sites, peaks.starts)
        self.counts[peaks.rows] += inside

    def check(self, unit: str) -> None:
        """Errors when no ``unit`` (fragment, read) lay on a peak chromosome or no site in any
        peak; logs the renamed chromosomes and the share of peaks with sites."""
        if self.names.renamed:
            shown = ", ".join(f"{a} -> {b}" for a, b in sorted(self.names.renamed.items())[:5])
            log.info("%s: chromosomes renamed to the peaks' naming: %s", self.path, shown)
        if self.sites_on_peak_chromosomes == 0:
            names = sorted(self.names.resolved, key=natural_chrom_key)[:5]
            raise InputError(
                self.path,
                f"no {unit} lies on a chromosome of the peaks ({self.source}); this file has "
                f"{names}; {MISMATCH_HINT}",
            )
        if not self.counts.any():
            raise InputError(
                self.path,
                f"no insertion site lies in any peak of {self.source}; every peak's count is 0; "
                f"{MISMATCH_HINT}",
            )
        with_sites = int(np.count_nonzero(self.counts))
        check_match_rate(
            with_sites, len(self.counts), "peaks with insertion sites", self.path, self.source
        )
        self._warn_of_empty_chromosomes()

    def _warn_of_empty_chromosomes(self) -> None:
        """A WARNING naming the peak chromosomes on which no peak got a site: their counts are
        0 because the file lacks them (filtered, another sample), not because they are closed."""
        empty = [c for c, peaks in self.index.items() if not self.counts[peaks.rows].any()]
        if not empty:
            return
        shown = sorted(empty, key=natural_chrom_key)
        n_peaks = sum(len(self.index[c].rows) for c in empty)
        log.warning(
            "%s: no insertion site in any peak of %d chromosome(s) of %s (%s%s), %d peaks: their "
            "counts are 0; is this file filtered to fewer chromosomes, or of another sample?",
            self.path,
            len(empty),
            self.source,
            ", ".join(shown[:5]),
            ", ..." if len(shown) > 5 else "",
            n_peaks,
        )

    def summary(self, unit: str, seen: int, kept: int, sites: int) -> CountSummary:
        """The run's :class:`CountSummary`, the tally's counts added to the caller's."""
        return CountSummary(
            unit,
            seen,
            kept,
            sites,
            int(self.counts.sum()),
            int(np.count_nonzero(self.counts)),
            len(self.counts),
        )


__all__ = ["CountSummary", "SiteTally"]
