"""Helpers shared by several test files, so that no test file imports another; the fixtures
built on them are in conftest.py.

- Workflow runs: :func:`snakemake` (this checkout's Snakefile in a work directory),
  :func:`write_config` (a demo config and sheet), ``DEMO`` (the demo's cell types),
  ``TINY_RUN`` (config sections of a run of seconds).
- Files: :func:`write_lines`, :func:`prepare_with` (prepare from flat keywords),
  :func:`prepare_three_peaks`, :func:`pinned_env` (one-thread child processes).
- Toy inputs (the reliability and fuzz tests): ``SITES``, ``PEAKS``, ``SCAN``, ``TOY_PREPARE``,
  ``TOY_FEATURES``, :func:`text`, :func:`write_text`, :func:`write_cli_config`.
- Models: ``TINY_MODEL`` (overrides of the tiny preset), :func:`active_model`.
- Synthetic training windows (the training tests): ``W``, ``F``, ``CELL_TYPES``,
  ``FEATURE_NAMES``, :func:`write_split`, :func:`train_config`, :func:`read_history`.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from getdiff.config import validate_config
from getdiff.modeling.model import GETRegionDiffusion, build_model
from getdiff.tensors import write_window_set

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# --- workflow runs ------------------------------------------------------------------------------


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    command = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir)]
    result = subprocess.run(
        [*command, *args], env=env, capture_output=True, text=True, check=False, cwd=workdir
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}"
        )
    return result


def write_config(
    directory: Path,
    cell_types: list[str],
    fragments: tuple[str, ...] = (),
    scan: bool = False,
    **sections,
) -> Path:
    """A demo config in ``directory`` with the given cell types (demo inputs under demo/); those
    in ``fragments`` take their counts from the demo's fragments file instead of column 7. With
    ``scan`` the workflow scans the demo genome for the demo's motifs; else it reads the demo's
    planted motif hits as a precomputed scan."""
    sheet = directory / "cell_types.tsv"
    rows = ["cell_type\tpeaks\tcounts_file\tcounts_column"]
    for ct in cell_types:
        counts = f"demo/fragments/{ct}.fragments.tsv.gz\t" if ct in fragments else "\t7"
        rows.append(f"{ct}\tdemo/peaks/{ct}.narrowPeak.gz\t{counts}")
    sheet.write_text("\n".join(rows) + "\n")
    config = {
        "cell_types": str(sheet),
        **(
            {"genome_fasta": "demo/genome.fa.gz", "motifs": "demo/motifs.meme"}
            if scan
            else {"motif_scan": "demo/motif_scan.bed.gz"}
        ),
        "demo": {"enabled": True, "outdir": "demo"},
        "prepare": {"max_span": 250_000_000},
        **sections,
    }
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


DEMO = ["demo_myeloid", "demo_liver", "demo_lymphoid"]

TINY_RUN = {
    "demo": {
        "enabled": True,
        "outdir": "demo",
        "peaks_per_cell_type": 7000,
        "chromosomes": ["chr1", "chr10", "chr11"],
    },
    "prepare": {"max_span": 250_000_000},
    "model": {"preset": "tiny"},
    "train": {
        "max_steps": 20,
        "warmup_steps": 2,
        "batch_size": 4,
        "eval_every": 10,
        "checkpoint_every": 10,
        "log_every": 5,
        "val_windows": 4,
    },
    "impute": {"splits": ["validation", "test"], "num_samples": 2},
}


# --- files -------------------------------------------------------------------------------------


def write_lines(path: Path, lines: Sequence[str], gz: bool = False, eol: str = "\n") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(f"{line}{eol}" for line in lines).encode()
    if gz:
        with gzip.open(path, "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)
    return path


# Child processes compared bit for bit with each other run on one thread whatever the machine's
# core count (the CLI's --threads pins torch; these pin what runs before it and numpy's BLAS).
PINNED_THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def pinned_env() -> dict[str, str]:
    return {**os.environ, **PINNED_THREADS}


RUN_KEYS = ("chunk_lines", "use_index")

ROW_KEYS = ("cell_type", "peaks", "counts_column", "counts_file", "barcodes")

TOP_KEYS = ("motif_scan", "cluster_names", "motif_to_cluster", "genome")


def prepare_with(outdir: Path, **flat) -> dict[str, Path]:
    """Run prepare_cell_type from flat keywords: sheet columns, top-level config keys, prepare:
    keys (schema defaults for the rest) and the run options chunk_lines/use_index."""
    from getdiff.prepare import PrepareSettings, prepare_cell_type

    row = {key: flat.pop(key) for key in ROW_KEYS if key in flat}
    run = {key: flat.pop(key) for key in RUN_KEYS if key in flat}
    top = {key: str(flat.pop(key)) for key in TOP_KEYS if flat.get(key) is not None}
    for key in TOP_KEYS:
        flat.pop(key, None)
    config = validate_config({"cell_types": "unused.tsv", **top, "prepare": flat})
    return prepare_cell_type(PrepareSettings.from_config(config, row, **run), outdir)


def prepare_three_peaks(tmp_path: Path, **inputs) -> Path:
    """prepare on three peaks (two overlapping on chr1, one on chr2), a two-hit scan and clusters
    A, B, chr2 held out, plus ``inputs`` (the counts source, its options); -> regions.parquet."""
    peaks = ["chr1\t100\t200", "chr1\t150\t300", "chr2\t0\t50"]
    hits = ["chr1\t110\t120\tA\t3", "chr2\t5\t9\tB\t2"]
    prepare_with(
        tmp_path / "out",
        cell_type=inputs.pop("cell_type", "T"),
        peaks=write_lines(tmp_path / "peaks.bed", peaks),
        motif_scan=write_lines(tmp_path / "scan.bed", hits),
        cluster_names=write_lines(tmp_path / "clusters.txt", ["A", "B"]),
        chromosomes=["chr1", "chr2"],
        window_size=2,
        max_span=10**9,
        validation_chromosomes=[],
        test_chromosomes=["chr2"],
        **inputs,
    )
    return tmp_path / "out" / "regions.parquet"


# --- toy inputs --------------------------------------------------------------------------------

# Toy inputs: 6 peaks on chr1 (train), 4 on chr10 (validation), 4 on chr11 (test); counts in
# column 5; one hit of cluster A, B or C inside each peak. Line k of a file is LIST[k - 1].
SITES = [
    (chrom, start)
    for chrom, n in (("chr1", 6), ("chr10", 4), ("chr11", 4))
    for start in range(100, 100 * (n + 1), 100)
]
PEAKS = ["track name=toy"] + [f"{c}\t{s}\t{s + 50}\t{c}_{s}\t{s // 100}" for c, s in SITES]
SCAN = [f"{c}\t{s + 10}\t{s + 20}\t{'ABC'[i % 3]}\t{2 + i % 5}" for i, (c, s) in enumerate(SITES)]
TOY_PREPARE = {
    "chromosomes": ["chr1", "chr10", "chr11"],
    "window_size": 4,
    "max_span": 10**9,
    "train_stride": 1,
    "train_jitter": 0,
    "validation_chromosomes": ["chr10"],
    "test_chromosomes": ["chr11"],
}
TINY_MODEL = {"embed_dim": 16, "num_layers": 1, "num_heads": 2}  # overrides of the tiny preset
TOY_FEATURES = ["A", "B", "C", "accessibility"]


def text(lines: list[str], eol: str = "\n") -> bytes:
    return "".join(f"{line}{eol}" for line in lines).encode()


def write_text(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text(lines))
    return path


def write_cli_config(directory: Path, peaks: Path, scan: Path, clusters: Path, **sections) -> Path:
    """A config + one-row cell-type sheet ("toy", counts in column 5) for the toy inputs."""
    sheet = directory / "cell_types.tsv"
    sheet.write_text(f"cell_type\tpeaks\tcounts_file\tcounts_column\ntoy\t{peaks}\t\t5\n")
    config = {
        "cell_types": str(sheet),
        "motif_scan": str(scan),
        "cluster_names": str(clusters),
        "prepare": {**TOY_PREPARE, **sections.pop("prepare", {})},
        "model": {"preset": "tiny", "overrides": dict(TINY_MODEL)},
        "train": {"device": "cpu", "batch_size": 2, "max_steps": 2, "val_windows": 1},
        **sections,
    }
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# --- models ------------------------------------------------------------------------------------


def active_model(seed: int = 0, **overrides) -> GETRegionDiffusion:
    """Tiny model in eval mode whose adaLN and head are non-zero (both start at zero), so blocks
    mix regions, depend on t, and the output shows it."""
    torch.manual_seed(seed)
    model = build_model("tiny", dropout=0.0, **overrides).eval()
    with torch.no_grad():
        for block in model.encoder.blocks:
            block.adaLN_modulation[-1].weight.normal_(std=0.1)
            block.adaLN_modulation[-1].bias.normal_(std=0.5)
        model.head_mask.weight.normal_(std=0.1)
    return model


# --- synthetic training windows ----------------------------------------------------------------

W, F = 16, 6  # regions per window, features per region
CELL_TYPES = ["alpha", "beta"]
FEATURE_NAMES = [f"motif{i}" for i in range(F - 1)] + ["accessibility"]


def write_split(path: Path, features: np.ndarray, starts: np.ndarray, cell_type: str, split: str):
    n = len(features)
    regions = pd.DataFrame(
        {
            "chrom": ["chr1"] * n,
            "start": np.arange(n, dtype=np.int64) * 1000,
            "end": np.arange(n, dtype=np.int64) * 1000 + 500,
            "name": [f"peak{i}" for i in range(n)],
            "region_id": np.arange(n, dtype=np.int64),
        }
    )
    meta = {
        "feature_names": FEATURE_NAMES,
        "cell_type": cell_type,
        "genome": "hg38",
        "split": split,
        "window_size": W,
        "scaling": {
            "motif_max": [1.0] * (F - 1),
            "accessibility": {"constant": True, "value": 1.0},
        },
        "getdiff_version": "test",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_window_set(path, regions, features, starts, np.zeros(len(starts), np.int64), meta)


def train_config(use_lora: bool = True, task: str = "all", **train_settings) -> dict:
    settings = {
        "batch_size": 4,
        "lr": 3e-3,
        "warmup_steps": 2,
        "max_steps": 8,
        "log_every": 2,
        "eval_every": 4,
        "checkpoint_every": 3,
        "val_windows": 6,
        "device": "cpu",
        **train_settings,
    }
    return validate_config(
        {
            "cell_types": "unused.tsv",
            "motif_scan": "unused.bed",
            "model": {
                "preset": "tiny",
                "overrides": dict(TINY_MODEL),
                "use_lora": use_lora,
            },
            "train": settings,
            "task": {"predict": task},
        }
    )


def read_history(outdir: Path) -> pd.DataFrame:
    return pd.read_csv(outdir / "history.tsv", sep="\t")


@dataclass
class Case:
    """A command line of a bad-input table, expected to fail naming ``path`` (and ``line``) with
    ``expected`` text."""

    argv: list[str]
    path: Path | str
    line: int | None
    expected: str


def files_under(directory: Path) -> list[str]:
    """The files below ``directory`` (relative, sorted); none when it does not exist."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if not p.is_dir())


def assert_refused_in_one_line(case: Case, stderr: str, root: Path) -> None:
    """The last line of ``stderr`` is ``getdiff <command>: error: <path>[:<line>]: ...`` with the
    expected text, and no temporary file is left under ``root``."""
    errors = stderr.strip().splitlines()
    where = f"{case.path}:{case.line}" if case.line is not None else str(case.path)
    assert errors[-1].startswith(f"getdiff {case.argv[0]}: error: {where}: "), errors[-1:]
    assert case.expected in errors[-1], errors[-1]
    assert list(root.rglob("*.tmp")) == []
