"""The counting stage on its own: Tn5 insertion sites per peak from a BAM/CRAM or fragments file.

``getdiff count --counts-file FILE --peaks PEAKS --out OUT.tsv [--threads N]
[--barcodes FILE --group NAME]`` counts as prepare does (:func:`count_peaks` calls the same
:func:`getdiff.genomics.bam.count_reads` and :func:`getdiff.genomics.fragments.count_fragments` that
:func:`getdiff.genomics.peaks.load_peaks` calls), with the read filters and Tn5 shift of the
schema's ``prepare.bam`` defaults; each has a flag to override it.

Input: the format is read from the content (:func:`getdiff.genomics.fragments.counts_format`): a
coordinate-sorted, indexed BAM/CRAM (one insertion site per kept read) or a fragments file (two
sites per fragment; ``--barcodes`` keeps the listed barcodes, ``--group`` those of one group of a
``barcode<TAB>group`` table). A bedGraph already holds counts and is refused. Definitions:
``docs/DATA_CONTRACT.md``.

Output: ``OUT.tsv``, tab-separated, no header, one line per peak in the peak file's order:
``chrom start end name count`` (0-based half-open; ``name`` is the peak file's or
``chrom:start-end``); written aside and renamed in, so no partial file is left. On stderr one
summary line: reads (or fragments) seen, kept, insertion sites in peaks, peaks with a site, each
with its rate, and the wall time.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from getdiff.defaults import DEFAULTS
from getdiff.errors import GetdiffError, InputError
from getdiff.genomics.bam import ReadFilter, count_reads, read_filter
from getdiff.genomics.fragments import count_fragments, counts_format, read_barcodes
from getdiff.genomics.insertions import CountSummary
from getdiff.genomics.peaks import read_peak_file
from getdiff.io import atomic_path


def prepare_defaults() -> dict[str, Any]:
    """The ``prepare:`` keys count uses (``bam``, ``chrom_naming``, ``duplicate_peaks``), with
    the schema's defaults: the one place they are written."""
    section = DEFAULTS["prepare"]
    keys = ("chrom_naming", "duplicate_peaks")
    return {"bam": dict(section["bam"]), **{key: section[key] for key in keys}}


def count_peaks(
    counts_file: str | Path,
    peaks: pd.DataFrame,
    rules: ReadFilter,
    barcodes: np.ndarray | None = None,
    source: str | Path = "",
    chrom_naming: str = "strict",
    threads: int = 1,
    barcode_file: str | Path | None = None,
) -> tuple[np.ndarray, CountSummary]:
    """(n_peaks,) int64 insertion sites per peak of a BAM/CRAM or fragments file, and what was
    seen. ``rules`` applies to a BAM/CRAM, ``barcodes`` (optional, read from ``barcode_file``)
    to fragments."""
    kind = counts_format(counts_file)
    if kind == "bedgraph":
        raise InputError(
            counts_file,
            "is a bedGraph (it already holds counts); count takes a BAM/CRAM or a fragments file",
        )
    if kind == "fragments":
        return count_fragments(
            counts_file, peaks, barcodes, str(source), chrom_naming, threads, barcode_file
        )
    if barcodes is not None:
        raise InputError(counts_file, f"barcodes need a fragments file; this is a {kind.upper()}")
    return count_reads(counts_file, peaks, rules, source, chrom_naming, threads)


def write_counts(path: str | Path, peaks: pd.DataFrame, counts: np.ndarray) -> None:
    """``chrom start end name count`` lines, written aside and renamed in (a full disk names
    ``path`` and leaves nothing)."""
    table = peaks[["chrom", "start", "end", "name"]].assign(count=counts)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", header=False, index=False)


def _rules(args: argparse.Namespace, defaults: dict[str, Any]) -> ReadFilter:
    """``prepare.bam``'s defaults with the flags given on the command line."""
    rules = read_filter(defaults["bam"])
    changes = {
        "min_mapq": args.min_mapq,
        "drop_duplicates": False if args.keep_duplicates else None,
        "drop_secondary": False if args.keep_secondary else None,
        "drop_supplementary": False if args.keep_supplementary else None,
        "drop_qcfail": False if args.keep_qcfail else None,
        "require_proper_pair": True if args.proper_pairs_only else None,
        "tn5_shift": False if args.no_tn5_shift else None,
    }
    return dataclasses.replace(rules, **{k: v for k, v in changes.items() if v is not None})


def run(args: argparse.Namespace) -> None:
    threads = args.threads or len(os.sched_getaffinity(0))  # cli checks a given one is >= 1
    if args.group is not None and args.barcodes is None:
        raise GetdiffError("--group needs --barcodes (a barcode<TAB>group table)")
    defaults = prepare_defaults()
    began = time.perf_counter()
    peaks = read_peak_file(args.peaks, duplicates=defaults["duplicate_peaks"])
    barcodes = None
    if args.barcodes:
        barcodes = read_barcodes(args.barcodes, args.group or "", args.group is not None)
    naming = args.chrom_naming or defaults["chrom_naming"]
    counts, summary = count_peaks(
        args.counts_file,
        peaks,
        _rules(args, defaults),
        barcodes,
        args.peaks,
        naming,
        threads,
        args.barcodes,
    )
    write_counts(args.out, peaks, counts)
    seconds = time.perf_counter() - began
    rate = summary.seen / max(seconds, 1e-9) / 1e6
    print(
        f"getdiff count: {args.counts_file}: {summary.line()}; {seconds:.2f} s "
        f"({rate:.2f} M {summary.unit}s/s, {threads} thread(s))",
        file=sys.stderr,
    )


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "count",
        help="Tn5 insertion sites per peak from a BAM/CRAM or fragments file -> TSV",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--counts-file", required=True, help="BAM/CRAM (indexed) or fragments")
    parser.add_argument("--peaks", required=True, help="peak file (BED3+, narrowPeak)")
    parser.add_argument("--out", required=True, help="output TSV: chrom start end name count")
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads (default: every CPU it may use)"
    )
    parser.add_argument("--barcodes", help="fragments: barcode list or barcode<TAB>group table")
    parser.add_argument("--group", help="fragments: the group of the barcode table to count")
    parser.add_argument(
        "--chrom-naming",
        choices=["strict", "harmonise"],
        default=None,
        help="1 vs chr1 naming: an error or renamed (default: the schema's prepare.chrom_naming)",
    )
    reads = parser.add_argument_group("BAM/CRAM read filters (default: prepare.bam's defaults)")
    reads.add_argument("--min-mapq", type=int, default=None, help="lowest MAPQ counted")
    reads.add_argument("--keep-duplicates", action="store_true", help="count 0x400 reads")
    reads.add_argument("--keep-secondary", action="store_true", help="count 0x100 reads")
    reads.add_argument("--keep-supplementary", action="store_true", help="count 0x800 reads")
    reads.add_argument("--keep-qcfail", action="store_true", help="count 0x200 reads")
    reads.add_argument(
        "--proper-pairs-only", action="store_true", help="count only reads flagged 0x1 and 0x2"
    )
    reads.add_argument(
        "--no-tn5-shift", action="store_true", help="sites are the 5' ends, unshifted"
    )
    parser.set_defaults(func=run)


__all__ = ["count_peaks", "prepare_defaults", "register_cli", "write_counts"]
