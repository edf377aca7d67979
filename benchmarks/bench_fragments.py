"""Fragments counting throughput: getdiff.genomics.fragments.count_insertions on synthetic files.

Synthetic inputs (seeded, cached under ``benchmarks/out/fragments/``): ``--peaks`` BED3 peaks
(200-1000 bp, gaps of mean 3 kb) over chr1-22 and chrX, and a fragments file of ``--fragments``
lines ``chrom start end barcode count`` (lengths 50-700 bp; 60% start inside a peak, the rest
anywhere on the chromosome; barcodes from a pool of 5,000), sorted by chromosome and start, bgzip
compressed as cellranger-atac writes it.

Measured in a child process: wall time of the counting (the file read included), fragments per
second, and the process's peak RSS; once with all barcodes, once with a 500-barcode list.

BAM (``getdiff.genomics.bam.count_read_insertions``): ``--bam-reads`` paired-end reads (2 x 50 bp
with sequence and qualities, read names as Illumina writes them; 60% of pairs start in a peak; 8%
below MAPQ 30, 5% duplicates), coordinate-sorted and indexed with pysam, cached beside the
fragments file; the same peaks; wall time, reads per second and peak RSS of a child process.

    python benchmarks/bench_fragments.py --peaks 100000 --fragments 10000000 --bam-reads 2000000
    python benchmarks/bench_fragments.py --quick

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "fragments"
CHROMOSOMES = [f"chr{i}" for i in range(1, 23)] + ["chrX"]


def make_inputs(
    n_peaks: int, n_fragments: int, seed: int = 0, outdir: Path = OUT
) -> dict[str, Path]:
    """Peaks BED, bgzipped fragments file and a 500-barcode list (written once per size)."""
    outdir.mkdir(parents=True, exist_ok=True)
    peaks_path = outdir / f"peaks_{n_peaks}_s{seed}.bed"
    fragments_path = outdir / f"fragments_{n_peaks}_{n_fragments}_s{seed}.tsv.gz"
    barcodes_path = outdir / "barcodes_500.txt"
    pool = np.array([f"AAAC{i:08d}-1" for i in range(5000)])
    barcodes_path.write_text("\n".join(pool[:500]) + "\n")
    if peaks_path.exists() and fragments_path.exists():
        return {"peaks": peaks_path, "fragments": fragments_path, "barcodes": barcodes_path}
    rng = np.random.default_rng(seed)
    per_chrom = n_peaks // len(CHROMOSOMES)
    widths = rng.integers(200, 1000, (len(CHROMOSOMES), per_chrom))
    gaps = rng.exponential(3000, (len(CHROMOSOMES), per_chrom)).astype(np.int64) + 1
    starts = np.cumsum(widths + gaps, axis=1) - widths
    ends = starts + widths
    lines = [
        f"{c}\t{s}\t{e}\n"
        for k, c in enumerate(CHROMOSOMES)
        for s, e in zip(starts[k], ends[k], strict=True)
    ]
    peaks_path.write_text("".join(lines))
    chrom = np.sort(rng.integers(0, len(CHROMOSOMES), n_fragments))
    in_peak = rng.random(n_fragments) < 0.6
    which = rng.integers(0, per_chrom, n_fragments)
    span = ends[:, -1]
    start = np.where(
        in_peak,
        starts[chrom, which] + rng.integers(0, 200, n_fragments),
        (rng.random(n_fragments) * span[chrom]).astype(np.int64),
    )
    end = start + rng.integers(50, 700, n_fragments)
    order = np.lexsort((start, chrom))
    names = np.array(CHROMOSOMES)[chrom[order]]
    barcode = pool[rng.integers(0, len(pool), n_fragments)]
    count = 1 + rng.poisson(0.5, n_fragments)
    with gzip.open(fragments_path, "wt", compresslevel=1) as handle:
        for lo in range(0, n_fragments, 1_000_000):
            part = slice(lo, lo + 1_000_000)
            rows = zip(
                names[part],
                start[order][part],
                end[order][part],
                barcode[part],
                count[part],
                strict=True,
            )
            handle.write("".join(f"{a}\t{b}\t{c}\t{d}\t{e}\n" for a, b, c, d, e in rows))
    return {"peaks": peaks_path, "fragments": fragments_path, "barcodes": barcodes_path}


def _peak_rss_mib() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a
    worker started by a parent that had just generated the inputs would report the parent's."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_bam(peaks_path: Path, n_reads: int, seed: int = 0) -> Path:
    """A sorted, indexed paired-end BAM of ``n_reads`` reads over the peaks (written once)."""
    import pysam

    bam_path = peaks_path.with_name(f"{peaks_path.stem}_reads{n_reads}.bam")
    if bam_path.exists() and Path(f"{bam_path}.bai").exists():
        return bam_path
    peaks = np.loadtxt(peaks_path, dtype=str, ndmin=2)
    rng = np.random.default_rng(seed)
    pairs = n_reads // 2
    pick = rng.integers(0, len(peaks), pairs)
    chrom = peaks[pick, 0]
    in_peak = rng.random(pairs) < 0.6
    anchor = peaks[pick, 1].astype(np.int64)
    start = np.where(in_peak, anchor, anchor + rng.integers(1000, 50_000, pairs))
    mate = start + rng.integers(50, 600, pairs)  # the reverse mate's leftmost base
    mapq = np.where(rng.random(pairs) < 0.08, 10, 60)
    dup = np.where(rng.random(pairs) < 0.05, 0x400, 0)
    seqs = ["".join(rng.choice(list("ACGT"), 50)) for _ in range(256)]
    quals = ["".join(chr(33 + q) for q in rng.integers(2, 41, 50)) for _ in range(256)]
    sam = bam_path.with_suffix(".sam")
    names = sorted(set(peaks[:, 0]))
    with open(sam, "w") as handle:
        handle.write("@HD\tVN:1.6\tSO:unsorted\n")
        handle.write("".join(f"@SQ\tSN:{c}\tLN:250000000\n" for c in names))
        for lo in range(0, pairs, 200_000):
            handle.write(
                "".join(
                    f"A00123:8:HXXX:1:1101:{i}:1\t{99 | dup[i]}\t{chrom[i]}\t{start[i] + 1}\t"
                    f"{mapq[i]}\t50M\t=\t{mate[i] + 1}\t{mate[i] + 50 - start[i]}\t"
                    f"{seqs[i % 256]}\t{quals[i % 251]}\n"
                    f"A00123:8:HXXX:1:1101:{i}:1\t{147 | dup[i]}\t{chrom[i]}\t{mate[i] + 1}\t"
                    f"{mapq[i]}\t50M\t=\t{start[i] + 1}\t{start[i] - mate[i] - 50}\t"
                    f"{seqs[(i + 7) % 256]}\t{quals[(i + 3) % 251]}\n"
                    for i in range(lo, min(lo + 200_000, pairs))
                )
            )
    pysam.sort("-@", "2", "-o", str(bam_path), str(sam))
    pysam.index(str(bam_path))
    sam.unlink()
    return bam_path


def _bam_worker(peaks: Path, bam: Path) -> dict:
    from getdiff.config import validate_config
    from getdiff.genomics.bam import count_read_insertions, read_filter
    from getdiff.genomics.peaks import load_peaks

    table, _ = load_peaks(peaks, chromosomes=CHROMOSOMES)
    config = validate_config({"cell_types": "x.tsv", "motif_scan": "x.bed"})
    began = time.perf_counter()
    counts = count_read_insertions(bam, table, read_filter(config["prepare"]["bam"]))
    seconds = time.perf_counter() - began
    return {
        "seconds": seconds,
        "sites_in_peaks": int(counts.sum()),
        "peak_rss_mib": _peak_rss_mib(),
    }


def measure_bam(peaks: Path, bam: Path, n_reads: int) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--bam-worker", str(peaks), str(bam)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(reads=n_reads, file_mib=bam.stat().st_size / 2**20)
    result["reads_per_s"] = n_reads / result["seconds"]
    return result


def _worker(peaks: Path, fragments: Path, barcodes: Path | None) -> dict:
    from getdiff.genomics.fragments import count_insertions, read_barcodes
    from getdiff.genomics.peaks import load_peaks

    table, _ = load_peaks(peaks, chromosomes=CHROMOSOMES)
    chosen = read_barcodes(barcodes, "all") if barcodes else None
    began = time.perf_counter()
    counts = count_insertions(fragments, table, chosen)
    seconds = time.perf_counter() - began
    return {
        "seconds": seconds,
        "sites_in_peaks": int(counts.sum()),
        "peak_rss_mib": _peak_rss_mib(),
    }


def measure(paths: dict[str, Path], n_fragments: int, with_barcodes: bool) -> dict:
    args = [str(paths["peaks"]), str(paths["fragments"])]
    args += [str(paths["barcodes"])] if with_barcodes else []
    done = subprocess.run(
        [sys.executable, __file__, "--worker", *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["fragments_per_s"] = n_fragments / result["seconds"]
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peaks", type=int, default=100_000)
    parser.add_argument("--fragments", type=int, default=10_000_000)
    parser.add_argument("--quick", action="store_true", help="10k peaks x 200k fragments")
    parser.add_argument("--outdir", type=Path, default=OUT, help="generated inputs (cached)")
    parser.add_argument("--bam-reads", type=int, default=2_000_000, help="reads of the BAM")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--bam-worker", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bam_worker:
        print(json.dumps(_bam_worker(*args.bam_worker)))
        return
    if args.worker:
        peaks, fragments, *barcodes = map(Path, args.worker)
        print(json.dumps(_worker(peaks, fragments, barcodes[0] if barcodes else None)))
        return
    n_peaks, n_fragments = (10_000, 200_000) if args.quick else (args.peaks, args.fragments)
    paths = make_inputs(n_peaks, n_fragments, outdir=args.outdir)
    result = {
        "peaks": n_peaks,
        "fragments": n_fragments,
        "file_mib": paths["fragments"].stat().st_size / 2**20,
        "all_barcodes": measure(paths, n_fragments, False),
        "barcode_list_500": measure(paths, n_fragments, True),
    }
    n_reads = 100_000 if args.quick else args.bam_reads
    bam = make_bam(paths["peaks"], n_reads)
    result["bam"] = measure_bam(paths["peaks"], bam, n_reads)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
