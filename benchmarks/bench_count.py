"""`getdiff count` side by side with its peers, whole processes, paired alternating runs.

BAM (``--reads`` reads, the paired-end 2 x 50 bp BAM of ``bench_fragments.make_bam``, sorted and
indexed; ``--peaks`` peaks): ``getdiff count --threads T`` vs featureCounts 2.x
``-p -F SAF --read2pos 5 -Q 30 --ignoreDup --primary -T T`` at T = 1 and 2. Equivalent filters:
``-Q 30`` = ``min_mapq: 30``; ``--ignoreDup`` = drop 0x400; ``--primary`` = drop 0x100; the
BAM has no supplementary or QC-fail reads (featureCounts has no switch for 0x200). Definitional
difference: featureCounts' ``--read2pos 5`` counts the 5' base itself (a reverse read's last
aligned base), unshifted; getdiff counts the Tn5 site (+4 / -5), so their counts are compared
with ``getdiff count --no-tn5-shift`` (must be equal per peak), and the shifted counts with a
read-by-read pysam count of one chromosome (an independent computation of the definition).

Fragments (``--fragments`` lines, ``bench_fragments.make_inputs``): ``getdiff count`` at 1 and 2
threads vs the stream prototypes (gzip decoded by Arrow's zlib, or by ISA-L, then pyarrow's CSV
reader and numpy, in this file) and snapATAC2's ``import_fragments`` + ``make_peak_matrix`` summed
over cells (in its own venv, ``--peers-venv``; installed there with pip, skipped with a message
where that fails).

Each repeat runs every tool once, the order reversed every other repeat; the table gives the
median wall time and the median over repeats of the per-repeat ratio peer / getdiff (> 1:
getdiff faster). Prints one JSON object.

    python benchmarks/bench_count.py --peaks 100000 --reads 10000000 --fragments 10000000
    python benchmarks/bench_count.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fragments import CHROMOSOMES, make_bam, make_inputs  # noqa: E402

OUT = ROOT / "benchmarks" / "out" / "count"
FC_FLAGS = ["-p", "-F", "SAF", "--read2pos", "5", "-Q", "30", "--ignoreDup", "--primary"]


def ensure_featurecounts() -> str | None:
    """featureCounts on PATH, apt-get installing Debian's subread as root if missing."""
    if shutil.which("featureCounts") is None and os.geteuid() == 0 and shutil.which("apt-get"):
        print("featureCounts missing: apt-get install -y subread", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "subread"], capture_output=True)
    return shutil.which("featureCounts")


def ensure_peers_venv(venv: Path, packages: list[str]) -> Path | None:
    """A venv of its own for Python peers (their pins must not touch getdiff's); None when pip
    cannot install them."""
    python = venv / "bin" / "python"
    names = {"snapatac2": "snapatac2", "memelite": "memelite"}
    probe = "; ".join(f"import {names[p]}" for p in packages)
    if (
        python.exists()
        and subprocess.run([python, "-c", probe], capture_output=True).returncode == 0
    ):
        return python
    print(f"installing {packages} into {venv} (pip)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    done = subprocess.run(
        [python, "-m", "pip", "install", *packages], capture_output=True, text=True
    )
    if done.returncode:
        print(f"skipped {packages}: pip install failed: {done.stderr[-300:]}", file=sys.stderr)
        return None
    return python


def timed(command: list) -> tuple[float, str]:
    """Wall seconds of the command and its stdout's last line."""
    began = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
    return time.perf_counter() - began, (done.stdout.strip().splitlines() or [""])[-1]


def paired(tools: dict[str, list], repeats: int, base: str) -> dict[str, dict]:
    """Every tool ``repeats`` times, alternating the order; median s, paired ratio to ``base``
    and the last line the tool printed."""
    times: dict[str, list[float]] = {name: [] for name in tools}
    printed: dict[str, str] = {}
    for repeat in range(repeats):
        order = list(tools) if repeat % 2 == 0 else list(reversed(tools))
        for name in order:
            seconds, printed[name] = timed(tools[name])
            times[name].append(seconds)
    result = {}
    for name, values in times.items():
        entry = {"median_s": statistics.median(values), "runs_s": values, "stdout": printed[name]}
        if name != base:
            ratios = [peer / ours for peer, ours in zip(values, times[base], strict=True)]
            entry["ratio_vs_getdiff"] = statistics.median(ratios)
        result[name] = entry
    return result


