"""Deterministic demo inputs: 3 cell types' peaks with counts, one motif scan, sheet and config.

``getdiff demo-data --out DIR [--peaks-per-cell-type N] [--chromosomes chr1,chr10,...]
[--seed S]`` (or :func:`write_demo_data`) writes, identically for the same arguments:

- ``DIR/peaks/{demo_myeloid,demo_liver,demo_lymphoid}.narrowPeak.gz``: narrowPeak (10 columns,
  sorted like ``sort -k1,1 -k2,2n``), per-peak read counts (integers > 0) in column 7
  (signalValue);
- ``DIR/genome.fa.gz`` (bgzip + ``.fai`` + ``.gzi``; pysam) with the motif instances planted,
  and ``DIR/motifs.meme``: one motif per bundled cluster (282), named by the cluster;
- ``DIR/motif_scan.bed.gz``: the planted instances ``chrom start end cluster score strand``
  (bgzip + ``.tbi``), a precomputed scan for tests;
- ``DIR/planted_effects.tsv``: the generative model's motif effects (:mod:`getdiff.simulation`);
- ``DIR/cell_types.tsv`` (counts_column 7) and ``DIR/config.yaml`` pointing at those files (it
  scans the genome), with paths spelled from DIR exactly as given; it trains the tiny preset in
  full (a CPU run of minutes; no pretrained weights exist for the demo to adapt).

The generative model (genome, peaks, counts, planted motif effects) is :mod:`getdiff.simulation`.
"""

from __future__ import annotations

import argparse
import gzip
import io
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import yaml

from getdiff.config import validate_config
from getdiff.defaults import DEFAULTS
from getdiff.errors import ConfigError
from getdiff.genomics.motif_scores import load_cluster_names
from getdiff.genomics.peaks import DEFAULT_CHROMOSOMES, natural_chrom_key
from getdiff.io import atomic_path
from getdiff.simulation import (
    CELL_TYPES,
    HG38_SIZES,
    chromosome_sequence,
    motif_matrices,
    plant_motifs,
    planted_effects,
    simulate,
)

log = logging.getLogger(__name__)

COUNTS_COLUMN = 7
WINDOW_SIZE = DEFAULTS["prepare"]["window_size"]
PLANTED_EFFECTS = "planted_effects.tsv"


