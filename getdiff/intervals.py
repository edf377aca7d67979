"""Genomic intervals: overlaps of region tables (pyranges) and the match-rate rule.

Coordinates are 0-based, half-open (BED): two intervals overlap when ``a.start < b.end`` and
``a.end > b.start`` on the same chromosome. Tables are pandas frames with ``chrom``, ``start``,
``end`` columns in any order.

Chromosome names: :func:`natural_chrom_key` orders them (chr1 < chr2 < ... < chr10 < chrX);
:func:`harmonise_chrom` gives the other spelling (``chr1`` <-> ``1``), which every input matched to
the peaks (motif scan, counts files, missing regions) renames under ``prepare.chrom_naming:
harmonise``.

Match rates. Whenever one input is matched against another (motif hits to peaks, counts to
peaks, missing regions to windows) the fraction matched is logged. None matched is an error
naming both files with the usual causes (genome build, chromosome naming, 0/1-based
coordinates); below ``LOW_MATCH_RATE`` it is a WARNING with the numbers.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyranges as pr

from getdiff.errors import InputError

log = logging.getLogger(__name__)

# A BED coordinate: an integer of at most 18 digits, so it fits int64 (a longer one is an
# error naming the line, not an overflow).
COORDINATE_PATTERN = r"[+-]?\d{1,18}"
MAX_COORDINATE = 10**18
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


def _ranges(table: pd.DataFrame) -> pr.PyRanges:
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