def write_saf(peaks: Path, saf: Path) -> None:
    lines = ["GeneID\tChr\tStart\tEnd\tStrand"]
    for number, line in enumerate(peaks.read_text().splitlines(), start=1):
        chrom, start, end = line.split("\t")[:3]
        lines.append(f"p{number}\t{chrom}\t{int(start) + 1}\t{end}\t+")
    saf.write_text("\n".join(lines) + "\n")


def getdiff_count(counts: Path, peaks: Path, out: Path, threads: int, *flags: str) -> list:
    command = [sys.executable, "-m", "getdiff", "count", "--counts-file", counts, "--peaks", peaks]
    return [*command, "--out", out, "--threads", str(threads), *flags]


def read_counts(path: Path) -> np.ndarray:
    return np.loadtxt(path, dtype=np.int64, usecols=4, ndmin=1)


def pysam_check(bam: Path, peaks: Path, counts: Path, chrom: str) -> dict:
    """getdiff's shifted counts on ``chrom`` vs a read-by-read pysam count (the definition)."""
    import pysam

    table = np.loadtxt(peaks, dtype=str, ndmin=2)
    rows = np.flatnonzero(table[:, 0] == chrom)
    starts, ends = table[rows, 1].astype(np.int64), table[rows, 2].astype(np.int64)
    sites = []
    with pysam.AlignmentFile(str(bam)) as reads:
        for read in reads.fetch(chrom):
            if read.flag & 0xF04 or read.mapping_quality < 30 or read.reference_end is None:
                continue
            sites.append(read.reference_end - 6 if read.is_reverse else read.reference_start + 4)
    sites = np.sort(np.asarray(sites, dtype=np.int64))
    expected = np.searchsorted(sites, ends) - np.searchsorted(sites, starts)
    ours = read_counts(counts)[rows]
    return {"chrom": chrom, "peaks": len(rows), "equal": bool(np.array_equal(ours, expected))}


def bench_bam(paths: dict, n_reads: int, repeats: int, outdir: Path) -> dict:
    bam = make_bam(paths["peaks"], n_reads)
    result = {"reads": n_reads, "bam_mib": bam.stat().st_size / 2**20}
    ours = outdir / "getdiff_bam.tsv"
    featurecounts = ensure_featurecounts()
    tools = {f"getdiff -T{t}": getdiff_count(bam, paths["peaks"], ours, t) for t in (1, 2)}
    if featurecounts is None:
        print("featureCounts not found (Debian: subread): BAM peer skipped", file=sys.stderr)
    else:
        saf = outdir / "peaks.saf"
        write_saf(paths["peaks"], saf)
        version = subprocess.run([featurecounts, "-v"], capture_output=True, text=True)
        result["featurecounts"] = (version.stderr or version.stdout).strip()
        for t in (1, 2):
            fc = [featurecounts, *FC_FLAGS, "-T", str(t), "-a", saf, "-o", outdir / "fc.txt", bam]
            tools[f"featureCounts -T{t}"] = fc
    for t in (1, 2):
        pair = {k: v for k, v in tools.items() if k.endswith(f"T{t}")}
        result[f"T{t}"] = paired(pair, repeats, f"getdiff -T{t}")
    if featurecounts is not None:
        unshifted = outdir / "getdiff_unshifted.tsv"
        subprocess.run(
            getdiff_count(bam, paths["peaks"], unshifted, 2, "--no-tn5-shift"),
            check=True,
            capture_output=True,
            cwd=ROOT,
        )
        fc = np.loadtxt(outdir / "fc.txt", dtype=np.int64, usecols=6, skiprows=2, ndmin=1)
        mine = read_counts(unshifted)
        result["check_featurecounts"] = {
            "peaks": len(fc),
            "equal": bool(np.array_equal(fc, mine)),
            "sites": int(fc.sum()),
        }
    result["check_pysam"] = pysam_check(bam, paths["peaks"], ours, CHROMOSOMES[0])
    return result


