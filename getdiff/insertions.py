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
sites is logged (below 50% a WARNING).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from getdiff.errors import InputError
from getdiff.intervals import MISMATCH_HINT, check_match_rate, harmonise_chrom, natural_chrom_key

log = logging.getLogger(__name__)

CHROM_NAMING = ("strict", "harmonise")


class SiteTally:
    """Insertion sites per peak of one counts file (``path``) against one peak file
    (``source``); peaks indexed by chromosome once."""

    def __init__(
        self, peaks: pd.DataFrame, path: str | Path, source: str | Path, chrom_naming: str
    ) -> None:
        if chrom_naming not in CHROM_NAMING:
            raise ValueError(f"chrom_naming must be one of {CHROM_NAMING}, got {chrom_naming!r}")
        self.path, self.source, self.chrom_naming = path, source, chrom_naming
        self.counts = np.zeros(len(peaks), dtype=np.int64)
        starts, ends = peaks["start"].to_numpy(np.int64), peaks["end"].to_numpy(np.int64)
        groups = pd.Series(np.arange(len(peaks))).groupby(peaks["chrom"].to_numpy())
        self.index = {
            chrom: (rows.to_numpy(), starts[rows.to_numpy()], ends[rows.to_numpy()])
            for chrom, rows in groups
        }
        self.resolved: dict[str, str | None] = {}  # name in the file -> peak chromosome
        self.sites_on_peak_chromosomes = 0

    def peak_chrom(self, name: str) -> str | None:
        """The peak chromosome of a name in the counts file (None: no peak there)."""
        if name in self.resolved:
            return self.resolved[name]
        target: str | None = name if name in self.index else None
        other = harmonise_chrom(name)
        if target is None and other in self.index:
            if self.chrom_naming != "harmonise":
                raise InputError(
                    self.path,
                    f"chromosome naming mismatch: this file has {name!r}, the peaks "
                    f"({self.source}) have {other!r}; expected the same naming (or set "
                    "prepare.chrom_naming: harmonise)",
                )
            target = other
        self.resolved[name] = target
        return target

    def add(self, chrom: str, sites: np.ndarray) -> None:
        """Count ``sites`` (int64 positions on the peak chromosome ``chrom``) into the peaks."""
        self.sites_on_peak_chromosomes += len(sites)
        sites = np.sort(sites)
        rows, peak_start, peak_end = self.index[chrom]
        self.counts[rows] += np.searchsorted(sites, peak_end) - np.searchsorted(sites, peak_start)

    @property
    def renamed(self) -> dict[str, str]:
        """Names of the counts file renamed to the peaks' spelling (``harmonise``)."""
        return {name: chrom for name, chrom in self.resolved.items() if chrom not in (None, name)}

    def check(self, unit: str) -> None:
        """Errors when no ``unit`` (fragment, read) lay on a peak chromosome or no site in any
        peak; logs the renamed chromosomes and the share of peaks with sites."""
        if self.renamed:
            shown = ", ".join(f"{a} -> {b}" for a, b in sorted(self.renamed.items())[:5])
            log.info("%s: chromosomes renamed to the peaks' naming: %s", self.path, shown)
        if self.sites_on_peak_chromosomes == 0:
            names = sorted(self.resolved, key=natural_chrom_key)[:5]
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


__all__ = ["CHROM_NAMING", "SiteTally"]
