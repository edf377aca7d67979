"""Run every benchmark and write ``benchmarks/RESULTS.md`` (the one documented command).

    python benchmarks/run_all.py            # or: make benchmark   (about 8-10 min on 2 cores)
    python benchmarks/run_all.py --quick    # seconds; writes benchmarks/out/RESULTS.quick.md

Each benchmark runs in its own child process (``bench_train_step.py``, ``bench_prepare.py``,
``bench_impute.py``, ``bench_fragments.py``, ``bench_train_knobs.py``, ``bench_scan.py``,
``bench_tracks.py``; their docstrings say what
they measure) and prints JSON; this script collects it into Markdown tables with the machine
(lscpu model, cores), date, command, torch version and the load average before and after (other
processes skew CPU timings: run it on a quiet machine). Raw JSON goes to
``benchmarks/out/results.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"

# (preset, batch) of the training-step comparison; (preset, batch, steps) of the memory runs.
TRAIN_CASES = [("tiny", 8, 5), ("mid", 2, 4)]
MEMORY_CASES = [("tiny", 8, "getdiff"), ("mid", 2, "getdiff"), ("mid", 2, "getdiff-bf16")]
MEMORY_CASES += [("spec", 1, "getdiff"), ("spec", 1, "getdiff-lora")]
PREPARE_CASES = [(100_000, 1_000_000, 3), (100_000, 10_000_000, 1)]
# (preset, method, steps, windows, bf16)
IMPUTE_CASES = [
    ("tiny", "one-step", 1, 16, False),
    ("tiny", "ddim", 50, 4, False),
    ("mid", "one-step", 1, 4, False),
    ("mid", "one-step", 1, 4, True),
    ("mid", "ddim", 50, 1, False),
]


def machine() -> dict:
    """CPU model and core count (lscpu), Python / torch / numpy versions, date, load."""
    import numpy
    import torch

    model = platform.processor() or platform.machine()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    flags = ""
    if Path("/proc/cpuinfo").exists():
        text = Path("/proc/cpuinfo").read_text()
        flags = " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in text)
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "cpu_flags": flags,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_before": os.getloadavg(),
    }


def run_json(script: str, *args: object) -> dict:
    """Run ``benchmarks/<script> args`` with this Python; its stdout parsed as JSON."""
    command = [sys.executable, str(HERE / script), *map(str, args)]
    print("$", shlex.join(["python", f"benchmarks/{script}", *map(str, args)]), flush=True)
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"{script} failed (exit code {done.returncode})")
    result = json.loads(done.stdout)
    shown = [os.path.relpath(a) if isinstance(a, Path) else str(a) for a in args]  # no home paths
    result["command"] = shlex.join(["python", f"benchmarks/{script}", *shown])
    print(f"  done in {time.perf_counter() - began:.1f} s", flush=True)
    return result


def collect(quick: bool, threads: int, workdir: Path) -> dict:
    results: dict = {
        "machine": machine(),
        "train": [],
        "memory": [],
        "prepare": [],
        "impute": [],
        "fragments": [],
        "knobs": [],
        "scan": [],
        "tracks": [],
        "count": [],
        "scan_peers": [],
    }
    common = ["--threads", threads]
    prepare_dir = ["--outdir", workdir / "prepare"]
    have_bedtools = shutil.which("bedtools") is not None
    if not have_bedtools:
        print("bedtools not found: the prepare benchmark is skipped", flush=True)
    if quick:
        jobs = [
            ("train", "bench_train_step.py", ["--quick", *common]),
            ("memory", "bench_train_step.py", ["--quick", "--memory", *common]),
            ("prepare", "bench_prepare.py", ["--quick", *prepare_dir]),
            ("impute", "bench_impute.py", ["--quick", *common]),
            ("fragments", "bench_fragments.py", ["--quick", "--outdir", workdir / "fragments"]),
            ("knobs", "bench_train_knobs.py", ["--quick", *common]),
            ("scan", "bench_scan.py", ["--quick", "--outdir", workdir / "scan"]),
            ("tracks", "bench_tracks.py", ["--quick"]),
            (
                "count",
                "bench_count.py",
                ["--quick", "--repeats", 1, "--no-snapatac2", "--outdir", workdir / "count"],
            ),
        ]
    else:
        jobs = [
            ("train", "bench_train_step.py", ["--preset", p, "--batch", b, "--repeats", r, *common])
            for p, b, r in TRAIN_CASES
        ]
        jobs += [
            (
                "memory",
                "bench_train_step.py",
                ["--memory", "--preset", p, "--batch", b, "--steps", 2, "--variants", v, *common],
            )
            for p, b, v in MEMORY_CASES
        ]
        jobs += [
            (
                "prepare",
                "bench_prepare.py",
                ["--peaks", p, "--hits", h, "--repeats", r, *prepare_dir],
            )
            for p, h, r in PREPARE_CASES
        ]
        jobs += [
            (
                "impute",
                "bench_impute.py",
                ["--preset", p, "--method", m, "--steps", s, "--windows", w]
                + ["--batch-size", min(8, w), *(["--bf16"] if bf16 else []), *common],
            )
            for p, m, s, w, bf16 in IMPUTE_CASES
        ]
        sizes = ["--peaks", 100_000, "--fragments", 10**7, "--outdir", workdir / "fragments"]
        jobs += [("fragments", "bench_fragments.py", sizes)]
        knobs = ["--preset", "mid", "--batch", 4, "--repeats", 5, *common]
        jobs += [("knobs", "bench_train_knobs.py", knobs)]
        scan = ["--peaks", 100_000, "--threads", threads, "--outdir", workdir / "scan"]
        jobs += [("scan", "bench_scan.py", scan)]
        jobs += [("tracks", "bench_tracks.py", ["--regions", 100_000, "--repeats", 5])]
        # The fragments benchmark's inputs (same seed) are reused; the 10M-read BAM is cached.
        count = ["--peaks", 100_000, "--reads", 10**7, "--fragments", 10**7]
        jobs += [("count", "bench_count.py", [*count, "--outdir", workdir / "fragments"])]
        # Not in --quick: about 5 min on 2 cores (issue 29, section 11).
        peers = ["--peaks", 20_000, "--motifs", 300, "--repeats", 3, "--json"]
        peers += ["--outdir", workdir / "scan_peers"]
        jobs += [("scan_peers", "bench_scan_peers.py", peers)]
    for section, script, args in jobs:
        if section == "prepare" and not have_bedtools:
            continue
        results[section].append(run_json(script, *args))
    results["machine"]["load_after"] = os.getloadavg()
    return results


# --- Markdown ----------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[object]]) -> str:
    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def targets(results: dict) -> list[str]:
    """The issue's targets, each with the measured number and met / not met."""
    lines = []
    for run in results["train"]:
        if run["preset"] != "mid":
            continue
        v = run["variants"]
        fp32 = v.get("getdiff", {}).get("speedup_vs_reference")
        best = max(
            (name for name in v if "speedup_vs_reference" in v[name]),
            key=lambda name: v[name]["speedup_vs_reference"],
        )
        ratio, paired = v[best]["speedup_vs_reference"], v[best]["speedup_paired_median"]
        lines.append(
            f"- Training step >= 2x the reference at the mid preset: "
            f"{'met' if ratio >= 2 else 'not met'} with {best}: {ratio:.2f}x (paired {paired:.2f}x)"
            + (f"; plain fp32 getdiff: {fp32:.2f}x" if fp32 is not None else "")
        )
    for run in results["prepare"]:
        ratio = run["tools"]["getdiff-aggregate"]["speedup_vs_bedtools"]
        whole = run["tools"].get("getdiff-prepare", {}).get("speedup_vs_bedtools")
        lines.append(
            f"- Motif aggregation >= 5x bedtools at {run['peaks']:,} peaks x {run['hits']:,} "
            f"hits: {'met' if ratio >= 5 else 'not met'} — {ratio:.2f}x wall time"
            + (f" (whole prepare stage: {whole:.2f}x)" if whole is not None else "")
        )
        stage = run["tools"].get("getdiff-prepare")
        if stage is not None and run["hits"] == 1_000_000:
            wall, rss = stage["wall_s"], stage["max_process_rss_mib"]
            met = wall <= 1.3 and rss <= 450
            lines.append(
                f"- Whole prepare at {run['peaks']:,} peaks x {run['hits']:,} hits <= 1.3 s wall "
                f"and <= 450 MiB (issue 13): {'met' if met else 'not met'} — {wall:.2f} s, "
                f"{rss:,.0f} MiB (median of {run['repeats']})"
            )
        if stage is not None and run["hits"] == 10_000_000:
            wall = stage["wall_s"]
            lines.append(
                f"- Whole prepare at {run['peaks']:,} peaks x {run['hits']:,} hits no slower than "
                f"5.88 s (issue 13): {'met' if wall <= 5.88 else 'not met'} — {wall:.2f} s, "
                f"{stage['max_process_rss_mib']:,.0f} MiB"
            )
    return lines


