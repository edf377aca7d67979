"""The prepare stage: one cell type's peaks + the motif scan -> region table and window files.

``getdiff prepare --config FILE --cell-type NAME --outdir DIR`` (or :func:`prepare_cell_type`)
writes, only once every input has been read and checked (nothing is written on error):

- ``DIR/regions.parquet``: one row per kept peak, F = n_clusters + 1 float32 features;
- ``DIR/windows_train.parquet``, ``DIR/windows_validation.parquet``,
  ``DIR/windows_test.parquet``: the split's rows and window layout (a split with no window still
  gets a valid file with 0 windows, and a warning is logged).

The formats are in ``docs/DATA_CONTRACT.md``; :mod:`getdiff.tensors` reads them. Splits are by
chromosome: validation and test chromosomes from the config, training = the other selected ones.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from getdiff import __version__
from getdiff.config import add_config_arguments, config_from_args, load_cell_types, load_config
from getdiff.errors import ConfigError, InputError
from getdiff.io import atomic_path
from getdiff.motifs import aggregate_motif_scores, load_cluster_names, load_motif_mapping
from getdiff.peaks import DEFAULT_CHROMOSOMES, load_peaks, natural_chrom_key
from getdiff.tensors import (
    ACCESSIBILITY,
    layout_windows,
    normalise_accessibility,
    normalise_motifs,
    write_region_table,
    write_window_set,
)

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")


def output_paths(outdir: str | Path) -> dict[str, Path]:
    """Output files of one cell type: 'regions' and one per split."""
    outdir = Path(outdir)
    paths = {"regions": outdir / "regions.parquet"}
    paths.update({split: outdir / f"windows_{split}.parquet" for split in SPLITS})
    return paths


def _split_chromosomes(
    chromosomes: Sequence[str], validation: Sequence[str], test: Sequence[str]
) -> dict[str, list[str]]:
    both = sorted(set(validation) & set(test))
    if both:
        raise ConfigError(
            f"key 'prepare.validation_chromosomes': {both} also in prepare.test_chromosomes; "
            "expected disjoint splits"
        )
    held_out = set(validation) | set(test)
    return {
        "train": [c for c in chromosomes if c not in held_out],
        "validation": [c for c in validation if c in chromosomes],
        "test": [c for c in test if c in chromosomes],
    }


def _check_enough_peaks(path: str | Path, chrom: pd.Series, window_size: int) -> None:
    per_chrom = chrom.value_counts()
    if per_chrom.empty or per_chrom.max() < window_size:
        most = f"; most: {per_chrom.idxmax()} with {per_chrom.max()}" if len(per_chrom) else ""
        raise InputError(
            path,
            f"no chromosome has at least window_size={window_size} kept peaks "
            f"({int(per_chrom.sum())} peaks on {len(per_chrom)} chromosomes{most}); expected "
            "one window's worth on at least one chromosome (or a smaller prepare.window_size)",
        )


def prepare_cell_type(
    *,
    cell_type: str,
    peaks: str | Path,
    motif_scan: str | Path,
    outdir: str | Path,
    counts_column: int | None = None,
    counts_file: str | Path | None = None,
    cluster_names: str | Path | None = None,
    motif_to_cluster: str | Path | None = None,
    genome: str = "hg38",
    chromosomes: Sequence[str] = DEFAULT_CHROMOSOMES,
    chrom_naming: str = "strict",
    unknown_clusters: str = "error",
    drop_zero_accessibility: bool = True,
    window_size: int = 900,
    max_span: int = 5_000_000,
    train_stride: int = 100,
    train_jitter: int = 50,
    seed: int = 0,
    validation_chromosomes: Sequence[str] = ("chr10",),
    test_chromosomes: Sequence[str] = ("chr11",),
    chunk_lines: int = 1_000_000,
    use_index: bool | None = None,
) -> dict[str, Path]:
    """Run the prepare stage for one cell type; returns the written paths (see module docstring)."""
    began = time.perf_counter()
    split_chroms = _split_chromosomes(chromosomes, validation_chromosomes, test_chromosomes)
    names = load_cluster_names(cluster_names)
    if ACCESSIBILITY in names:
        raise InputError(
            cluster_names or "cluster names", f"'{ACCESSIBILITY}' is reserved for the last feature"
        )
    mapping = load_motif_mapping(motif_to_cluster, names) if motif_to_cluster else None

    table, dropped = load_peaks(
        peaks,
        counts_column=counts_column,
        counts_file=counts_file,
        chromosomes=chromosomes,
        drop_zero_accessibility=drop_zero_accessibility,
    )
    log.info("%s: %d peaks kept from %s (dropped: %s)", cell_type, len(table), peaks, dropped)
    _check_enough_peaks(peaks, table["chrom"], window_size)

    scores, scan_stats = aggregate_motif_scores(
        motif_scan,
        table,
        names,
        mapping=mapping,
        chrom_naming=chrom_naming,
        unknown_clusters=unknown_clusters,
        chunk_lines=chunk_lines,
        use_index=use_index,
    )
    motif_values, motif_max = normalise_motifs(scores)
    del scores
    has_counts = counts_column is not None or counts_file is not None
    counts = table["counts"].to_numpy() if has_counts else None
    acc_values, acc_scaling = normalise_accessibility(counts, len(table))
    features = np.concatenate([motif_values, acc_values[:, None]], axis=1)
    del motif_values

    regions = table[["chrom", "start", "end", "name"]].copy()
    regions["region_id"] = np.arange(len(regions), dtype=np.int64)
    meta: dict[str, Any] = {
        "feature_names": [*names, ACCESSIBILITY],
        "cell_type": cell_type,
        "genome": genome,
        "getdiff_version": __version__,
        "scaling": {"motif_max": motif_max, ACCESSIBILITY: acc_scaling},
        "n_regions": len(regions),
        "dropped_peaks": dropped,
        "motif_scan": {"path": str(motif_scan), **scan_stats},
        "peaks": str(peaks),
    }

    window_params = {
        "window_size": window_size,
        "max_span": max_span,
        "train_stride": train_stride,
        "train_jitter": train_jitter,
        "seed": seed,
    }
    layouts = {}
    for split in SPLITS:
        layout = layout_windows(
            regions,
            split_chroms[split],
            training=split == "train",
            window_size=window_size,
            max_span=max_span,
            stride=train_stride,
            jitter=train_jitter,
            seed=seed,
        )
        layouts[split] = layout
        if layout.skipped_chromosomes:
            log.warning(
                "%s %s: chromosomes with fewer than %d peaks skipped: %s",
                cell_type,
                split,
                window_size,
                layout.skipped_chromosomes,
            )
        if layout.skipped_max_span:
            log.info(
                "%s %s: %d windows spanning more than %d bp skipped",
                cell_type,
                split,
                layout.skipped_max_span,
                max_span,
            )
        if layout.over_max_span:
            log.warning(
                "%s %s: %d tiles span more than %d bp (kept so every region is covered)",
                cell_type,
                split,
                layout.over_max_span,
                max_span,
            )
        if len(layout.starts) == 0:
            log.warning(
                "%s: split %r has no window (chromosomes %s); writing an empty file",
                cell_type,
                split,
                split_chroms[split],
            )
        log.info("%s %s: %d windows", cell_type, split, len(layout.starts))

    paths = output_paths(outdir)
    # Every file goes to a temporary name first; all are renamed only after all were written.
    with contextlib.ExitStack() as stack:
        tmp = {key: stack.enter_context(atomic_path(path)) for key, path in paths.items()}
        write_region_table(tmp["regions"], regions, features, meta)
        for split, layout in layouts.items():
            rows = regions.iloc[layout.rows]
            chroms = sorted(pd.unique(rows["chrom"]), key=natural_chrom_key)
            write_window_set(
                tmp[split],
                rows,
                features[layout.rows],
                layout.starts,
                layout.score_from,
                {
                    **meta,
                    "split": split,
                    "chromosomes": [str(c) for c in chroms],
                    "split_chromosomes": split_chroms[split],
                    "skipped_chromosomes": layout.skipped_chromosomes,
                    "windows_skipped_max_span": layout.skipped_max_span,
                    "tiles_over_max_span": layout.over_max_span,
                    **window_params,
                },
            )
    log.info("%s: prepared in %.1f s -> %s", cell_type, time.perf_counter() - began, outdir)
    return paths


def prepare_from_config(
    config: dict[str, Any] | str | Path, cell_type: str, outdir: str | Path
) -> dict[str, Path]:
    """Run :func:`prepare_cell_type` with a config (validated dict or YAML path) and its sheet."""
    if not isinstance(config, dict):
        config = load_config(config)
    sheet = load_cell_types(config["cell_types"])
    if cell_type not in sheet.index:
        raise ConfigError(
            f"{config['cell_types']}: no cell type {cell_type!r}; known: {list(sheet.index)}"
        )
    row = sheet.loc[cell_type]
    settings = config["prepare"]
    return prepare_cell_type(
        cell_type=cell_type,
        peaks=row["peaks"],
        motif_scan=config["motif_scan"],
        outdir=outdir,
        counts_column=None if pd.isna(row["counts_column"]) else int(row["counts_column"]),
        counts_file=None if pd.isna(row["counts_file"]) else row["counts_file"],
        cluster_names=config["cluster_names"],
        motif_to_cluster=config["motif_to_cluster"],
        genome=config["genome"],
        chromosomes=settings["chromosomes"],
        chrom_naming=settings["chrom_naming"],
        unknown_clusters=settings["unknown_clusters"],
        drop_zero_accessibility=settings["drop_zero_accessibility"],
        window_size=settings["window_size"],
        max_span=settings["max_span"],
        train_stride=settings["train_stride"],
        train_jitter=settings["train_jitter"],
        seed=settings["seed"],
        validation_chromosomes=settings["validation_chromosomes"],
        test_chromosomes=settings["test_chromosomes"],
    )


def run(args: argparse.Namespace) -> None:
    prepare_from_config(config_from_args(args), args.cell_type, args.outdir)


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prepare",
        help="peaks + motif scan of one cell type -> region table and window tensors (Parquet)",
        description=__doc__.split("\n\n")[0],
    )
    add_config_arguments(parser)
    parser.add_argument("--cell-type", required=True, help="a cell_type of the cell-type sheet")
    parser.add_argument("--outdir", required=True, help="directory receiving the Parquet files")
    parser.set_defaults(func=run)


__all__ = ["SPLITS", "output_paths", "prepare_cell_type", "prepare_from_config", "register_cli"]
