"""`getdiff scan` side by side with its peers, whole processes, paired alternating runs.

Inputs (seeded, cached under ``benchmarks/out/scan_peers/``): a synthetic genome (4 chromosomes,
41% GC, as ``bench_scan.py``) holding ``--peaks`` peaks (widths 150-3000 bp, mean ~500, gaps of
mean 500 bp), and ``--motifs`` matrices of JASPAR CORE vertebrates (pyjaspar's offline copy,
evenly spaced over the IDs), written once as a MEME file (probabilities, ``nsites`` = the
median column total) and once as one count file per matrix (probabilities x nsites).

Every tool scans the same bases: the peaks widened by the longest motif minus one base and merged
(book-ended or one base apart, as getdiff does), written as a "peaks FASTA" (one record per
region, ``chrom:start-end``), under the same settings:

- getdiff: ``python -m getdiff scan --threads T`` on the genome FASTA + peaks BED (its own
  input; it fetches the same regions itself), ``scan.pvalue`` / ``scan.pseudocount`` below;
- MOODS's CLI (``moods-dna.py`` of MOODS-python): ``-m *.pfm -s peaks.fa -p P --batch --bg b
  --lo-bg b --ps PS --log-base 2 --no-snps`` (both strands by default): the same background b
  (A, C, G, T of the scanned bases, both strands, as getdiff computes it), the same pseudocount
  spread by b, the same p-value thresholds (MOODS's ``threshold_from_p``), log2 scores. It has
  no threads option: one process only;
- memelite's FIMO (``memelite.fimo.fimo``, numba, threads by ``NUMBA_NUM_THREADS``): given the
  same pseudocounted frequencies f = (p n + ps b) / (n + ps) and ``eps=0``, both strands,
  ``threshold=P``. It has no background argument: it scores log2(f / 0.25) and computes
  p-values under a uniform background (score bins of 0.1), so its hit set differs by
  definition; the overlap is reported, not required to be equal.

Hit sets, keys (motif, chrom, start, strand) in genome coordinates: getdiff vs MOODS CLI must be
identical (the same engine; scores compared too), except for the hits that MOODS 1.9.4 itself
misses within its window's last bases of a sequence (counted separately). getdiff vs FIMO:
intersection, each one's extra hits and the Jaccard index.

Each repeat runs every tool once (order reversed every other repeat) after one untimed warm-up
run of each (page cache, numba's compilation cache). The table gives the median wall time and
the median over repeats of the per-repeat ratio peer / getdiff at the same thread count (> 1:
getdiff faster; MOODS CLI against getdiff at 1 process). Peers missing are installed with pip
(MOODS-python, memelite) unless ``--no-install``, and skipped with a message if that fails.

    python benchmarks/bench_scan_peers.py --peaks 20000 --motifs 300 --repeats 3   # ~6 min
    python benchmarks/bench_scan_peers.py --quick
    python benchmarks/bench_scan_peers.py --json   # only the JSON (for run_all.py)

Prints one JSON object (one line), then, unless ``--json``, a blank line and the Markdown
section for ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import yaml
from bench_scan import make_inputs

from getdiff.paths import SCAN_FILES

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "scan_peers"
CHROMOSOMES = 4
PVALUE = 1e-4  # scan.pvalue's default
PSEUDOCOUNT = 0.1  # scan.pseudocount's default
FASTA_LINE = 1 << 16

FIMO_CHILD = """
import sys, numpy as np
from memelite.fimo import fimo
npz, fasta, pvalue, out = sys.argv[1:]
data = np.load(npz)
motifs = {str(name): data[f"m{i}"] for i, name in enumerate(data["names"])}
hits = fimo(motifs, fasta, threshold=float(pvalue), eps=0.0, reverse_complement=True)
with open(out, "w") as handle:
    for table in hits:
        if len(table):
            table[["motif_name", "sequence_name", "start", "end", "strand", "score"]].to_csv(
                handle, sep="\\t", header=False, index=False
            )
"""


# --- inputs ------------------------------------------------------------------------------------


def make_genome(n_peaks: int, outdir: Path, seed: int = 0) -> dict[str, Path]:
    """bench_scan's genome FASTA, peaks BED and sheet, in FASTA_LINE-base lines."""
    return make_inputs(n_peaks, seed, outdir, line=FASTA_LINE)