def render(results: dict, command: str, seconds: float) -> str:
    m = results["machine"]
    load = ", ".join(f"{x:.2f}" for x in m["load_before"])
    load_after = ", ".join(f"{x:.2f}" for x in m["load_after"])
    parts = [
        "# Benchmark results",
        "",
        f"- Command: `{command}` ({seconds / 60:.1f} min in all)",
        f"- Date: {m['date']}",
        f"- Machine: {m['cpu']}, {m['cores']} cores ({m['cpu_flags']}); "
        f"Python {m['python']}, torch {m['torch']}, numpy {m['numpy']}",
        f"- Load average (1, 5, 15 min) before: {load}; after: {load_after}. "
        "CPU timings are only comparable on a quiet machine; ratios are measured within one run.",
        "",
        "Per-benchmark commands are listed under each table; the raw numbers are in "
        "`benchmarks/out/results.json`. What each benchmark measures: `benchmarks/README.md`.",
        "",
        "## Targets (issues 7 and 13)",
        "",
        *targets(results),
    ]

    parts += ["", "## 1. Training step: getdiff vs the reference implementation", ""]
    peak = results["train"][0].get("peak_gflops", {})
    parts.append(
        f"Measured matmul peak (2048^3 `torch.mm`, {results['train'][0]['threads']} thread(s)): "
        f"fp32 {peak.get('fp32', float('nan')):.0f} GFLOP/s, "
        f"bf16 {peak.get('bf16', float('nan')):.0f} GFLOP/s. MFU = model FLOPs per step "
        "(6 x matmul MACs-equivalent, attention included) / step time / the peak of the "
        "variant's precision (bf16 for bf16 variants). Speed-up = "
        "median reference step / median variant step; paired = median over repeats of the "
        "per-repeat ratio. A precision whose matmul peak is under a tenth of fp32's has no fast "
        "kernels on this CPU (e.g. bf16 without AVX512-BF16/AMX): its MFU is not shown."
    )
    slow = {p for p, v in peak.items() if v < 0.1 * peak.get("fp32", 0)}
    for run in results["train"]:
        rows = []
        for name, v in run["variants"].items():
            rows.append(
                [
                    name,
                    v["step_s"],
                    v["forward_s"],
                    v["backward_s"],
                    v["optim_s"],
                    v["tokens_per_s"],
                    v["gflops"],
                    (
                        f"n/a (no fast {v['mfu_peak']} here)"
                        if v.get("mfu_peak") in slow
                        else f"{100 * v['mfu']:.0f}% of {v['mfu_peak']}"
                    )
                    if "mfu" in v
                    else "",
                    f"{v['speedup_vs_reference']:.2f}x" if "speedup_vs_reference" in v else "1",
                    f"{v['speedup_paired_median']:.2f}x" if "speedup_paired_median" in v else "",
                ]
            )
        parts += [
            "",
            f"**{run['preset']}** (d={run['embed_dim']}, {run['num_layers']} layers, "
            f"{run['regions']} regions, batch {run['batch']}, {run['step_gflop']:.1f} GFLOP/step, "
            f"median of {run['repeats']} after 1 warm-up)",
            "",
            _table(
                [
                    "variant",
                    "step s",
                    "fwd s",
                    "bwd+clip s",
                    "AdamW s",
                    "tokens/s",
                    "GFLOP/s",
                    "MFU (peak)",
                    "speed-up",
                    "paired",
                ],
                rows,
            ),
            "",
            f"`{run['command']}`",
        ]

    parts += ["", "## 2. Prepare stage vs bedtools", ""]
    for run in results["prepare"]:
        rows = []
        for name, v in run["tools"].items():
            rows.append(
                [
                    name,
                    v["wall_s"],
                    v.get("in_process_s", ""),
                    v["max_process_rss_mib"],
                    v["tree_rss_sampled_mib"],
                    f"{v['speedup_vs_bedtools']:.2f}x" if "speedup_vs_bedtools" in v else "1",
                ]
            )
        check = run["check"]
        parts += [
            f"**{run['peaks']:,} peaks x {run['hits']:,} motif hits** ({run['scan_mib']:.0f} MiB "
            f"scan; median of {run['repeats']}; {run['bedtools_version']}). Output check: "
            f"{check['pairs_compared']:,} (peak, cluster) sums equal "
            f"(max relative difference {check['max_relative_difference']:.1e}; no other "
            "non-zero entry in getdiff's matrix).",
            "",
            _table(
                [
                    "tool",
                    "wall s",
                    "in-process s",
                    "max process RSS MiB",
                    "tree RSS MiB (sampled)",
                    "speed-up",
                ],
                rows,
            ),
            "",
            f"`{run['command']}`",
            "",
        ]
    if results["prepare"]:
        parts.append(f"bedtools pipeline: `{results['prepare'][0]['bedtools_pipeline']}`")
    else:
        parts.append("Not run: bedtools was not found (Debian: `apt-get install -y bedtools`).")

    parts += ["", "## 3. Imputation (`impute_windows`, two complementary masks per window)", ""]
    rows = [
        [
            r["preset"],
            r["method"],
            r["steps"],
            "bf16" if r["bf16_autocast"] else "fp32",
            r["windows"],
            r["batch_size"],
            r["forwards_per_window"],
            r["windows_per_s"],
            r["seconds_per_window"],
        ]
        for r in results["impute"]
    ]
    parts += [
        _table(
            [
                "preset",
                "sampler",
                "steps",
                "precision",
                "windows",
                "batch",
                "forwards/window",
                "windows/s",
                "s/window",
            ],
            rows,
        ),
        "",
        *[f"`{r['command']}`  " for r in results["impute"]],
        "",
    ]
    parts += ["", "## 4. Counting fragments (`getdiff.genomics.fragments.count_insertions`)", ""]
    rows = [
        [
            f"{r['peaks']:,} x {r['fragments']:,} ({r['file_mib']:.0f} MiB bgzip)",
            label,
            f"{r[key]['seconds']:.2f}",
            f"{r[key]['fragments_per_s'] / 1e6:.2f}",
            f"{r[key]['peak_rss_mib']:.0f}",
        ]
        for r in results.get("fragments", [])
        for key, label in (("all_barcodes", "all barcodes"), ("barcode_list_500", "500 barcodes"))
    ]
    parts += [
        "Insertion sites per peak from a bgzipped fragments file, in a child process: wall time "
        "of the counting (reading and decompressing included), fragments per second, and the "
        "process's peak RSS (the peaks included). Target (issue 15): 5 million fragments/s.",
        "",
        _table(["peaks x fragments", "barcodes", "s", "M fragments/s", "peak RSS MiB"], rows),
        "",
        *[f"`{r['command']}`  " for r in results.get("fragments", [])],
    ]
    rows = [
        [
            f"{r['peaks']:,} x {b['reads']:,} ({b['file_mib']:.0f} MiB)",
            f"{b['seconds']:.2f}",
            f"{b['reads_per_s'] / 1e6:.2f}",
            f"{b['peak_rss_mib']:.0f}",
        ]
        for r in results.get("fragments", [])
        if (b := r.get("bam"))
    ]
    parts += [
        "",
        "BAM (`getdiff.genomics.bam.count_read_insertions`, same command): paired-end "
        "2 x 50 bp reads, coordinate-sorted and indexed, default read filters; "
        "wall time (reading included), reads per second and peak RSS of a child process.",
        "",
        _table(["peaks x reads", "s", "M reads/s", "peak RSS MiB"], rows),
    ]

    parts += ["", "## 5. Peak memory of training (CPU RSS)", ""]
    rows = [
        [
            r["preset"],
            r["variant"],
            r["batch"],
            r["regions"],
            r["steps"],
            r["rss_after_import_mib"],
            r["peak_rss_mib"],
        ]
        for r in results["memory"]
    ]
    parts += [
        "Peak resident set size of a fresh process (ru_maxrss) that builds the model and runs "
        "training steps (AdamW state included); `after import` is before the model exists.",
        "",
        _table(
            ["preset", "variant", "batch", "regions", "steps", "after import MiB", "peak MiB"], rows
        ),
        "",
        *[f"`{r['command']}`  " for r in results["memory"]],
    ]

    parts += [
        "",
        "## 6. Training knobs (`grad_accumulation`, `activation_checkpointing`, `compile`)",
        "",
        "`getdiff.training.train.train_step` itself (default config: LoRA on, dropout 0.1) "
        "per variant; steps of all variants interleaved in one process. Step = median after "
        "the warm-up; `first step` includes torch.compile's compilation; `vs plain` = "
        "median over repeats of the variant's step / plain's step of the same repeat "
        "(> 1: slower). Peak RSS: ru_maxrss of a fresh process per variant. No GPU was lent "
        "for these runs: CUDA numbers (bf16, fused AdamW, DDP over GPUs) are not measured.",
    ]
    for run in results.get("knobs", []):
        rows = [
            [
                name,
                v["step_s"],
                v["first_step_s"],
                f"{v['vs_plain']:.2f}x" if "vs_plain" in v else "",
                f"{v['peak_rss_mib']:.0f}",
            ]
            for name, v in run["variants"].items()
        ]
        load = ", ".join(f"{x:.2f}" for x in run.get("load_before", []))
        parts += [
            "",
            f"**{run['preset']}** ({run['regions']} regions, batch {run['batch']}, "
            f"{run['threads']} thread(s), median of {run['repeats']}; run {run.get('date', '')}, "
            f"load average before: {load})",
            "",
            _table(["variant", "step s", "first step s", "vs plain", "peak RSS MiB"], rows),
            "",
            f"`{run['command']}`",
        ]

    parts += ["", "## 7. Motif scanning (`getdiff scan`)", ""]
    rows = [
        [
            f"{r['peaks']:,} peaks ({r['megabases']:.1f} Mb) x {r['n_motifs']:,} ({r['motifs']})",
            r["threads"],
            f"{r['seconds']:.1f}",
            f"{r['mb_per_s']:.3f}",
            f"{r['hits']:,}",
            f"{r['peak_rss_mib']:.0f}",
            f"{r['genome_wide_hours']:.1f}",
        ]
        for r in results.get("scan", [])
    ]
    parts += [
        "`getdiff scan` as a child process on a synthetic genome (41% GC) and peaks (mean ~560 bp, "
        "gaps of mean 500 bp): wall time including motif loading, thresholds and one MOODS "
        "scanner per process; peak RSS of the largest process. `genome-wide h`: the same motifs "
        "over hg38's 3.1 Gb at the measured rate, which is what scanning only the peaks saves. "
        "Target (issue 11): 100k peaks x 1,019 matrices in under 2 minutes on 2 cores.",
        "",
        _table(["input", "processes", "s", "Mb/s", "hits", "peak RSS MiB", "genome-wide h"], rows),
        "",
        *[f"`{r['command']}`  " for r in results.get("scan", [])],
    ]
    parts += ["", *tracks_section(results.get("tracks", []))]
    parts += count_section(results.get("count", []))
    parts += scan_peers_section(results.get("scan_peers", []))
    return "\n".join(parts)


