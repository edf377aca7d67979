"""bigWig (and bedGraph) tracks of an imputation, one value per peak, for genome browsers.

Contract. ``getdiff tracks`` reads one imputation table (getdiff impute, docs/DATA_CONTRACT.md
"Imputations") and writes ``<prefix>.<track>.bw`` for each track whose column it holds:

    observed  <- observed_raw.<feature>          imputed <- imputed_raw.<feature>
    lower     <- imputed_lower_raw.<feature>     upper   <- imputed_upper_raw.<feature>

(``feature`` is ``accessibility`` unless told otherwise; lower and upper exist only where the
imputation has intervals). Values are in the table's raw units (read counts for accessibility),
stored as float32 as bigWig holds them, constant over each peak's ``[start, end)`` (0-based,
half-open, as BED); a base in no peak has no value (not 0). A NaN value is left out (logged).

Overlapping peaks: the peaks of a chromosome are cut at every peak boundary into disjoint
pieces, and a piece takes the mean of the values of the peaks covering it. A piece covered by
one peak carries that peak's value exactly, so where no peaks overlap each peak reads back its
own value. Input order does not matter (pieces are built sorted).

Chromosome sizes: from the FASTA index (``<genome_fasta>.fai``) when there is one: the header
lists every sequence of the index, in its order, and a peak on a sequence not in it or past its
end is an error. Without an index, each chromosome's size is its largest peak end (logged), and
the header lists the peaks' chromosomes in natural order.

With ``--bedgraph`` the same pieces are also written as ``<prefix>.<track>.bedGraph``: a UCSC
``track type=bedGraph`` line, then ``chrom start end value`` (value to float32 precision).
Every output is written aside and renamed in as one set. Library: pyBigWig (benchmarks/
RESULTS.md, section 8, compares it with pybigtools: 4-7x faster to write, a sixth the install).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from getdiff.errors import GetdiffError, InputError
from getdiff.genomics.intervals import natural_chrom_key
from getdiff.io import output_set
from getdiff.tensors import ACCESSIBILITY

log = logging.getLogger(__name__)

# Track name -> column prefix in the imputation table (raw units).
TRACKS = {
    "observed": "observed_raw",
    "imputed": "imputed_raw",
    "lower": "imputed_lower_raw",
    "upper": "imputed_upper_raw",
}
BIGWIG_SUFFIX = ".bw"
BEDGRAPH_SUFFIX = ".bedGraph"


@dataclass(frozen=True)
class Pieces:
    """Disjoint, sorted intervals of one chromosome with one value each."""

    starts: np.ndarray  # (k,) int64
    ends: np.ndarray  # (k,) int64
    values: np.ndarray  # (k,) float64


def track_paths(prefix: str | Path, tracks: list[str], bedgraph: bool = False) -> dict[str, Path]:
    """``{key: path}`` of the outputs of ``tracks`` (keys ``observed``, ``observed.bedGraph``)."""
    prefix = Path(prefix)
    paths = {name: prefix.with_name(f"{prefix.name}.{name}{BIGWIG_SUFFIX}") for name in tracks}
    if bedgraph:
        for name in tracks:
            paths[f"{name}{BEDGRAPH_SUFFIX}"] = prefix.with_name(
                f"{prefix.name}.{name}{BEDGRAPH_SUFFIX}"
            )
    return paths


def disjoint_pieces(starts: np.ndarray, ends: np.ndarray, values: np.ndarray) -> Pieces:
    """Cut the (possibly overlapping, unsorted) intervals of one chromosome at every boundary;
    each piece covered by at least one interval gets the mean of their values (the value itself
    where one interval covers it)."""
    starts = np.asarray(starts, np.int64)
    ends = np.asarray(ends, np.int64)
    values = np.asarray(values, np.float64)
    if len(starts) == 0:
        empty = np.zeros(0, np.int64)
        return Pieces(empty, empty, np.zeros(0))
    bounds = np.unique(np.concatenate([starts, ends]))
    first, last = np.searchsorted(bounds, starts), np.searchsorted(bounds, ends)
    size = len(bounds)

    def running(weights: np.ndarray | None) -> np.ndarray:
        """Per piece (between bounds i and i + 1): the sum of ``weights`` of covering peaks."""
        delta = np.bincount(first, weights, size) - np.bincount(last, weights, size)
        return np.cumsum(delta)[:-1]

    count = np.rint(running(None)).astype(np.int64)
    # With one covering peak, the running sum of row numbers is that peak's row (exact in
    # float64 below 2**53): its value is copied, not recomputed from sums.
    owner = np.rint(running(np.arange(len(starts), dtype=np.float64))).astype(np.int64)
    covered = count > 0
    mean = np.divide(running(values), count, out=np.zeros(size - 1), where=covered)
    single = count == 1
    mean[single] = values[owner[single]]
    return Pieces(bounds[:-1][covered], bounds[1:][covered], mean[covered])


def read_chrom_sizes(fasta: str | Path | None, table: pd.DataFrame, source: str) -> dict[str, int]:
    """Chromosome sizes for the header: ``<fasta>.fai`` when it exists (checked against the
    peaks of ``table``), else each chromosome's largest peak end (logged)."""
    ends = table.groupby("chrom", sort=False, observed=True)["end"].max()
    index = Path(f"{fasta}.fai") if fasta else None
    if index is None or not index.is_file():
        why = "no genome_fasta given" if fasta is None else f"{index} does not exist"
        log.info("%s: chromosome sizes are each chromosome's largest peak end (%s)", source, why)
        order = sorted(ends.index, key=natural_chrom_key)
        return {str(chrom): int(ends[chrom]) for chrom in order}
    fai = pd.read_csv(index, sep="\t", header=None, usecols=[0, 1], dtype={0: str, 1: np.int64})
    sizes = dict(zip(fai[0], fai[1].astype(int), strict=True))
    for chrom, end in ends.items():
        if chrom not in sizes:
            raise InputError(
                source,
                f"chromosome {chrom!r} is not in the FASTA index {index}; expected the genome "
                "the peaks were called on (same chromosome naming)",
            )
        if end > sizes[chrom]:
            raise InputError(
                source,
                f"a peak on {chrom} ends at {end}, past its length {sizes[chrom]} in {index}; "
                "expected the genome build the peaks were called on",
            )
    log.info("%s: chromosome sizes from %s (%d sequences)", source, index, len(sizes))
    return sizes