def prototype(fragments: Path, peaks: Path, decoder: str) -> None:
    """The stream prototype: gzip decoded by ``decoder`` (arrow: Arrow's zlib; isal: ISA-L),
    pyarrow's CSV reader in 8 MiB blocks, sites sorted and binary-searched per chromosome."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    table = np.loadtxt(peaks, dtype=str, ndmin=2)
    counts = np.zeros(len(table), dtype=np.int64)
    by_chrom = {c: np.flatnonzero(table[:, 0] == c) for c in np.unique(table[:, 0])}
    if decoder == "isal":
        from isal import igzip

        handle = igzip.open(fragments, "rb")
    else:
        handle = pa.input_stream(str(fragments), compression="gzip")
    names = ["chrom", "start", "end", "barcode", "count"]
    read = pacsv.ReadOptions(column_names=names, block_size=8 << 20)
    convert = pacsv.ConvertOptions(include_columns=names[:3])
    with handle:
        for block in pacsv.open_csv(handle, read, pacsv.ParseOptions(delimiter="\t"), convert):
            chrom = block.column("chrom").dictionary_encode()
            codes = chrom.indices.to_numpy(zero_copy_only=False)
            start, end = block.column("start").to_numpy(), block.column("end").to_numpy()
            for code, name in enumerate(chrom.dictionary.to_pylist()):
                if name in by_chrom:
                    rows = codes == code
                    sites = np.sort(np.concatenate([start[rows], end[rows] - 1]), kind="stable")
                    found = by_chrom[name]
                    lo = np.searchsorted(sites, table[found, 1].astype(np.int64))
                    counts[found] += np.searchsorted(sites, table[found, 2].astype(np.int64)) - lo
    print(int(counts.sum()))


SNAPATAC2 = """
import sys, snapatac2 as snap
fragments, peaks, sizes = sys.argv[1:4]
chrom_sizes = dict(line.split() for line in open(sizes))
chrom_sizes = {k: int(v) for k, v in chrom_sizes.items()}
data = snap.pp.import_fragments(fragments, chrom_sizes, sorted_by_barcode=False,
                                min_num_fragments=0, n_jobs=1)
matrix = snap.pp.make_peak_matrix(
    data, peak_file=peaks, inplace=False, counting_strategy="insertion"
)
print(int(matrix.X.sum()))
"""


def bench_fragments(
    paths: dict, n_fragments: int, repeats: int, outdir: Path, venv: Path | None
) -> dict:
    frag, peaks = paths["fragments"], paths["peaks"]
    result = {"fragments": n_fragments, "file_mib": frag.stat().st_size / 2**20}
    me = [sys.executable, __file__]
    tools = {f"getdiff -T{t}": getdiff_count(frag, peaks, outdir / "f.tsv", t) for t in (1, 2)}
    import importlib.util

    for decoder in ("arrow", "isal"):
        if decoder == "isal" and importlib.util.find_spec("isal") is None:
            print("ISA-L prototype skipped (pip install isal, the 'fast' extra)", file=sys.stderr)
            continue
        tools[f"prototype ({decoder} gzip)"] = [*me, "--prototype", decoder, frag, peaks]
    python = ensure_peers_venv(venv, ["snapatac2"]) if venv is not None else None
    if python is None:
        print("snapATAC2 skipped (--no-snapatac2 or not installable)", file=sys.stderr)
    else:
        sizes = outdir / "chrom.sizes"
        sizes.write_text("".join(f"{c}\t250000000\n" for c in CHROMOSOMES))
        script = outdir / "snapatac2_count.py"
        script.write_text(SNAPATAC2)
        tools["snapATAC2"] = [python, script, frag, peaks, sizes]
    result["tools"] = paired(tools, repeats, "getdiff -T1")
    # Insertion sites in peaks of each tool: the prototypes and snapATAC2 print their sum.
    check = {"getdiff": int(read_counts(outdir / "f.tsv").sum())}
    check.update({n: int(v["stdout"]) for n, v in result["tools"].items() if v["stdout"].isdigit()})
    result["check"] = check
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peaks", type=int, default=100_000)
    parser.add_argument("--reads", type=int, default=10_000_000)
    parser.add_argument("--fragments", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="10k peaks x 200k reads/fragments")
    parser.add_argument("--outdir", type=Path, default=OUT, help="generated inputs (cached)")
    parser.add_argument("--peers-venv", type=Path, default=None, help="venv for snapATAC2")
    parser.add_argument("--no-snapatac2", action="store_true", help="skip snapATAC2")
    parser.add_argument("--prototype", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.prototype:
        prototype(Path(args.prototype[1]), Path(args.prototype[2]), args.prototype[0])
        return
    n_peaks, n_reads, n_fragments = (
        (10_000, 200_000, 200_000) if args.quick else (args.peaks, args.reads, args.fragments)
    )
    args.outdir.mkdir(parents=True, exist_ok=True)
    paths = make_inputs(n_peaks, n_fragments, outdir=args.outdir)
    venv = None if args.no_snapatac2 else args.peers_venv or args.outdir / "peers-venv"
    result = {"peaks": n_peaks, "repeats": args.repeats, "load_before": os.getloadavg()}
    result["bam"] = bench_bam(paths, n_reads, args.repeats, args.outdir)
    result["fragments"] = bench_fragments(paths, n_fragments, args.repeats, args.outdir, venv)
    result["load_after"] = os.getloadavg()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