def jaspar_subset(n_motifs: int) -> tuple[str, list[tuple[str, str, np.ndarray]]]:
    """``n_motifs`` JASPAR CORE vertebrate count matrices, evenly spaced over the sorted IDs."""
    from pyjaspar import jaspardb

    database = jaspardb()
    found = database.fetch_motifs(collection="CORE", tax_group=["vertebrates"])
    found = sorted(found, key=lambda m: m.matrix_id)
    picks = np.unique(np.linspace(0, len(found) - 1, min(n_motifs, len(found))).astype(int))
    chosen = []
    for index in picks:
        motif = found[index]
        counts = np.array([list(motif.counts[b]) for b in "ACGT"], dtype=np.float64)
        chosen.append((motif.matrix_id, motif.name, counts))
    return database.release, chosen


def write_motifs(chosen: list, outdir: Path) -> dict:
    """MEME file (getdiff), one count file per matrix (MOODS CLI); probabilities and sites."""
    meme = outdir / f"motifs_{len(chosen)}.meme"
    pfm_dir = outdir / f"pfm_{len(chosen)}"
    pfm_dir.mkdir(parents=True, exist_ok=True)
    lines = ["MEME version 4", "", "ALPHABET= ACGT", "", "strands: + -", ""]
    motifs = []
    for matrix_id, name, counts in chosen:
        totals = counts.sum(axis=0)
        probabilities = counts / totals
        sites = float(np.median(totals))
        lines += [f"MOTIF {matrix_id} {name.replace(' ', '_')}", ""]
        lines.append(
            f"letter-probability matrix: alength= 4 w= {counts.shape[1]} nsites= {sites!r}"
        )
        lines += [" ".join(repr(float(v)) for v in column) for column in probabilities.T]
        lines.append("")
        scaled = probabilities * sites
        (pfm_dir / f"{matrix_id}.pfm").write_text(
            "".join(" ".join(repr(float(v)) for v in row) + "\n" for row in scaled)
        )
        motifs.append({"id": matrix_id, "probabilities": probabilities, "sites": sites})
    meme.write_text("\n".join(lines) + "\n")
    pfms = [pfm_dir / f"{m['id']}.pfm" for m in motifs]
    return {"meme": meme, "pfms": pfms, "motifs": motifs}


def read_bed(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    table = np.loadtxt(path, dtype=str, ndmin=2)
    found = {}
    for chrom in dict.fromkeys(table[:, 0]):
        rows = table[:, 0] == chrom
        found[chrom] = (table[rows, 1].astype(np.int64), table[rows, 2].astype(np.int64))
    return found


def fasta_records(path: Path) -> dict[str, bytes]:
    records, name, parts = {}, None, []
    with open(path, "rb") as handle:
        for line in handle:
            if line.startswith(b">"):
                if name is not None:
                    records[name] = b"".join(parts)
                name, parts = line[1:].split()[0].decode(), []
            else:
                parts.append(line.strip())
    if name is not None:
        records[name] = b"".join(parts)
    return records


def scanned_regions(peaks: Path, genome: dict[str, bytes], widen: int) -> list[tuple]:
    """The peaks widened by ``widen`` each side, clipped to the chromosome and merged when they
    overlap, touch or are one base apart (getdiff's merge, slack 1); genome order."""
    regions = []
    for chrom, (starts, ends) in read_bed(peaks).items():
        order = np.argsort(starts, kind="stable")
        lo = np.maximum(starts[order] - widen, 0)
        hi = np.minimum(ends[order] + widen, len(genome[chrom]))
        current = [int(lo[0]), int(hi[0])]
        for s, e in zip(lo[1:].tolist(), hi[1:].tolist(), strict=True):
            if s - current[1] <= 1:
                current[1] = max(current[1], e)
            else:
                regions.append((chrom, *current))
                current = [s, e]
        regions.append((chrom, *current))
    return regions


def write_peaks_fasta(regions: list[tuple], genome: dict[str, bytes], path: Path) -> np.ndarray:
    """One record ``chrom:start-end`` per region (one line each); A, C, G, T counts."""
    counts = np.zeros(256, dtype=np.int64)
    with open(path, "wb") as out:
        for chrom, start, end in regions:
            sequence = genome[chrom][start:end]
            counts += np.bincount(np.frombuffer(sequence, dtype=np.uint8), minlength=256)
            out.write(f">{chrom}:{start}-{end}\n".encode() + sequence + b"\n")
    for suffix in (".fai", ".flat", ".gdx"):  # pyfaidx's index of an older file of this name
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    upper = counts[[ord(b) for b in "ACGT"]] + counts[[ord(b) for b in "acgt"]]
    return upper


def unreachable_matrices(motifs: list[dict], background: list[float], pvalue: float) -> set:
    """Matrices whose best word is more probable than ``pvalue`` under the background."""
    b = np.asarray(background)[:, None]
    found = set()
    for m in motifs:
        f = (m["probabilities"] * m["sites"] + PSEUDOCOUNT * b) / (m["sites"] + PSEUDOCOUNT)
        scores = np.log2(f / b)
        best = np.prod(((scores == scores.max(axis=0)) * b).sum(axis=0))
        if best > pvalue:
            found.add(m["id"])
    return found


def strand_symmetric_background(counts: np.ndarray) -> list[float]:
    at, cg = counts[0] + counts[3], counts[1] + counts[2]
    background = np.array([at, cg, cg, at], dtype=np.float64) / (2 * counts.sum())
    return np.maximum(background, 1e-6).tolist()


# --- tools -------------------------------------------------------------------------------------


def ensure_moods(install: bool) -> Path | None:
    """moods-dna.py beside this Python or on PATH; pip-installed (MOODS-python) if missing."""

    def find() -> Path | None:
        beside = Path(sys.executable).parent / "moods-dna.py"
        found = beside if beside.exists() else shutil.which("moods-dna.py")
        return Path(found) if found else None

    if find() is None and install:
        print("moods-dna.py missing: pip install MOODS-python", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "MOODS-python"], check=False)
    found = find()
    if found is None:
        print("MOODS CLI (moods-dna.py) not found: skipped", file=sys.stderr)
    return found