def chromosome_pieces(
    table: pd.DataFrame, column: str, order: list[str]
) -> Iterator[tuple[str, Pieces]]:
    """``(chrom, pieces)`` of ``column`` for every chromosome of ``order`` holding peaks."""
    values = table[column].to_numpy(np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        log.warning("%s: %d NaN/inf values left out", column, int((~finite).sum()))
    kept = table if finite.all() else table[finite]
    kept_values = values[finite]
    groups = kept.groupby("chrom", sort=False, observed=True).indices
    for chrom in order:
        at = groups.get(chrom)
        if at is None:
            continue
        starts = kept["start"].to_numpy()[at]
        ends = kept["end"].to_numpy()[at]
        yield chrom, disjoint_pieces(starts, ends, kept_values[at])


def write_bigwig(path: Path, sizes: dict[str, int], pieces: list[tuple[str, Pieces]]) -> None:
    """One bigWig of ``pieces`` (in the header's chromosome order) with ``sizes`` as header."""
    import pyBigWig  # loaded where needed: only this stage uses it

    handle = pyBigWig.open(str(path), "w")
    if handle is None:
        raise InputError(path, "cannot be opened for writing")
    try:
        handle.addHeader(list(sizes.items()), maxZooms=10)
        for chrom, part in pieces:
            if len(part.starts):
                handle.addEntries(
                    [chrom] * len(part.starts),
                    part.starts.tolist(),
                    ends=part.ends.tolist(),
                    values=part.values.tolist(),
                )
    finally:
        handle.close()


def write_bedgraph(path: Path, name: str, pieces: list[tuple[str, Pieces]]) -> None:
    """The same pieces as a bedGraph with a UCSC track line."""
    frames = [
        pd.DataFrame(
            {"chrom": chrom, "start": p.starts, "end": p.ends, "value": p.values.astype(np.float32)}
        )
        for chrom, p in pieces
    ]
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(f'track type=bedGraph name="{name}" description="getdiff {name}"\n')
        if frames:
            pd.concat(frames).to_csv(
                handle, sep="\t", header=False, index=False, float_format="%.9g"
            )


def read_imputation(path: str | Path) -> pd.DataFrame:
    """The columns the tracks need (coordinates and every raw column) of an imputation table."""
    try:
        names = pq.read_schema(path).names
    except (OSError, ValueError) as err:
        raise InputError(path, f"not a readable Parquet file ({err})") from None
    wanted = ["chrom", "start", "end", *[n for n in names if "_raw." in n]]
    missing = [c for c in ("chrom", "start", "end") if c not in names]
    if missing:
        raise InputError(path, f"no column {missing[0]!r}; expected a getdiff impute table")
    return pq.read_table(path, columns=wanted).to_pandas()


def write_tracks(
    table: pd.DataFrame,
    prefix: str | Path,
    sizes: dict[str, int],
    feature: str = ACCESSIBILITY,
    bedgraph: bool = False,
    label: str = "",
) -> dict[str, Path]:
    """Write the tracks of ``feature`` present in ``table`` (see the module docstring) as one
    output set; returns ``{track: path}`` of what was written."""
    table = table.reset_index(drop=True)
    present = [name for name, col in TRACKS.items() if f"{col}.{feature}" in table.columns]
    if "observed" not in present:
        raise GetdiffError(f"no column {TRACKS['observed']}.{feature} to make tracks of")
    absent = [name for name in TRACKS if name not in present]
    if absent:
        log.warning("no %s tracks: the imputation has no such columns", ", ".join(absent))
    order = list(sizes)
    paths = track_paths(prefix, present, bedgraph)
    with output_set(paths) as temps:
        for name in present:
            pieces = list(chromosome_pieces(table, f"{TRACKS[name]}.{feature}", order))
            write_bigwig(temps[name], sizes, pieces)
            if bedgraph:
                title = f"{label} {feature} {name}".strip()
                write_bedgraph(temps[f"{name}{BEDGRAPH_SUFFIX}"], title, pieces)
    return paths


def run(args: argparse.Namespace) -> None:
    table = read_imputation(args.imputation)
    sizes = read_chrom_sizes(args.genome_fasta, table, args.imputation)
    label = args.label or Path(args.imputation).stem
    paths = write_tracks(table, args.prefix, sizes, args.feature, args.bedgraph, label)
    log.info(
        "wrote %d tracks of %d regions: %s",
        len(paths),
        len(table),
        sorted(map(str, paths.values())),
    )


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tracks",
        help="bigWig (and bedGraph) tracks of an imputation, for genome browsers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--imputation", required=True, help="Parquet from getdiff impute")
    parser.add_argument(
        "--prefix", required=True, help="output path prefix: <prefix>.<track>.bw are written"
    )
    parser.add_argument("--genome-fasta", help="FASTA whose .fai gives the chromosome sizes")
    parser.add_argument("--feature", default=ACCESSIBILITY, help="feature to make tracks of")
    parser.add_argument("--bedgraph", action="store_true", help="also write bedGraph files")
    parser.add_argument("--label", help="track name in bedGraph track lines (default: file stem)")
    parser.set_defaults(func=run)
