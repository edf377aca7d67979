"""Wall time and peak memory of the prepare stage, run as the workflow runs it (the CLI).

Cases:
- ``demo``: one demo cell type (demo_liver) at the default demo size (60k peaks, default scan);
- ``synthetic``: 100k peaks x 1M motif hits (gzip scan, streamed), window_size 900.
- ``baseline``: ``python -m getdiff --version``: the interpreter + package imports alone.

Each case runs ``python -m getdiff ...`` in a child process; wall time is measured around it and
peak RSS is the child's ``ru_maxrss`` (from ``os.wait4``). Inputs are generated under OUT (default
``benchmarks/out``) and reused. Usage::

    python benchmarks/prepare_scale.py [--out benchmarks/out] [--cases baseline,demo,synthetic]

Prints one line per case and writes OUT/prepare_scale.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from getdiff.demo import DEFAULT_DEMO_CHROMOSOMES, HG38_SIZES, write_demo_data
from getdiff.motifs import load_cluster_names


def run_measured(command: list[str]) -> dict[str, float]:
    """Run a command; wall seconds and the child's peak RSS in MiB."""
    began = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - began
    stderr = process.stderr.read().decode() if process.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{stderr}")
    return {"wall_s": round(wall, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def synthetic_inputs(out: Path, n_peaks: int, n_hits: int, seed: int = 0) -> Path:
    """Peaks (narrowPeak-like, counts in column 5) + a gzip scan; returns a config path."""
    config_path = out / "config.yaml"
    if config_path.exists():
        return config_path
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    chroms = np.array(DEFAULT_DEMO_CHROMOSOMES)
    sizes = np.array([HG38_SIZES[c] for c in chroms], dtype=np.float64)
    peak_chrom = np.sort(rng.choice(len(chroms), n_peaks, p=sizes / sizes.sum()))
    peak_start = (rng.random(n_peaks) * (sizes[peak_chrom] - 2000)).astype(np.int64)
    peak_end = peak_start + rng.integers(200, 1500, n_peaks)
    counts = 1 + rng.poisson(30, n_peaks)
    lines = "".join(
        f"{chroms[c]}\t{s}\t{e}\tpeak{i}\t{n}\n"
        for i, (c, s, e, n) in enumerate(zip(peak_chrom, peak_start, peak_end, counts, strict=True))
    )
    # Duplicate coordinates are an input error: drop the (rare) random collisions.
    seen: set[tuple[str, str, str]] = set()
    unique = []
    for line in lines.splitlines():
        key = tuple(line.split("\t")[:3])
        if key not in seen:
            seen.add(key)
            unique.append(line)
    with gzip.open(out / "peaks.bed.gz", "wt") as handle:
        handle.write("\n".join(unique) + "\n")
    names = np.array(load_cluster_names())
    # 80% of hits inside peaks, 20% anywhere on the genome.
    in_peak = int(0.8 * n_hits)
    which = rng.integers(0, n_peaks, in_peak)
    hit_chrom = np.r_[peak_chrom[which], rng.choice(len(chroms), n_hits - in_peak)]
    hit_start = np.r_[
        peak_start[which] + (rng.random(in_peak) * (peak_end - peak_start)[which]).astype(int),
        (rng.random(n_hits - in_peak) * (sizes[hit_chrom[in_peak:]] - 50)).astype(np.int64),
    ]
    order = np.lexsort((hit_start, hit_chrom))
    hit_chrom, hit_start = hit_chrom[order], hit_start[order]
    hit_len = rng.integers(6, 21, n_hits)
    cluster = names[rng.integers(0, len(names), n_hits)]
    score = np.round(4 + rng.gamma(2.0, 2.5, n_hits), 2)
    with gzip.open(out / "scan.bed.gz", "wt") as handle:
        for lo in range(0, n_hits, 200_000):
            hi = min(lo + 200_000, n_hits)
            handle.write(
                "".join(
                    f"{chroms[c]}\t{s}\t{s + w}\t{k}\t{v}\t+\n"
                    for c, s, w, k, v in zip(
                        hit_chrom[lo:hi],
                        hit_start[lo:hi],
                        hit_len[lo:hi],
                        cluster[lo:hi],
                        score[lo:hi],
                        strict=True,
                    )
                )
            )
    (out / "cell_types.tsv").write_text(
        f"cell_type\tpeaks\tcounts_file\tcounts_column\nsynthetic\t{out / 'peaks.bed.gz'}\t\t5\n"
    )
    config = {
        "cell_types": str(out / "cell_types.tsv"),
        "motif_scan": str(out / "scan.bed.gz"),
        "prepare": {"max_span": 100_000_000},
    }
    config_path.write_text(yaml.safe_dump(config))
    return config_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    parser.add_argument("--cases", default="baseline,demo,synthetic")
    args = parser.parse_args()
    getdiff = [sys.executable, "-m", "getdiff"]
    results = {}
    for case in args.cases.split(","):
        if case == "baseline":
            results[case] = run_measured([*getdiff, "--version"])
        elif case == "demo":
            demo = args.out / "demo"
            if not (demo / "config.yaml").exists():
                write_demo_data(demo)
            command = [*getdiff, "prepare", "--config", str(demo / "config.yaml")]
            command += ["--cell-type", "demo_liver", "--outdir", str(args.out / "prep_demo")]
            results[case] = run_measured(command)
        elif case == "synthetic":
            config = synthetic_inputs(args.out / "synthetic", 100_000, 1_000_000)
            command = [*getdiff, "prepare", "--config", str(config), "--cell-type", "synthetic"]
            results[case] = run_measured([*command, "--outdir", str(args.out / "prep_synth")])
        else:
            raise SystemExit(f"unknown case {case!r}")
        print(f"{case}: {results[case]['wall_s']} s, peak RSS {results[case]['peak_rss_mib']} MiB")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "prepare_scale.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
