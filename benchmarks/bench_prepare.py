"""Prepare-stage speed: getdiff's motif aggregation vs the bedtools pipeline GET used.

Synthetic inputs (seeded, cached under ``benchmarks/out/prepare/``): ``--peaks`` non-overlapping
BED3 peaks (200-1000 bp, gaps of mean 3 kb) spread evenly over chr1-22 and chrX, and a BED6
motif scan ``chrom start end cluster score strand`` of ``--hits`` hits (6-20 bp, names drawn from
the 282 bundled clusters, scores in [0.5, 15) with 2 decimals): half placed overlapping a random
peak, half uniform over the chromosome's span (most of those miss every peak, as in a
genome-wide scan). Files are sorted by chromosome and start.

Measured, each in its own child process (wall time, peak RSS):

- ``bedtools``: ``bedtools intersect -a peaks.bed -b motifs.bed -wa -wb | sort -k1,1 -k2,2n -k7,7
  | bedtools groupby -g 1,2,3,7 -c 8 -o sum`` (``BEDTOOLS_PIPELINE``), run by bash. Peak memory
  is the largest single process of the pipeline (``wait4``'s ru_maxrss) and the sampled sum over
  the process tree.
- ``getdiff-aggregate``: ``load_peaks`` + ``aggregate_motif_scores`` (the same work).
- ``getdiff-prepare``: the command ``python -m getdiff prepare`` with a config and sheet naming
  the files (config validation, aggregation, normalisation, window layout, Parquet files); its
  in-process time is the one it logs.

The getdiff matrix is checked equal to the bedtools sums (every (peak, cluster) pair bedtools
reports, and no other non-zero entry), to bedtools' 5 printed significant digits.

    python benchmarks/bench_prepare.py --peaks 100000 --hits 1000000 --repeats 3
    python benchmarks/bench_prepare.py --quick

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
from scipy import sparse

OUT = Path(__file__).resolve().parent / "out" / "prepare"
CHROMOSOMES = [f"chr{i}" for i in range(1, 23)] + ["chrX"]
BEDTOOLS_PIPELINE = (
    "bedtools intersect -a {peaks} -b {motifs} -wa -wb "
    "| sort -k1,1 -k2,2n -k7,7 "
    "| bedtools groupby -g 1,2,3,7 -c 8 -o sum > {out}"
)


def _write_tsv(path: Path, columns: dict[str, np.ndarray]) -> None:
    """Headerless tab-separated text (pyarrow's writer: ~10x faster than pandas.to_csv)."""
    options = pa_csv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    tmp = path.with_suffix(".tmp")
    pa_csv.write_csv(pa.table(columns), tmp, options)
    tmp.replace(path)


def make_inputs(n_peaks: int, n_hits: int, seed: int = 0, outdir: Path = OUT) -> dict[str, Path]:
    """Write (or reuse) the synthetic peaks and scan; returns {"peaks": path, "motifs": path}."""
    from getdiff.genomics.motif_scores import load_cluster_names

    outdir.mkdir(parents=True, exist_ok=True)
    peaks_path = outdir / f"peaks_{n_peaks}_s{seed}.bed"
    motifs_path = outdir / f"motifs_{n_peaks}_{n_hits}_s{seed}.bed"
    if peaks_path.exists() and motifs_path.exists():
        return {"peaks": peaks_path, "motifs": motifs_path}
    rng = np.random.default_rng(seed)
    per_chrom = np.full(len(CHROMOSOMES), n_peaks // len(CHROMOSOMES))
    per_chrom[: n_peaks % len(CHROMOSOMES)] += 1
    chrom = np.repeat(np.arange(len(CHROMOSOMES)), per_chrom)
    width = rng.integers(200, 1000, n_peaks)
    gap = rng.exponential(3000, n_peaks).astype(np.int64) + 1
    step = width + gap
    first = np.r_[0, np.cumsum(per_chrom)[:-1]]
    cum = np.cumsum(step)
    offset = cum - np.repeat(cum[first] - step[first], per_chrom)  # restart per chromosome
    p_end = 10_000 + offset - gap
    p_start = p_end - width
    span = np.zeros(len(CHROMOSOMES), dtype=np.int64)
    np.maximum.at(span, chrom, p_end + 10_000)

    names = np.array(load_cluster_names())
    inside = n_hits // 2
    h_width = rng.integers(6, 21, n_hits)
    which = rng.integers(0, n_peaks, inside)
    lo = p_start[which] - h_width[:inside] + 1
    hi = p_end[which]
    h_start_in = lo + (rng.random(inside) * (hi - lo)).astype(np.int64)
    h_chrom_out = rng.integers(0, len(CHROMOSOMES), n_hits - inside)
    h_start_out = (rng.random(n_hits - inside) * span[h_chrom_out]).astype(np.int64)
    h_chrom = np.r_[chrom[which], h_chrom_out]
    h_start = np.maximum(np.r_[h_start_in, h_start_out], 0)
    order = np.lexsort((h_start, h_chrom))
    h_chrom, h_start, h_width = h_chrom[order], h_start[order], h_width[order]
    chrom_names = np.array(CHROMOSOMES)
    _write_tsv(peaks_path, {"c": chrom_names[chrom], "s": p_start, "e": p_end})
    _write_tsv(
        motifs_path,
        {
            "c": chrom_names[h_chrom],
            "s": h_start,
            "e": h_start + h_width,
            "n": names[rng.integers(0, len(names), n_hits)],
            "v": np.round(rng.uniform(0.5, 15.0, n_hits), 2),
            "t": np.where(rng.random(n_hits) < 0.5, "+", "-"),
        },
    )
    return {"peaks": peaks_path, "motifs": motifs_path}


# --- measuring child processes -----------------------------------------------------------------


def _tree_rss_kib(root: int) -> int:
    """Sum of VmRSS over ``root`` and its descendants (KiB), from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/statm") as handle:
                pages = int(handle.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = pages * (os.sysconf("SC_PAGE_SIZE") // 1024)
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def run_measured(command: list[str]) -> dict:
    """Run ``command`` under ``/usr/bin/time``: wall seconds, stdout, peak RSS (MiB).

    ``max_process_rss_mib`` is GNU time's %M: the largest resident set of any single process
    of the command (for a pipeline, of its largest member). ``tree_rss_sampled_mib`` is the sum
    over the process tree, sampled every 50 ms (catches pipeline members running together).
    """
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        start = time.perf_counter()
        proc = subprocess.Popen(
            ["/usr/bin/time", "-f", "%M", "-o", report.name, *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        peak_tree = 0
        done = threading.Event()

        def sample() -> None:
            nonlocal peak_tree
            while not done.is_set():
                peak_tree = max(peak_tree, _tree_rss_kib(proc.pid))
                done.wait(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        stdout, stderr = proc.communicate()
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
        if proc.returncode:
            raise RuntimeError(f"{command} failed with exit code {proc.returncode}: {stderr}")
        max_rss_kib = int(report.read().strip().splitlines()[-1])
    return {
        "seconds": seconds,
        "max_process_rss_mib": max_rss_kib / 1024,
        "tree_rss_sampled_mib": peak_tree / 1024,
        "stdout": stdout,
        "stderr": stderr,
    }


# --- the getdiff side (each in a child process) --------------------------------------------------


def _aggregate_worker(peaks: Path, motifs: Path, outdir: Path) -> dict:
    """``load_peaks`` + ``aggregate_motif_scores``, timed in-process; the matrix saved for the
    check against bedtools."""
    began = time.perf_counter()
    from getdiff.genomics.motif_scores import aggregate_motif_scores, load_cluster_names
    from getdiff.genomics.peaks import load_peaks

    table, _ = load_peaks(peaks, chromosomes=CHROMOSOMES)
    features, stats = aggregate_motif_scores(motifs, table, load_cluster_names())
    seconds = time.perf_counter() - began
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sparse.save_npz(outdir / "getdiff_features.npz", features, compressed=False)
    table[["chrom", "start", "end"]].to_csv(outdir / "getdiff_rows.tsv", sep="\t", index=False)
    return {"seconds": seconds, "peak_rss_mib": rss, "stats": stats}


def prepare_command(peaks: Path, motifs: Path, work: Path) -> list[str]:
    """``python -m getdiff prepare`` on the bench files, with a config and sheet written to
    ``work``: what a rule runs."""
    (work / "sheet.tsv").write_text(f"cell_type\tpeaks\nbench\t{peaks}\n", encoding="utf-8")
    config = {"cell_types": str(work / "sheet.tsv"), "motif_scan": str(motifs)}
    (work / "config.yaml").write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    return [sys.executable, "-m", "getdiff", "prepare", "--config", str(work / "config.yaml")] + [
        "--cell-type", "bench", "--outdir", str(work / "prepared"),
    ]  # fmt: skip


def _logged_seconds(stderr: str) -> dict:
    """The in-process time ``getdiff prepare`` logs ("bench: prepared in 0.81 s -> ...")."""
    found = re.findall(r"prepared in ([0-9.]+) s", stderr)
    if not found:
        raise RuntimeError(f"getdiff prepare logged no time: {stderr}")
    return {"worker_seconds": float(found[-1])}


def check_equal(bedtools_out: Path, outdir: Path) -> dict:
    """Compare bedtools' per (peak, cluster) sums with getdiff's matrix; raises if they differ."""
    from getdiff.genomics.motif_scores import load_cluster_names

    features = sparse.load_npz(outdir / "getdiff_features.npz").toarray()
    rows = pd.read_csv(outdir / "getdiff_rows.tsv", sep="\t")
    bed = pd.read_csv(
        bedtools_out, sep="\t", header=None, names=["chrom", "start", "end", "cluster", "sum"]
    )
    row_of = pd.Series(np.arange(len(rows)), index=pd.MultiIndex.from_frame(rows))
    r = row_of.reindex(pd.MultiIndex.from_frame(bed[["chrom", "start", "end"]])).to_numpy()
    c = pd.Series(np.arange(282), index=load_cluster_names()).reindex(bed["cluster"]).to_numpy()
    if np.isnan(r.astype(float)).any() or np.isnan(c.astype(float)).any():
        raise AssertionError("bedtools reported a peak or cluster getdiff does not have")
    ours = features[r.astype(np.int64), c.astype(np.int64)].astype(np.float64)
    theirs = bed["sum"].to_numpy(np.float64)
    rel = np.abs(ours - theirs) / np.maximum(np.abs(theirs), 1e-12)
    nonzero = int(np.count_nonzero(features))
    result = {
        "pairs_compared": len(bed),
        "getdiff_nonzero": nonzero,
        "max_relative_difference": float(rel.max()) if len(rel) else 0.0,
    }
    # bedtools groupby prints 5 significant digits; float32 sums add ~1e-7 relative.
    if nonzero != len(bed) or result["max_relative_difference"] > 1e-4:
        raise AssertionError(f"getdiff and bedtools disagree: {result}")
    result["equal"] = True
    return result


def compare(
    n_peaks: int, n_hits: int, repeats: int = 3, whole: bool = True, outdir: Path = OUT
) -> dict:
    """Time bedtools and getdiff (aggregation, whole prepare) ``repeats`` times, interleaved."""
    if shutil.which("bedtools") is None:
        raise SystemExit("bedtools not found: install it (Debian: apt-get install -y bedtools)")
    began = time.perf_counter()
    inputs = make_inputs(n_peaks, n_hits, outdir=outdir)
    generate_s = time.perf_counter() - began
    work = outdir / f"run_{n_peaks}_{n_hits}"
    work.mkdir(parents=True, exist_ok=True)
    bed_out = work / "bedtools.tsv"
    pipeline = BEDTOOLS_PIPELINE.format(peaks=inputs["peaks"], motifs=inputs["motifs"], out=bed_out)
    me = [sys.executable, str(Path(__file__).resolve()), "--worker"]
    args = ["--peaks-file", str(inputs["peaks"]), "--motifs-file", str(inputs["motifs"])]
    args += ["--worker-dir", str(work)]
    command = {
        "getdiff-aggregate": [*me, "aggregate", *args],
        "getdiff-prepare": prepare_command(inputs["peaks"], inputs["motifs"], work),
    }
    runs: dict[str, list[dict]] = {"bedtools": [], "getdiff-aggregate": []}
    if whole:
        runs["getdiff-prepare"] = []
    for _ in range(repeats):
        runs["bedtools"].append(run_measured(["bash", "-c", f"set -o pipefail; {pipeline}"]))
        for name in runs:
            if name == "bedtools":
                continue
            measured = run_measured(command[name])
            if name == "getdiff-prepare":
                measured.update(_logged_seconds(measured["stderr"]))
                measured["peak_rss_mib"] = measured["max_process_rss_mib"]
            else:
                measured.update(json.loads(measured["stdout"]))
            runs[name].append(measured)
    result: dict = {
        "peaks": n_peaks,
        "hits": n_hits,
        "repeats": repeats,
        "generate_inputs_s": generate_s,
        "scan_mib": inputs["motifs"].stat().st_size / 2**20,
        "bedtools_pipeline": BEDTOOLS_PIPELINE.format(
            peaks="peaks.bed", motifs="motifs.bed", out="out.tsv"
        ),
        "bedtools_version": subprocess.run(
            ["bedtools", "--version"], capture_output=True, text=True
        ).stdout.strip(),
        "check": check_equal(bed_out, work),
        "tools": {},
    }
    for name, rows in runs.items():
        entry = {
            "wall_s": statistics.median(r["seconds"] for r in rows),
            "wall_s_min": min(r["seconds"] for r in rows),
            "max_process_rss_mib": max(r["max_process_rss_mib"] for r in rows),
            "tree_rss_sampled_mib": max(r["tree_rss_sampled_mib"] for r in rows),
        }
        if name != "bedtools":
            entry["in_process_s"] = statistics.median(r["worker_seconds"] for r in rows)
            entry["in_process_peak_rss_mib"] = max(r["peak_rss_mib"] for r in rows)
        result["tools"][name] = entry
    bedtools = result["tools"]["bedtools"]["wall_s"]
    for name in runs:
        if name != "bedtools":
            result["tools"][name]["speedup_vs_bedtools"] = (
                bedtools / result["tools"][name]["wall_s"]
            )
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peaks", type=int, default=100_000)
    parser.add_argument("--hits", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-whole", action="store_true", help="skip the whole-prepare timing")
    parser.add_argument("--quick", action="store_true", help="2k peaks x 20k hits, one repeat")
    parser.add_argument("--worker", choices=["aggregate"], help=argparse.SUPPRESS)
    parser.add_argument("--peaks-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--motifs-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--outdir", type=Path, default=OUT, help="inputs and outputs (cached)")
    parser.add_argument("--worker-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        out = _aggregate_worker(args.peaks_file, args.motifs_file, args.worker_dir)
        out["worker_seconds"] = out.pop("seconds")
        print(json.dumps(out))
        return
    if args.quick:
        args.peaks, args.hits, args.repeats = 23 * 950, 20_000, 1
    result = compare(args.peaks, args.hits, args.repeats, not args.no_whole, args.outdir)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