def _write_genome(
    out: Path,
    chroms: list[str],
    sizes: list[int],
    hits: dict[str, np.ndarray],
    matrices: list,
    seed: int,
) -> Path:
    """bgzip FASTA (60 bases per line) with its .fai and .gzi; the hits' motifs planted."""
    import pysam

    rng = np.random.default_rng([seed, 5])  # its own stream: the other files stay as they are
    path = out / "genome.fa.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".genome.") as scratch:
        plain = Path(scratch) / "genome.fa"
        with open(plain, "wb") as handle:
            for k, (chrom, size) in enumerate(zip(chroms, sizes, strict=True)):
                sequence = chromosome_sequence(rng, size)
                on_chrom = hits["chrom"] == k
                plant_motifs(rng, sequence, {key: v[on_chrom] for key, v in hits.items()}, matrices)
                rows = np.full((-(-size // 60), 61), ord("\n"), dtype=np.uint8)
                rows[:, :60].flat[:size] = sequence
                text = rows.tobytes()
                if size % 60:  # a shorter last line: its bases, then the newline
                    text = text[: (len(rows) - 1) * 61] + sequence[-(size % 60) :].tobytes() + b"\n"
                handle.write(f">{chrom}\n".encode() + text)
        packed = Path(scratch) / "genome.fa.gz"
        pysam.tabix_compress(str(plain), str(packed), force=True)
        pysam.faidx(str(packed))
        for suffix in (".fai", ".gzi", ""):
            os.replace(f"{packed}{suffix}", f"{path}{suffix}")
    return path


def _write_meme(out: Path, names: list[str], matrices: list[np.ndarray]) -> Path:
    """The cluster motifs in MEME minimal format (each motif named by its cluster)."""
    lines = ["MEME version 4", "", "ALPHABET= ACGT", "", "strands: + -", ""]
    lines += ["Background letter frequencies", "A 0.295 C 0.205 G 0.205 T 0.295", ""]
    for name, matrix in zip(names, matrices, strict=True):
        lines.append(f"MOTIF {name}")
        lines.append(f"letter-probability matrix: alength= 4 w= {matrix.shape[1]} nsites= 100 E= 0")
        lines += [" ".join(f"{p:.6f}" for p in column) for column in matrix.T]
        lines.append("")
    path = out / "motifs.meme"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")
    return path


def _write_gzip(path: Path, data: bytes) -> None:
    """Gzip with a fixed header (no name, mtime 0), so equal inputs give equal files."""
    with atomic_path(path) as tmp, open(tmp, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as out:
            out.write(data)


def _tsv_bytes(columns: dict[str, object]) -> bytes:
    table = pa.table(columns)
    sink = io.BytesIO()
    options = pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    pacsv.write_csv(table, sink, options)
    return sink.getvalue()


def _write_scan(path: Path, data: bytes) -> None:
    """bgzip + tabix index (pysam)."""
    import pysam  # 40 ms to import: only the scan needs it here

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".scan.") as scratch:
        plain = Path(scratch) / "scan.bed"
        plain.write_bytes(data)
        with atomic_path(path) as tmp:
            pysam.tabix_compress(str(plain), str(tmp), force=True)
            pysam.tabix_index(str(tmp), preset="bed", force=True, keep_original=True)
            os.replace(f"{tmp}.tbi", f"{path}.tbi")


def _check_arguments(chromosomes: Sequence[str] | None, peaks_per_cell_type: int) -> list[str]:
    """The demo's chromosomes in natural order; bad arguments raise ConfigError."""
    chroms = list(chromosomes) if chromosomes else list(DEFAULT_CHROMOSOMES)
    unknown = [c for c in chroms if c not in HG38_SIZES]
    if unknown:
        raise ConfigError(f"demo: unknown chromosome(s) {unknown}; expected hg38 names like chr1")
    if len(set(chroms)) != len(chroms):
        raise ConfigError(f"demo: chromosomes listed twice in {chroms}")
    if peaks_per_cell_type < 10 * len(chroms):
        raise ConfigError(
            f"demo: --peaks-per-cell-type {peaks_per_cell_type} is too small for "
            f"{len(chroms)} chromosomes; expected at least {10 * len(chroms)}"
        )
    return sorted(chroms, key=natural_chrom_key)


def _write_peaks(out: Path, chroms: list[str], sites: dict[str, np.ndarray]) -> dict[str, Path]:
    """One narrowPeak.gz per cell type, sorted like ``sort -k1,1 -k2,2n``; counts in column 7."""
    chrom_names = np.array(chroms)
    lexical_rank = np.argsort(np.argsort(chrom_names))
    lexical = np.lexsort((sites["start"], lexical_rank[sites["chrom"]]))
    paths = {}
    for k, cell_type in enumerate(CELL_TYPES):
        keep = lexical[(sites["owner"][lexical] == -1) | (sites["owner"][lexical] == k)]
        counts = sites["counts"][keep, k]
        start, end = sites["start"][keep], sites["end"][keep]
        columns = {
            "chrom": pa.array(chrom_names[sites["chrom"][keep]]),
            "start": pa.array(start),
            "end": pa.array(end),
            "name": pa.array([f"{cell_type}_peak{i}" for i in range(len(keep))]),
            "score": pa.array(np.minimum(1000, counts * 1000 // max(1, counts.max()))),
            "strand": pa.array(np.full(len(keep), ".")),
            "signalValue": pa.array(counts),
            "pValue": pa.array(np.round(np.log10(counts + 1.0) * 10, 3)),
            "qValue": pa.array(np.full(len(keep), -1)),
            "peak": pa.array((end - start) // 2),
        }
        path = out / "peaks" / f"{cell_type}.narrowPeak.gz"
        _write_gzip(path, _tsv_bytes(columns))
        paths[f"peaks_{cell_type}"] = path
    return paths


def _write_fragments(
    out: Path, chroms: list[str], sites: dict[str, np.ndarray], cell_type: str, seed: int
) -> Path:
    """A 10x-style fragments file whose insertion sites per peak equal the cell type's counts.

    A peak with count c gets c // 2 fragments with both insertion sites (start, end - 1) inside
    it, and for odd c one 2-bp fragment over its last base and the base after it (demo peaks are
    at least 1 bp apart, so that second site falls in no peak). Barcodes come from a pool of 500.
    """
    k = CELL_TYPES.index(cell_type)
    rng = np.random.default_rng([seed, 7])  # its own stream: the other files stay as they are
    keep = np.flatnonzero((sites["owner"] == -1) | (sites["owner"] == k))
    counts, start, end = sites["counts"][keep, k], sites["start"][keep], sites["end"][keep]
    inside = np.repeat(np.arange(len(keep)), counts // 2)
    lo, hi = start[inside], end[inside]
    frag_start = lo + np.floor(rng.random(len(inside)) * (hi - lo - 1)).astype(np.int64)
    frag_end = frag_start + 1 + np.floor(rng.random(len(inside)) * (hi - frag_start - 1))
    odd = np.flatnonzero(counts % 2)
    chrom = np.r_[sites["chrom"][keep][inside], sites["chrom"][keep][odd]]
    first = np.r_[frag_start, end[odd] - 1]
    last = np.r_[frag_end.astype(np.int64), end[odd] + 1]
    chrom_names = np.array(chroms)
    lexical_rank = np.argsort(np.argsort(chrom_names))
    order = np.lexsort((last, first, lexical_rank[chrom]))
    pool = np.array([f"AAAC{i:08d}-1" for i in range(500)])
    columns = {
        "chrom": pa.array(chrom_names[chrom[order]]),
        "start": pa.array(first[order]),
        "end": pa.array(last[order]),
        "barcode": pa.array(pool[rng.integers(0, len(pool), len(order))]),
        "count": pa.array(1 + rng.poisson(0.5, len(order))),
    }
    path = out / "fragments" / f"{cell_type}.fragments.tsv.gz"
    _write_scan(path, _tsv_bytes(columns))
    return path


def _write_demo_scan(
    path: Path, chroms: list[str], names: list[str], hits: dict[str, np.ndarray]
) -> None:
    _write_scan(
        path,
        _tsv_bytes(
            {
                "chrom": pa.array(np.array(chroms)[hits["chrom"]]),
                "start": pa.array(hits["start"]),
                "end": pa.array(hits["end"]),
                "name": pa.array(np.array(names)[hits["cluster"]]),
                "score": pa.array(hits["score"]),
                "strand": pa.array(np.where(hits["strand"] == 1, "+", "-")),
            }
        ),
    )


def _write_sheet_and_config(
    out: Path, paths: dict[str, Path], sizes: list[int], peaks_per_cell_type: int, seed: int
) -> None:
    sheet = pd.DataFrame(
        {
            "cell_type": list(CELL_TYPES),
            "peaks": [str(paths[f"peaks_{c}"]) for c in CELL_TYPES],
            "counts_file": [""] * len(CELL_TYPES),
            "counts_column": [COUNTS_COLUMN] * len(CELL_TYPES),
        }
    )
    paths["cell_types"] = out / "cell_types.tsv"
    with atomic_path(paths["cell_types"]) as tmp:
        sheet.to_csv(tmp, sep="\t", index=False)
    # Demo peaks are sparser than a deep ATAC peak set: a 900-peak window spans ~900 x the mean
    # spacing, so max_span is set to twice that (GET's 5 Mb would skip every training window).
    spacing = sum(sizes) / peaks_per_cell_type
    max_span = int(np.ceil(2 * WINDOW_SIZE * spacing / 1e6)) * 1_000_000
    # The demo has no pretrained weights to adapt, and must train on a laptop CPU: the tiny
    # preset trained in full (the spec preset with LoRA on random weights would take ~15 h).
    # Positions, window scaling and the cell-type embedding as in config/config.yaml.
    config = {
        "cell_types": str(paths["cell_types"]),
        "genome_fasta": str(paths["genome_fasta"]),
        "motifs": str(paths["motifs"]),
        "genome": "demo",
        "prepare": {"max_span": max_span},
        "task": {"scaling": "window"},
        "model": {
            "preset": "tiny",
            "use_lora": False,
            "positions": "rotary",
            "cell_type_embedding": True,
        },
        "train": {"lr": 0.003, "max_steps": 1000},
        "evaluate": {"num_samples": 8},
    }
    validate_config(config, source="demo config")
    header = (
        f"# Demo inputs written by `getdiff demo-data` (seed {seed}, "
        f"{peaks_per_cell_type} peaks per cell type, {len(sizes)} chromosomes).\n"
        f"# prepare.max_span: demo peaks are ~{spacing / 1e3:.0f} kb apart on average, so "
        f"{WINDOW_SIZE}-peak windows span ~{WINDOW_SIZE * spacing / 1e6:.0f} Mb.\n"
        "# model: the tiny preset, trained in full, fits a CPU; on a GPU try preset: mid or spec.\n"
    )
    paths["config"] = out / "config.yaml"
    with atomic_path(paths["config"]) as tmp:
        tmp.write_text(header + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def write_demo_data(
    out: str | Path,
    peaks_per_cell_type: int = 60000,
    chromosomes: Sequence[str] | None = None,
    seed: int = 0,
    fragments_for: str | None = None,
) -> dict[str, Path]:
    """Write the demo inputs (see the module docstring); returns name -> path.

    Keys: ``peaks_<cell type>``, ``motif_scan``, ``planted_effects``, ``cell_types``,
    ``config``, ``genome_fasta``, ``motifs``, and with
    ``fragments_for`` (a demo cell type) ``fragments_<cell type>``: a fragments file whose
    insertion sites per peak equal that cell type's peak counts.
    """
    if fragments_for is not None and fragments_for not in CELL_TYPES:
        raise ConfigError(f"--fragments: {fragments_for!r} is not a demo cell type {CELL_TYPES}")
    began = time.perf_counter()
    chroms = _check_arguments(chromosomes, peaks_per_cell_type)
    out = Path(out)
    names = load_cluster_names()
    rng = np.random.default_rng(seed)
    sites, hits, model, sizes = simulate(rng, chroms, peaks_per_cell_type, len(names))
    paths = _write_peaks(out, chroms, sites)
    paths["motif_scan"] = out / "motif_scan.bed.gz"
    _write_demo_scan(paths["motif_scan"], chroms, names, hits)
    matrices = motif_matrices(np.random.default_rng([seed, 3]), model["widths"])
    paths["genome_fasta"] = _write_genome(out, chroms, sizes, hits, matrices, seed)
    paths["motifs"] = _write_meme(out, names, matrices)
    paths["planted_effects"] = out / PLANTED_EFFECTS
    with atomic_path(paths["planted_effects"]) as tmp:
        planted_effects(model, names).to_csv(tmp, sep="\t", index=False)
    _write_sheet_and_config(out, paths, sizes, peaks_per_cell_type, seed)
    if fragments_for is not None:
        fragments = _write_fragments(out, chroms, sites, fragments_for, seed)
        paths[f"fragments_{fragments_for}"] = fragments
    log.info(
        "demo data: %d cell types x %d peaks, %d motif hits on %d chromosomes -> %s (%.1f s)",
        len(CELL_TYPES),
        peaks_per_cell_type,
        len(hits["start"]),
        len(chroms),
        out,
        time.perf_counter() - began,
    )
    return paths


def run(args: argparse.Namespace) -> None:
    chromosomes = [c for c in args.chromosomes.split(",") if c] if args.chromosomes else None
    write_demo_data(args.out, args.peaks_per_cell_type, chromosomes, args.seed, args.fragments)


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo-data",
        help="write deterministic demo inputs (3 cell types, motif scan, sheet, config)",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--out", required=True, help="directory receiving the demo inputs")
    parser.add_argument("--peaks-per-cell-type", type=int, default=60000, metavar="N")
    parser.add_argument(
        "--chromosomes", default=None, help="comma-separated hg38 names (default chr1-22,chrX)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--fragments",
        metavar="CELL_TYPE",
        help="also write a fragments file (bgzip + tbi) for this cell type, consistent with its "
        "peak counts",
    )
    parser.set_defaults(func=run)


__all__ = ["CELL_TYPES", "HG38_SIZES", "register_cli", "write_demo_data"]
