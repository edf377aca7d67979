"""bigWig tracks: ``getdiff.outputs.tracks.write_tracks`` at 100k regions x 4 tracks, and the two
bigWig libraries side by side.

The synthetic imputation has ``--regions`` peaks over 23 chromosomes (widths 200-1,500 bp, gaps
0-3,000 bp, every 20th peak overlapping its successor by half, rows shuffled), the four raw
columns an imputation with intervals holds, and is written to Parquet first. Measured, each the
median of ``--repeats`` runs:

- ``getdiff``: reading the Parquet (:func:`getdiff.outputs.tracks.read_imputation`), the chromosome
  sizes, and :func:`getdiff.outputs.tracks.write_tracks` (overlaps cut into pieces, 4 bigWig files
  renamed in as one set): what ``getdiff tracks`` does after its imports.
- ``libraries``: writing the same pieces of one track with pyBigWig (``addEntries`` of one
  chromosome at a time) and with pybigtools (``write`` of a tuple iterator), file size, and each
  library's install weight (wheel files on disk, from the installed distribution's RECORD, and
  its dependencies besides numpy).

    python benchmarks/bench_tracks.py --regions 100000 --repeats 5
    python benchmarks/bench_tracks.py --quick

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from getdiff.genomics.intervals import natural_chrom_key
from getdiff.outputs.tracks import (
    TRACKS,
    chromosome_pieces,
    read_chrom_sizes,
    read_imputation,
    write_bigwig,
    write_tracks,
)

CHROMOSOMES = [f"chr{i}" for i in range(1, 23)] + ["chrX"]


def synthetic_imputation(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` peaks (see the module docstring) with the four raw accessibility columns."""
    rng = np.random.default_rng(seed)
    chrom = np.sort(rng.integers(0, len(CHROMOSOMES), n))
    widths = rng.integers(200, 1500, n)
    starts = np.zeros(n, np.int64)
    for c in np.unique(chrom):
        at = np.flatnonzero(chrom == c)
        steps = widths[at] + rng.integers(0, 3000, len(at))
        starts[at] = np.cumsum(steps) - steps
    ends = starts + widths
    overlap = np.arange(n) % 20 == 0
    overlap[-1] = False
    same = np.r_[chrom[1:] == chrom[:-1], False]
    grow = overlap & same
    ends[grow] = starts[np.flatnonzero(grow) + 1] + widths[np.flatnonzero(grow) + 1] // 2
    observed = rng.gamma(2.0, 50.0, n)
    imputed = observed * rng.uniform(0.7, 1.3, n)
    frame = pd.DataFrame(
        {
            "chrom": np.array(CHROMOSOMES)[chrom],
            "start": starts,
            "end": ends,
            "observed_raw.accessibility": observed,
            "imputed_raw.accessibility": imputed,
            "imputed_lower_raw.accessibility": imputed * 0.5,
            "imputed_upper_raw.accessibility": imputed * 1.8,
        }
    )
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def install_weight(distribution: str) -> dict:
    """Bytes the installed distribution occupies (its RECORD) and its requirements."""
    dist = importlib.metadata.distribution(distribution)
    size = sum(f.size or 0 for f in dist.files or [])
    requires = [r.split(";")[0].strip() for r in dist.requires or [] if "extra ==" not in r]
    return {"version": dist.version, "installed_kib": size / 1024, "requires": requires}


def write_pybigtools(path: Path, sizes: dict[str, int], pieces: list) -> None:
    import pybigtools

    records = (
        (chrom, start, end, value)
        for chrom, part in pieces
        for start, end, value in zip(
            part.starts.tolist(), part.ends.tolist(), part.values.tolist(), strict=True
        )
    )
    pybigtools.open(str(path), "w").write(sizes, records)


def median_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        function()
        times.append(time.perf_counter() - began)
    return float(np.median(times))


def measure(n: int, repeats: int, workdir: Path) -> dict:
    frame = synthetic_imputation(n)
    source = workdir / "imputation.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), source)

    def whole() -> None:
        table = read_imputation(source)
        sizes = read_chrom_sizes(None, table, str(source))
        write_tracks(table, workdir / "ct", sizes)

    whole()  # warm-up: imports, page cache
    seconds = median_time(whole, repeats)
    table = read_imputation(source)
    sizes = read_chrom_sizes(None, table, str(source))
    order = sorted(sizes, key=natural_chrom_key)
    pieces = list(chromosome_pieces(table, "imputed_raw.accessibility", order))
    n_pieces = sum(len(p.starts) for _, p in pieces)
    libraries = {}
    for name, writer, dist in (
        ("pyBigWig", write_bigwig, "pyBigWig"),
        ("pybigtools", write_pybigtools, "pybigtools"),
    ):
        path = workdir / f"{name}.bw"
        try:
            writer(path, sizes, pieces)
        except ImportError:
            libraries[name] = {"missing": True}
            continue
        libraries[name] = {
            "seconds_per_track": median_time(lambda w=writer, p=path: w(p, sizes, pieces), repeats),
            "file_kib": path.stat().st_size / 1024,
            **install_weight(dist),
        }
    return {
        "regions": n,
        "tracks": len(TRACKS),
        "pieces_per_track": n_pieces,
        "repeats": repeats,
        "getdiff_seconds": seconds,
        "files_kib": sum((workdir / f"ct.{t}.bw").stat().st_size for t in TRACKS) / 1024,
        "libraries": libraries,
        "load_before": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regions", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2,000 regions, 2 repeats")
    args = parser.parse_args()
    n, repeats = (2000, 2) if args.quick else (args.regions, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(measure(n, repeats, Path(tmp)), indent=1))


if __name__ == "__main__":
    main()
