"""Motif scanning throughput: ``getdiff scan`` on a synthetic genome, peaks and a JASPAR release.

Synthetic inputs (seeded, cached under ``benchmarks/out/scan/``): a genome FASTA whose
chromosomes hold ``--peaks`` peaks (widths 150-3000 bp, mean ~500) with gaps of mean 500 bp,
bases drawn with 41% GC; the motifs are ``--motifs`` (default ``jaspar:CORE:vertebrates``: 1,019
matrices of JASPAR2026, from pyjaspar's offline copy).

Measured: ``getdiff scan`` run as a child process with ``--threads``: wall time, Mb scanned, hits,
and the peak RSS of the largest process (``ru_maxrss`` of the children). A genome-wide scan of
the same motifs is extrapolated from the measured rate (3.1 Gb of hg38 at the same Mb/s); the
measured rate includes the set-up (motif parsing, thresholds, one scanner per process), so the
extrapolation is conservative.

    python benchmarks/bench_scan.py --peaks 100000 --threads 2
    python benchmarks/bench_scan.py --quick

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from getdiff.paths import SCAN_DIR, SCAN_FILES

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "scan"
HG38_BASES = 3.1e9
CHROMOSOMES = 4


def make_inputs(
    n_peaks: int, seed: int = 0, outdir: Path = OUT, line: int = 1 << 20
) -> dict[str, Path]:
    """Genome FASTA (``line`` bases per line: the .fai handles any width), peaks BED and sheet
    (written once per size)."""
    outdir.mkdir(parents=True, exist_ok=True)
    fasta = outdir / f"genome_{n_peaks}_s{seed}.fa"
    peaks = outdir / f"peaks_{n_peaks}_s{seed}.bed"
    sheet = outdir / f"cell_types_{n_peaks}_s{seed}.tsv"
    sheet.write_text(f"cell_type\tpeaks\nbench\t{peaks}\n")
    if fasta.exists() and peaks.exists():
        return {"fasta": fasta, "peaks": peaks, "sheet": sheet}
    rng = np.random.default_rng(seed)
    per_chrom = max(n_peaks // CHROMOSOMES, 1)
    alphabet = np.frombuffer(b"ACGT", dtype=np.uint8)
    with open(peaks, "w") as bed, open(fasta, "wb") as out:
        for k in range(CHROMOSOMES):
            widths = np.clip(np.round(150 + rng.gamma(2.0, 175.0, per_chrom)), 150, 3000)
            gaps = rng.exponential(500, per_chrom).astype(np.int64) + 1
            starts = np.cumsum(widths.astype(np.int64) + gaps) - widths.astype(np.int64)
            ends = starts + widths.astype(np.int64)
            length = int(ends[-1]) + 1000
            bed.writelines(f"chr{k + 1}\t{s}\t{e}\n" for s, e in zip(starts, ends, strict=True))
            bases = alphabet[rng.choice(4, length, p=[0.295, 0.205, 0.205, 0.295])]
            out.write(f">chr{k + 1}\n".encode())
            for i in range(0, length, line):
                out.write(bases[i : i + line].tobytes() + b"\n")
    return {"fasta": fasta, "peaks": peaks, "sheet": sheet}


def run(n_peaks: int, motifs: str, threads: int, outdir: Path) -> dict:
    inputs = make_inputs(n_peaks, outdir=outdir)
    config = {
        "cell_types": str(inputs["sheet"]),
        "genome_fasta": str(inputs["fasta"]),
        "motifs": motifs,
        "results": str(outdir / "results"),
        "prepare": {"chromosomes": [f"chr{k + 1}" for k in range(CHROMOSOMES)]},
    }
    config_path = outdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "getdiff", "scan", "--config", str(config_path)]
    command += ["--outdir", str(outdir / "results" / "scan"), "--threads", str(threads)]
    began = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    if done.returncode:
        raise SystemExit(done.stderr)
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    table = np.genfromtxt(
        outdir / "results" / SCAN_DIR / SCAN_FILES["motifs"], delimiter="\t", names=True, dtype=None
    )
    scanned = [line for line in done.stderr.splitlines() if "scanning" in line][0]
    megabases = float(scanned.split(" Mb")[0].rsplit(", ", 1)[1])
    return {
        "peaks": n_peaks,
        "motifs": motifs,
        "n_motifs": int(len(table)),
        "threads": threads,
        "megabases": megabases,
        "seconds": round(seconds, 2),
        "hits": int(table["hits"].sum()),
        "mb_per_s": round(megabases / seconds, 3),
        "peak_rss_mib": round(peak_mib),
        "genome_wide_hours": round(HG38_BASES / 1e6 / (megabases / seconds) / 3600, 2),
        "command": f"python benchmarks/bench_scan.py --peaks {n_peaks} --threads {threads}",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peaks", type=int, default=100_000)
    parser.add_argument("--motifs", default="jaspar:CORE:vertebrates")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--outdir", type=Path, default=OUT)
    parser.add_argument(
        "--quick", action="store_true", help="2,000 peaks x jaspar:CORE:nematodes (103 matrices)"
    )
    args = parser.parse_args(argv)
    n_peaks, motifs = (2000, "jaspar:CORE:nematodes") if args.quick else (args.peaks, args.motifs)
    result = run(n_peaks, motifs, args.threads, args.outdir)
    if args.quick:
        result["command"] = "python benchmarks/bench_scan.py --quick"
    print(json.dumps(result))


if __name__ == "__main__":
    main()