def python_version_of(module: str, distribution: str) -> str | None:
    probe = f"import {module}, importlib.metadata as m; print(m.version({distribution!r}))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def ensure_memelite(install: bool) -> str | None:
    """memelite's version, pip-installing it into this Python's environment if missing."""
    version = python_version_of("memelite", "memelite")
    if version is None and install:
        print("memelite missing: pip install memelite", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "memelite"], check=False)
        version = python_version_of("memelite", "memelite")
    if version is None:
        print("memelite (FIMO) not importable: skipped", file=sys.stderr)
    return version


def timed(command: list, env: dict | None = None) -> float:
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    seconds = time.perf_counter() - began
    if done.returncode:
        raise SystemExit(f"{command[:4]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds


def paired(tools: dict[str, tuple], repeats: int, base_of: dict[str, str]) -> dict[str, dict]:
    """One warm-up run of each tool, then ``repeats`` runs of all, the order reversed every
    other repeat; median s and the median per-repeat ratio to the tool's getdiff base."""
    for name, (command, env, prepare) in tools.items():
        prepare()
        timed(command, env)
        print(f"warm-up {name} done", file=sys.stderr, flush=True)
    times: dict[str, list[float]] = {name: [] for name in tools}
    for repeat in range(repeats):
        order = list(tools) if repeat % 2 == 0 else list(reversed(tools))
        for name in order:
            command, env, prepare = tools[name]
            prepare()
            times[name].append(round(timed(command, env), 3))
        print(f"repeat {repeat + 1}: {times}", file=sys.stderr, flush=True)
    result = {}
    for name, values in times.items():
        entry: dict = {"median_s": statistics.median(values), "runs_s": values}
        base = base_of.get(name)
        if base is not None and base != name:
            ratios = [peer / ours for peer, ours in zip(values, times[base], strict=True)]
            entry["ratio_vs_getdiff"] = round(statistics.median(ratios), 3)
            entry["vs"] = base
        result[name] = entry
    return result


# --- hit sets ----------------------------------------------------------------------------------


def getdiff_hits(path: Path) -> dict[tuple, float]:
    hits = {}
    with gzip.open(path, "rt") as handle:
        for line in handle:
            chrom, start, _end, name, score, strand = line.rstrip("\n").split("\t")
            hits[(name, chrom, int(start), strand)] = float(score)
    return hits


def region_of(record: str) -> tuple[str, int]:
    chrom, span = record.rsplit(":", 1)
    return chrom, int(span.split("-")[0])


def moods_hits(path: Path) -> dict[tuple, float]:
    hits, offsets = {}, {}
    with open(path) as handle:
        for line in handle:
            record, matrix, pos, strand, score = line.split(",")[:5]
            if record not in offsets:
                offsets[record] = region_of(record)
            chrom, start = offsets[record]
            hits[(matrix.removesuffix(".pfm"), chrom, start + int(pos), strand)] = float(score)
    return hits


def fimo_hits(path: Path) -> set[tuple]:
    hits, offsets = set(), {}
    with open(path) as handle:
        for line in handle:
            name, record, start, _end, strand = line.split("\t")[:5]
            if record not in offsets:
                offsets[record] = region_of(record)
            chrom, offset = offsets[record]
            hits.add((name, chrom, offset + int(start), strand))
    return hits


def near_region_end(keys: set, regions: list[tuple], widths: dict[str, int], bases: int) -> int:
    """How many of the hits end within ``bases`` of their region's end."""
    ends: dict[str, np.ndarray] = {}
    for chrom, _start, end in regions:
        ends.setdefault(chrom, []).append(end)
    ends = {c: np.asarray(v) for c, v in ends.items()}
    near = 0
    for name, chrom, start, _strand in keys:
        stop = start + widths[name]
        region_end = ends[chrom][np.searchsorted(ends[chrom], stop)]
        near += int(region_end - stop < bases)
    return near


def compare_moods(ours: dict, theirs: dict, regions: list, widths: dict, floored: set) -> dict:
    """Equal sets expected, but for getdiff's floor at 0: a matrix whose p-value threshold is
    negative keeps threshold 0 in getdiff, the negative one in MOODS CLI (more hits)."""
    shared = ours.keys() & theirs.keys()
    only_ours, only_theirs = ours.keys() - theirs.keys(), theirs.keys() - ours.keys()
    diffs = [abs(ours[k] - theirs[k]) for k in shared]
    rest = {k for k in only_theirs if k[0] not in floored}
    return {
        "floored_matrices": sorted(floored),
        "only_moods_cli_of_floored_matrices": len(only_theirs) - len(rest),
        "only_moods_cli_of_other_matrices": len(rest),
        "getdiff": len(ours),
        "moods_cli": len(theirs),
        "shared": len(shared),
        "only_getdiff": len(only_ours),
        "only_getdiff_ending_within_7_bp_of_a_sequence_end": near_region_end(
            only_ours, regions, widths, 7
        ),
        "only_moods_cli": len(only_theirs),
        "identical": not only_ours and not only_theirs,
        "max_score_difference": round(max(diffs, default=0.0), 6),
    }


def compare_fimo(ours: dict, theirs: set, unreachable: set) -> dict:
    """Overlap; also without the matrices too short to reach the p-value (getdiff keeps their
    best words, MOODS's rule; FIMO reports none)."""
    keys = set(ours)
    shared = len(keys & theirs)
    union = len(keys | theirs)
    keys_r = {k for k in keys if k[0] not in unreachable}
    theirs_r = {k for k in theirs if k[0] not in unreachable}
    shared_r = len(keys_r & theirs_r)
    per_ours, per_theirs = Counter(k[0] for k in keys_r), Counter(k[0] for k in theirs_r)
    smaller = sum(min(per_ours[n], per_theirs[n]) for n in per_ours.keys() | per_theirs.keys())
    return {
        "unreachable_matrices": sorted(unreachable),
        "getdiff_hits_of_unreachable": len(keys) - len(keys_r),
        "fimo_hits_of_unreachable": len(theirs) - len(theirs_r),
        "jaccard_reachable": round(shared_r / max(len(keys_r | theirs_r), 1), 4),
        "shared_of_smaller_reachable": round(shared_r / max(smaller, 1), 4),
        "getdiff": len(keys),
        "fimo": len(theirs),
        "shared": shared,
        "only_getdiff": len(keys) - shared,
        "only_fimo": len(theirs) - shared,
        "jaccard": round(shared / max(union, 1), 4),
    }


# --- the run -----------------------------------------------------------------------------------


def run(
    n_peaks: int, n_motifs: int, repeats: int, outdir: Path, install: bool, threads: list[int]
) -> dict:
    load_before = os.getloadavg()
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    began = time.perf_counter()
    inputs = make_genome(n_peaks, outdir)
    release, chosen = jaspar_subset(n_motifs)
    motif_files = write_motifs(chosen, outdir)
    widths = {m["id"]: m["probabilities"].shape[1] for m in motif_files["motifs"]}
    genome = fasta_records(inputs["fasta"])
    widen = max(widths.values()) - 1
    regions = scanned_regions(inputs["peaks"], genome, widen)
    peaks_fasta = outdir / f"peaks_{n_peaks}_w{widen}.fa"
    counts = write_peaks_fasta(regions, genome, peaks_fasta)
    background = strand_symmetric_background(counts)
    unreachable = unreachable_matrices(motif_files["motifs"], background, PVALUE)
    del genome

    config = {
        "cell_types": str(inputs["sheet"]),
        "genome_fasta": str(inputs["fasta"]),
        "motifs": str(motif_files["meme"]),
        "results": str(outdir / "results"),
        "prepare": {"chromosomes": [f"chr{k + 1}" for k in range(CHROMOSOMES)]},
        "scan": {"pvalue": PVALUE, "pseudocount": PSEUDOCOUNT, "flank": 0},
    }
    config_path = outdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))

    tools: dict[str, tuple] = {}
    base_of: dict[str, str] = {}

    def clear(path: Path):
        return lambda: shutil.rmtree(path, ignore_errors=True)

    for t in threads:
        scan_dir = outdir / f"getdiff_T{t}"
        command = [sys.executable, "-m", "getdiff", "scan", "--config", str(config_path)]
        command += ["--outdir", str(scan_dir), "--threads", str(t)]
        tools[f"getdiff -T{t}"] = (command, None, clear(scan_dir))
        base_of[f"getdiff -T{t}"] = f"getdiff -T{t}"

    moods = ensure_moods(install)
    moods_out = outdir / "moods_cli.csv"
    if moods is not None:
        command = [sys.executable, str(moods), "-m", *map(str, motif_files["pfms"])]
        command += ["-s", str(peaks_fasta), "-p", repr(PVALUE), "--batch"]
        command += ["--bg", *map(repr, background), "--lo-bg", *map(repr, background)]
        command += ["--ps", repr(PSEUDOCOUNT), "--log-base", "2", "--no-snps"]
        command += ["-o", str(moods_out)]
        tools["MOODS CLI (1 process)"] = (command, None, lambda: None)
        base_of["MOODS CLI (1 process)"] = f"getdiff -T{min(threads)}"

    memelite = ensure_memelite(install)
    fimo_out = {t: outdir / f"fimo_T{t}.tsv" for t in threads}
    if memelite is not None:
        b = np.asarray(background)[:, None]
        frequencies = {
            f"m{i}": (m["probabilities"] * m["sites"] + PSEUDOCOUNT * b)
            / (m["sites"] + PSEUDOCOUNT)
            for i, m in enumerate(motif_files["motifs"])
        }
        npz = outdir / f"fimo_motifs_{len(chosen)}.npz"
        np.savez(npz, names=np.array([m["id"] for m in motif_files["motifs"]]), **frequencies)
        child = outdir / "fimo_child.py"
        child.write_text(FIMO_CHILD)
        for t in threads:
            env = {**os.environ, "NUMBA_NUM_THREADS": str(t)}
            command = [sys.executable, str(child), str(npz), str(peaks_fasta), repr(PVALUE)]
            tools[f"FIMO (memelite) -T{t}"] = ([*command, str(fimo_out[t])], env, lambda: None)
            base_of[f"FIMO (memelite) -T{t}"] = f"getdiff -T{t}"

    timings = paired(tools, repeats, base_of)

    ours = getdiff_hits(outdir / f"getdiff_T{min(threads)}" / SCAN_FILES["scan"])
    table = np.genfromtxt(
        outdir / f"getdiff_T{min(threads)}" / SCAN_FILES["motifs"],
        delimiter="\t",
        names=True,
        dtype=None,
        encoding="utf-8",
    )
    thresholds = table["threshold"]
    floored = {str(n) for n, t in zip(table["name"], thresholds, strict=True) if t <= 0}
    check: dict = {}
    if len(threads) > 1:
        other = getdiff_hits(outdir / f"getdiff_T{max(threads)}" / SCAN_FILES["scan"])
        check["getdiff_threads_identical"] = other == ours
    if moods is not None:
        check["moods_cli"] = compare_moods(ours, moods_hits(moods_out), regions, widths, floored)
    if memelite is not None:
        check["fimo"] = compare_fimo(ours, fimo_hits(fimo_out[min(threads)]), unreachable)
        if len(threads) > 1:
            same = fimo_hits(fimo_out[max(threads)]) == fimo_hits(fimo_out[min(threads)])
            check["fimo_threads_identical"] = same
    bases = sum(end - start for _, start, end in regions)
    moods_version = python_version_of("MOODS", "MOODS-python")
    return {
        "peaks": n_peaks,
        "motifs": len(chosen),
        "motif_source": f"{release} CORE vertebrates (pyjaspar), every "
        f"{1019 / len(chosen):.1f}th ID",
        "regions": len(regions),
        "megabases": round(bases / 1e6, 3),
        "widen": widen,
        "background": [round(x, 4) for x in background],
        "pvalue": PVALUE,
        "pseudocount": PSEUDOCOUNT,
        "thresholds_at_floor_0": int((thresholds <= 0).sum()),
        "repeats": repeats,
        "threads": threads,
        "versions": {"MOODS-python": moods_version, "memelite": memelite},
        "tools": timings,
        "check": check,
        "date": date,
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "cores": os.cpu_count(),
        "seconds": round(time.perf_counter() - began, 1),
        "command": f"python benchmarks/bench_scan_peers.py --peaks {n_peaks} --motifs "
        f"{n_motifs} --repeats {repeats}",
    }