def scan_peers_section(runs: list[dict]) -> list[str]:
    """Section 11: getdiff scan vs MOODS's CLI and memelite's FIMO (issue 29), rendered by
    bench_scan_peers.markdown; nothing when not run."""
    if not runs:
        return []
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_scan_peers", HERE / "bench_scan_peers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return ["", *module.markdown(runs)]


def tracks_section(runs: list[dict]) -> list[str]:
    """Section 8: bigWig tracks, and the two bigWig libraries compared (issue 27)."""
    rows = [
        [
            f"{r['regions']:,} x {r['tracks']}",
            f"{r['pieces_per_track']:,}",
            f"{r['getdiff_seconds']:.2f}",
            f"{r['files_kib'] / 1024:.1f}",
            "met" if r["getdiff_seconds"] < 5 else "not met",
        ]
        for r in runs
    ]
    libraries = [
        [
            f"{r['regions']:,}",
            f"{name} {lib['version']}",
            f"{lib['seconds_per_track']:.3f}",
            f"{lib['file_kib'] / 1024:.2f}",
            f"{lib['installed_kib'] / 1024:.2f}",
            ", ".join(lib["requires"]) or "none",
        ]
        for r in runs
        for name, lib in r["libraries"].items()
        if not lib.get("missing")
    ]
    return [
        "## 8. bigWig tracks (`getdiff tracks`)",
        "",
        "Reading a synthetic imputation Parquet (23 chromosomes, every 20th peak overlapping the "
        "next, rows shuffled), cutting overlaps into pieces and writing the observed, imputed, "
        "lower and upper bigWig files (pyBigWig) as one output set; median of the repeats, "
        "after a warm-up. Target (issue 27): 100k regions x 4 tracks in under 5 s.",
        "",
        _table(["regions x tracks", "pieces per track", "s", "MiB written", "< 5 s"], rows),
        "",
        "The libraries on the same pieces of one track: pyBigWig's `addEntries` per chromosome, "
        "pybigtools' `write` of a tuple iterator. Install weight: the files of the installed "
        "wheel (its RECORD) and what it requires. getdiff writes with pyBigWig.",
        "",
        _table(
            ["regions", "library", "s per track", "file MiB", "installed MiB", "requires"],
            libraries,
        ),
        "",
        *[f"`{r['command']}`  " for r in runs],
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run at tiny sizes")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    parser.add_argument("--output", type=Path, default=None, help="Markdown file to write")
    parser.add_argument("--workdir", type=Path, default=OUT, help="raw JSON, generated inputs")
    parser.add_argument(
        "--render", type=Path, default=None, help="only rewrite the Markdown from this results.json"
    )
    args = parser.parse_args(argv)
    workdir = args.workdir
    output = args.output or (workdir / "RESULTS.quick.md" if args.quick else HERE / "RESULTS.md")
    if args.render:
        results = json.loads(args.render.read_text())
    else:
        command = shlex.join(["python", "benchmarks/run_all.py", *(argv or sys.argv[1:])])
        began = time.perf_counter()
        results = collect(args.quick, args.threads, workdir)
        results["run"] = {"command": command, "seconds": time.perf_counter() - began}
        workdir.mkdir(parents=True, exist_ok=True)
        raw = workdir / ("results.quick.json" if args.quick else "results.json")
        raw.write_text(json.dumps(results, indent=1))
    seconds = results["run"]["seconds"]
    text = render(results, results["run"]["command"], seconds)
    if output.exists():
        text = kept_sections(text, output.read_text(encoding="utf-8"))
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(output)
    print(f"wrote {output} ({seconds / 60:.1f} min)")


def kept_sections(text: str, previous: str) -> str:
    """``text`` plus the ``## `` sections of ``previous`` that this script does not write (run on
    their own: interpretation, scanning against its peers, the measurement history), in their
    order, so a rerun never drops them."""
    written = {line for line in text.splitlines() if line.startswith("## ")}
    kept = [
        section
        for section in re.split(r"\n(?=## )", previous)
        if section.startswith("## ") and section.splitlines()[0] not in written
    ]
    return text.rstrip("\n") + "".join(f"\n\n{section.rstrip()}" for section in kept) + "\n"


def _ratio_rows(tools: dict) -> list[list[str]]:
    return [
        [name, f"{v['median_s']:.2f}", f"{v.get('ratio_vs_getdiff', 1.0):.2f}x"]
        for name, v in tools.items()
    ]


def count_targets(runs: list[dict]) -> list[str]:
    """Issue 29: getdiff count at least as fast as featureCounts at -T1 and -T2, and as the
    fastest fragments peer."""
    lines = []
    for run in runs:
        for t in ("T1", "T2"):
            peer = run["bam"][t].get(f"featureCounts -{t}")
            if peer is not None:
                ratio = peer["ratio_vs_getdiff"]
                lines.append(
                    f"- BAM counting >= featureCounts -{t} at {run['peaks']:,} peaks x "
                    f"{run['bam']['reads']:,} reads (issue 29): "
                    f"{'met' if ratio >= 1 else 'not met'} — {ratio:.2f}x (paired median)"
                )
        tools = run["fragments"]["tools"]
        peers = {n: v["median_s"] for n, v in tools.items() if not n.startswith("getdiff")}
        ours = min(v["median_s"] for n, v in tools.items() if n.startswith("getdiff"))
        if peers:
            name = min(peers, key=peers.get)
            lines.append(
                f"- Fragments counting >= the fastest peer ({name}, {peers[name]:.2f} s) at "
                f"{run['fragments']['fragments']:,} fragments (issue 29): "
                f"{'met' if ours <= peers[name] else 'not met'} — getdiff {ours:.2f} s"
            )
    return lines


def count_section(runs: list[dict]) -> list[str]:
    """Section 9: getdiff count vs featureCounts, the fragments prototypes and snapATAC2."""
    parts = ["", "## 9. Counting on its own (`getdiff count`) vs its peers (issue 29)", ""]
    parts += [
        "Whole processes; each repeat runs every tool once, in alternating order. `s` = median "
        "wall time; `ratio` = median over repeats of peer / getdiff of the same repeat and "
        "thread count (> 1: getdiff faster). featureCounts: `-p -F SAF --read2pos 5 -Q 30 "
        "--ignoreDup --primary -T N`; its 5' base is unshifted, so its counts are checked equal "
        "per peak to `getdiff count --no-tn5-shift`, and getdiff's shifted counts against a "
        "read-by-read pysam count of chr1. Fragments prototypes: gzip decoded by Arrow's zlib or "
        "by ISA-L, then pyarrow's CSV reader and numpy (`bench_count.py --prototype`). snapATAC2: "
        "`pp.import_fragments` + `pp.make_peak_matrix(counting_strategy='insertion')` summed over "
        "cells, in a venv of its own.",
        "",
        *count_targets(runs),
    ]
    for run in runs:
        bam, frag = run["bam"], run["fragments"]
        fc, pysam_check = bam.get("check_featurecounts", {}), bam["check_pysam"]
        rows = [row for t in ("T1", "T2") for row in _ratio_rows(bam[t])]
        parts += [
            "",
            f"**BAM: {run['peaks']:,} peaks x {bam['reads']:,} reads** ({bam['bam_mib']:.0f} "
            f"MiB, paired-end 2 x 50 bp, sorted and indexed; median of {run['repeats']}; "
            f"{bam.get('featurecounts', 'featureCounts not installed')}). Checks: featureCounts "
            f"= getdiff --no-tn5-shift on all {fc.get('peaks', 0):,} peaks: "
            f"{fc.get('equal', 'not run')}; shifted counts = pysam read by read on "
            f"{pysam_check['chrom']} ({pysam_check['peaks']:,} peaks): {pysam_check['equal']}.",
            "",
            _table(["tool", "s", "ratio"], rows),
        ]
        check = frag["check"]
        skipped = "" if "snapATAC2" in frag["tools"] else "; snapATAC2 not installed (skipped)"
        parts += [
            "",
            f"**Fragments: {run['peaks']:,} peaks x {frag['fragments']:,} fragments** "
            f"({frag['file_mib']:.0f} MiB gzip; ratio vs getdiff -T1). Check, insertion sites in "
            "peaks: " + ", ".join(f"{name} {n:,}" for name, n in check.items()) + f"{skipped}.",
            "",
            _table(["tool", "s", "ratio"], _ratio_rows(frag["tools"])),
            "",
            f"`{run['command']}`",
        ]
    return parts


if __name__ == "__main__":
    main()