# --- Markdown ----------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def target_lines(run: dict) -> list[str]:
    """Issue 29: getdiff at least as fast as the fastest peer at equal threads."""
    lines = []
    for t in run["threads"]:
        peers = {
            name: v
            for name, v in run["tools"].items()
            if v.get("vs") == f"getdiff -T{t}" and not name.startswith("getdiff")
        }
        if not peers:
            continue
        name = min(peers, key=lambda n: peers[n]["median_s"])
        ours = run["tools"][f"getdiff -T{t}"]["median_s"]
        ratio, theirs = peers[name]["ratio_vs_getdiff"], peers[name]["median_s"]
        lines.append(
            f"- Scanning at {t} thread(s) >= the fastest peer ({name}, {theirs:.2f} s)"
            f" at {run['peaks']:,} peaks x {run['motifs']} matrices (issue 29): "
            f"{'met' if ratio >= 1 else 'not met'} — getdiff {ours:.2f} s, ratio {ratio:.2f}x "
            "(paired median)"
        )
    return lines


def markdown(runs: list[dict]) -> list[str]:
    """Section 11 of RESULTS.md."""
    parts = ["## 11. Scanning vs its peers (MOODS CLI, FIMO; issue 29)", ""]
    parts.append(
        "Whole processes on the same bases (the peaks widened by the longest motif minus 1 bp and "
        "merged, as getdiff scans them; getdiff reads the genome FASTA + peaks BED, the peers a "
        "FASTA of those regions), p < 1e-4, pseudocount 0.1, both strands. MOODS CLI "
        "(`moods-dna.py -p 1e-4 --batch --bg b --lo-bg b --ps 0.1 --log-base 2 --no-snps`) gets "
        "getdiff's background b and count matrices (probabilities x nsites), so its log-odds "
        "and thresholds are getdiff's; it has no threads option (one process). FIMO is "
        "memelite's (numba; threads by `NUMBA_NUM_THREADS`), given getdiff's pseudocounted "
        "frequencies and `eps=0`; it has no background argument (scores log2(f / 0.25), "
        "p-values under a uniform background in 0.1-bit bins), so its hits differ by "
        "definition. Each repeat runs every tool once, the order reversed every other repeat, "
        "after one untimed warm-up of each. `s` = median wall time; `ratio` = median over "
        "repeats of peer / getdiff at the same thread count (> 1: getdiff faster; MOODS CLI vs "
        "getdiff -T1). The peers' times exclude writing their input FASTA and computing b "
        "(getdiff's include fetching the regions and counting b)."
    )
    for run in runs:
        check = run["check"]
        load = ", ".join(f"{x:.2f}" for x in run["load_before"])
        after = ", ".join(f"{x:.2f}" for x in run["load_after"])
        parts += [
            "",
            f"Run {run['date']} (start), {run['cores']} cores, load average (1, 5, 15 min) before "
            f"{load}, after {after}. MOODS-python {run['versions']['MOODS-python']}, "
            f"memelite {run['versions']['memelite']}.",
            "",
            *target_lines(run),
            "",
            f"**{run['peaks']:,} peaks ({run['regions']:,} merged regions, "
            f"{run['megabases']:.2f} Mb) x {run['motifs']} matrices** ({run['motif_source']}; "
            f"widened by {run['widen']} bp; background A/T {run['background'][0]:.3f}, C/G "
            f"{run['background'][1]:.3f}; median of {run['repeats']}).",
            "",
        ]
        rows = [
            [
                name,
                f"{v['median_s']:.2f}",
                f"{v['ratio_vs_getdiff']:.2f}x" if "ratio_vs_getdiff" in v else "1.00x",
            ]
            for name, v in run["tools"].items()
        ]
        parts += _table(["tool", "s", "ratio"], rows)
        parts.append("")
        hits = []
        if "moods_cli" in check:
            m = check["moods_cli"]
            hits.append(
                f"- getdiff vs MOODS CLI, keys (motif, chrom, start, strand): getdiff "
                f"{m['getdiff']:,}, MOODS CLI {m['moods_cli']:,}, shared {m['shared']:,}; only "
                f"getdiff {m['only_getdiff']:,} (of which "
                f"{m['only_getdiff_ending_within_7_bp_of_a_sequence_end']:,} end within 7 bp of "
                f"a sequence's end: the hits MOODS 1.9.4 misses in its window's last bases, which "
                f"getdiff pads against), only MOODS CLI {m['only_moods_cli']:,} (of which "
                f"{m['only_moods_cli_of_floored_matrices']:,} are hits of the "
                f"{len(m['floored_matrices'])} matrices whose p-value threshold is negative: "
                "getdiff floors it at 0, MOODS CLI does not); max score difference on shared "
                f"hits {m['max_score_difference']:.1e} (getdiff writes 4 decimals)."
            )
        if "fimo" in check:
            f = check["fimo"]
            hits.append(
                f"- getdiff vs FIMO (memelite): getdiff {f['getdiff']:,}, FIMO {f['fimo']:,}, "
                f"shared {f['shared']:,}, only getdiff {f['only_getdiff']:,}, only FIMO "
                f"{f['only_fimo']:,}; Jaccard {f['jaccard']:.3f}. getdiff's hits include "
                f"{f['getdiff_hits_of_unreachable']:,} of the {len(f['unreachable_matrices'])} "
                f"matrices too short to reach p < {run['pvalue']:g} under b (getdiff and MOODS "
                "keep their best-scoring words; FIMO, under its uniform background, reports "
                f"{f['fimo_hits_of_unreachable']:,} for them); without these matrices: Jaccard "
                f"{f['jaccard_reachable']:.3f}, and "
                f"{f['shared_of_smaller_reachable']:.1%} of the smaller set (summed over the "
                "matrices) is in the larger: per matrix the sets are nearly nested, differing "
                "mainly in how many windows pass (FIMO's uniform background and 0.1-bit bins "
                "vs b), not in which windows score highest."
            )
        if "getdiff_threads_identical" in check:
            hits.append(
                f"- Same hits at 1 and 2 threads: getdiff {check['getdiff_threads_identical']}"
                + (
                    f", FIMO {check['fimo_threads_identical']}"
                    if "fimo_threads_identical" in check
                    else ""
                )
                + f"; getdiff thresholds floored at 0: {run['thresholds_at_floor_0']}."
            )
        parts += ["Hit sets:", "", *hits, "", f"`{run['command']}`"]
    return parts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peaks", type=int, default=20_000)
    parser.add_argument("--motifs", type=int, default=300, help="JASPAR matrices (of 1,019)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--outdir", type=Path, default=OUT)
    parser.add_argument("--no-install", action="store_true", help="skip missing peers")
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    parser.add_argument("--quick", action="store_true", help="500 peaks x 20 matrices, 1 repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.peaks, args.motifs, args.repeats = 500, 20, 1
    result = run(
        args.peaks, args.motifs, args.repeats, args.outdir, not args.no_install, args.threads
    )
    if args.quick:
        result["command"] = "python benchmarks/bench_scan_peers.py --quick"
    print(json.dumps(result))
    if not args.json:
        print("\n" + "\n".join(markdown([result])))


if __name__ == "__main__":
    main()
