"""The prepare stage: one cell type's peaks + the motif scan -> region table and window files.

``getdiff prepare --config FILE --cell-type NAME --outdir DIR`` (or :func:`prepare_cell_type`
with a :class:`PrepareSettings`)
writes, only once every input has been read and checked (nothing is written on error):

- ``DIR/regions.parquet``: one row per kept peak, F = n_clusters + 1 float32 features;
- ``DIR/windows_train.parquet``, ``DIR/windows_validation.parquet``,
  ``DIR/windows_test.parquet``: the split's rows and window layout (a split with no window still
  gets a valid file with 0 windows, and a warning is logged);
- ``DIR/manifest.json``, renamed in last: the run's id and each file's size. Every file carries
  the id, and readers refuse a file the manifest does not list (a mixed or unfinished folder).

A lock (``DIR/.getdiff.lock``) refuses a second prepare into the same folder while one runs.
The scan is parsed by a second thread while the peaks load, and up to four files are written at
a time; ``--threads`` (the rule passes its ``threads``) bounds pyarrow's pool and the writers.

The formats are in ``docs/DATA_CONTRACT.md``; :mod:`getdiff.tensors` reads them. Splits are by
chromosome: validation and test chromosomes from the config, training = the other selected ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from getdiff import __version__
from getdiff.config import add_config_arguments, config_from_args, load_cell_types, load_config
from getdiff.errors import ConfigError, GetdiffError, InputError
from getdiff.genomics.bam import read_filter
from getdiff.genomics.fragments import read_barcodes
from getdiff.genomics.intervals import check_match_rate
from getdiff.genomics.motif_scores import (
    aggregate_motif_scores,
    load_cluster_names,
    load_motif_mapping,
    scan_read_ahead,
)
from getdiff.genomics.peaks import load_peaks, natural_chrom_key
from getdiff.io import exclusive, output_set
from getdiff.paths import REGIONS_FILE
from getdiff.tensors import (
    ACCESSIBILITY,
    MANIFEST,
    SPLITS,
    FeatureMatrix,
    WindowLayout,
    layout_windows,
    manifest,
    normalise_accessibility,
    normalise_motifs,
    windows_file,
    write_region_table,
    write_window_set,
)

log = logging.getLogger(__name__)


def output_paths(outdir: str | Path) -> dict[str, Path]:
    """Output files of one cell type: the manifest (renamed in last), 'regions', one per split."""
    outdir = Path(outdir)
    paths = {MANIFEST: outdir / MANIFEST, "regions": outdir / REGIONS_FILE}
    paths.update({split: outdir / windows_file(split) for split in SPLITS})
    return paths


def _split_chromosomes(
    chromosomes: Sequence[str], validation: Sequence[str], test: Sequence[str]
) -> dict[str, list[str]]:
    """Train / validation / test chromosomes. A held-out chromosome outside prepare.chromosomes
    is an error: dropping it silently would move nothing out of training, or test nothing."""
    both = sorted(set(validation) & set(test))
    if both:
        raise ConfigError(
            f"key 'prepare.validation_chromosomes': {both} also in prepare.test_chromosomes; "
            "expected disjoint splits"
        )
    for key, held in (("validation_chromosomes", validation), ("test_chromosomes", test)):
        outside = [c for c in held if c not in chromosomes]
        if outside:
            raise ConfigError(
                f"key 'prepare.{key}': {outside} not in prepare.chromosomes "
                f"({_closest_names(outside[0], chromosomes)}); expected held-out chromosomes "
                "among the selected ones"
            )
    held_out = set(validation) | set(test)
    return {
        "train": [c for c in chromosomes if c not in held_out],
        "validation": list(validation),
        "test": list(test),
    }


def _closest_names(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.3)
    return f"closest: {', '.join(close)}" if close else "no close name"


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


@dataclass(frozen=True)
class PrepareSettings:
    """The ``prepare:`` section (defaults live in the schema) plus the run's input files."""

    cell_type: str
    peaks: Path
    counts_column: int | None
    counts_file: Path | None
    barcodes: Path | None
    motif_scan: Path
    cluster_names: Path | None
    motif_to_cluster: Path | None
    genome: str
    section: dict[str, Any]  # the validated prepare: section
    chunk_lines: int = 1_000_000  # scan lines per chunk when streaming
    use_index: bool | None = None  # tabix query instead of streaming; None = by scan size

    @classmethod
    def from_config(
        cls, config: dict[str, Any], row: dict[str, Any], **run: Any
    ) -> PrepareSettings:
        """From a validated config and one row of the cell-type sheet (cell_type, peaks, ...)."""

        def path(value: Any) -> Path | None:
            return None if value is None or pd.isna(value) else Path(value)

        counts_column = row.get("counts_column")
        return cls(
            cell_type=row["cell_type"],
            peaks=Path(row["peaks"]),
            counts_column=None
            if counts_column is None or pd.isna(counts_column)
            else int(counts_column),
            counts_file=path(row.get("counts_file")),
            barcodes=path(row.get("barcodes")),
            motif_scan=Path(config["motif_scan"]),
            cluster_names=path(config["cluster_names"]),
            motif_to_cluster=path(config["motif_to_cluster"]),
            genome=config["genome"],
            section=config["prepare"],
            **run,
        )

    def fingerprint(self) -> str:
        """sha256 of every setting and input path that shapes the prepared files."""
        fields = {k: str(v) for k, v in dataclasses.asdict(self).items() if k != "section"}
        text = json.dumps([fields, self.section], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def window_params(self) -> dict[str, int]:
        keys = ("window_size", "max_span", "train_stride", "train_jitter", "seed")
        return {key: self.section[key] for key in keys}


def _kept_peaks(settings: PrepareSettings) -> tuple[pd.DataFrame, dict[str, int]]:
    """The cell type's peaks after :func:`~getdiff.genomics.peaks.load_peaks`, and the dropped
    counts."""
    section = settings.section
    barcodes = read_barcodes(settings.barcodes, settings.cell_type) if settings.barcodes else None
    table, dropped = load_peaks(
        settings.peaks,
        counts_column=settings.counts_column,
        counts_file=settings.counts_file,
        chromosomes=section["chromosomes"],
        drop_zero_accessibility=section["drop_zero_accessibility"],
        duplicate_peaks=section["duplicate_peaks"],
        barcodes=barcodes,
        barcode_file=settings.barcodes,
        chrom_naming=section["chrom_naming"],
        read_filter=read_filter(section["bam"]),
    )
    log.info(
        "%s: %d peaks kept from %s (dropped: %s)",
        settings.cell_type,
        len(table),
        settings.peaks,
        dropped,
    )
    _check_enough_peaks(settings.peaks, table["chrom"], section["window_size"])
    return table, dropped


def features_of_peaks(
    settings: PrepareSettings,
) -> tuple[pd.DataFrame, FeatureMatrix, dict[str, Any]]:
    """Kept peaks (coordinates + region_id), their (n, F) features and the shared metadata."""
    section = settings.section
    names = load_cluster_names(settings.cluster_names)
    if ACCESSIBILITY in names:
        raise InputError(
            settings.cluster_names or "cluster names",
            f"'{ACCESSIBILITY}' is reserved for the last feature",
        )
    mapping = (
        load_motif_mapping(settings.motif_to_cluster, names) if settings.motif_to_cluster else None
    )
    # The scan is parsed by a background thread while the peaks load: 0.2 s of a 1.4 s prepare.
    with scan_read_ahead(settings.motif_scan, settings.chunk_lines, settings.use_index) as ahead:
        table, dropped = _kept_peaks(settings)
        scores, scan_stats = aggregate_motif_scores(
            settings.motif_scan,
            table,
            names,
            mapping=mapping,
            chrom_naming=section["chrom_naming"],
            unknown_clusters=section["unknown_clusters"],
            chunk_lines=settings.chunk_lines,
            use_index=settings.use_index,
            ahead=ahead,
        )
    motifs, motif_max = normalise_motifs(scores)  # zero sums are dropped here
    del scores
    with_hits = int(np.count_nonzero(np.diff(motifs.indptr)))
    scan_stats["peaks_with_hits"] = with_hits
    check_match_rate(
        with_hits, len(table), "peaks with motif hits", settings.motif_scan, settings.peaks
    )
    has_counts = settings.counts_column is not None or settings.counts_file is not None
    counts = table["counts"].to_numpy() if has_counts else None
    accessibility, acc_scaling = normalise_accessibility(counts, len(table))
    features = FeatureMatrix(motifs, accessibility)
    regions = table[["chrom", "start", "end", "name"]].copy()
    regions["region_id"] = np.arange(len(regions), dtype=np.int64)
    meta: dict[str, Any] = {
        "feature_names": [*names, ACCESSIBILITY],
        "cell_type": settings.cell_type,
        "genome": settings.genome,
        "getdiff_version": __version__,
        "scaling": {"motif_max": motif_max, ACCESSIBILITY: acc_scaling},
        "n_regions": len(regions),
        "dropped_peaks": dropped,
        "motif_scan": {"path": str(settings.motif_scan), **scan_stats},
        "peaks": str(settings.peaks),
    }
    return regions, features, meta


def split_layouts(
    regions: pd.DataFrame, settings: PrepareSettings, split_chroms: dict[str, list[str]]
) -> dict[str, WindowLayout]:
    """The window layout of each split, with what was skipped logged."""
    params = settings.window_params
    name = settings.cell_type
    layouts = {}
    for split in SPLITS:
        layout = layout_windows(
            regions,
            split_chroms[split],
            training=split == "train",
            window_size=params["window_size"],
            max_span=params["max_span"],
            stride=params["train_stride"],
            jitter=params["train_jitter"],
            seed=params["seed"],
        )
        layouts[split] = layout
        if layout.skipped_chromosomes:
            log.warning(
                "%s %s: chromosomes with fewer than %d peaks skipped: %s",
                name,
                split,
                params["window_size"],
                layout.skipped_chromosomes,
            )
        if layout.skipped_max_span:
            log.info(
                "%s %s: %d windows spanning more than %d bp skipped",
                name,
                split,
                layout.skipped_max_span,
                params["max_span"],
            )
        if layout.over_max_span:
            log.warning(
                "%s %s: %d tiles span more than %d bp (kept so every region is covered)",
                name,
                split,
                layout.over_max_span,
                params["max_span"],
            )
        if len(layout.starts) == 0:
            log.warning(
                "%s: split %r has no window (chromosomes %s); writing an empty file",
                name,
                split,
                split_chroms[split],
            )
        log.info("%s %s: %d windows", name, split, len(layout.starts))
    return layouts


def prepare_cell_type(
    settings: PrepareSettings, outdir: str | Path, writers: int = 2
) -> dict[str, Path]:
    """Run the prepare stage for one cell type; returns the written paths (see module docstring).

    ``writers``: Parquet files written at a time (1-4)."""
    began = time.perf_counter()
    section = settings.section
    split_chroms = _split_chromosomes(
        section["chromosomes"], section["validation_chromosomes"], section["test_chromosomes"]
    )
    regions, features, meta = features_of_peaks(settings)
    paths = output_paths(outdir)
    meta["prepare_id"] = uuid.uuid4().hex
    # Every file goes to a temporary name first; all are renamed together once all are written,
    # the manifest (which readers check every file against) last. Parquet encoding releases the
    # GIL, so files are written in parallel, regions.parquet while the windows are laid out.
    pool = ThreadPoolExecutor(max(1, min(writers, 4)))
    with exclusive(outdir, "prepare"), output_set(paths) as tmp, pool:
        writes = [pool.submit(write_region_table, tmp["regions"], regions, features, meta)]
        for split, layout in split_layouts(regions, settings, split_chroms).items():
            chroms = sorted(pd.unique(regions["chrom"].iloc[layout.rows]), key=natural_chrom_key)
            split_meta = {
                **meta,
                "split": split,
                "chromosomes": [str(c) for c in chroms],
                "split_chromosomes": split_chroms[split],
                "skipped_chromosomes": layout.skipped_chromosomes,
                "windows_skipped_max_span": layout.skipped_max_span,
                "tiles_over_max_span": layout.over_max_span,
                **settings.window_params,
            }
            writes.append(
                pool.submit(
                    write_window_set,
                    tmp[split],
                    regions,
                    features,
                    layout.starts,
                    layout.score_from,
                    split_meta,
                    rows=layout.rows,
                )
            )
        for write in writes:
            write.result()
        files = {path.name: tmp[key] for key, path in paths.items() if key != MANIFEST}
        info = {
            "cell_type": settings.cell_type,
            "window_size": settings.section["window_size"],
            "feature_names": meta["feature_names"],
            "settings_fingerprint": settings.fingerprint(),
            "getdiff_version": __version__,
        }
        with open(tmp[MANIFEST], "w", encoding="utf-8") as handle:
            json.dump(manifest(meta["prepare_id"], files, info), handle, indent=2)
    log.info(
        "%s: prepared in %.2f s -> %s", settings.cell_type, time.perf_counter() - began, outdir
    )
    return paths


def prepare_from_config(
    config: dict[str, Any] | str | Path, cell_type: str, outdir: str | Path, writers: int = 2
) -> dict[str, Path]:
    """Run :func:`prepare_cell_type` with a config (validated dict or YAML path) and its sheet."""
    if not isinstance(config, dict):
        config = load_config(config)
    sheet = load_cell_types(config["cell_types"])
    if cell_type not in sheet.index:
        raise ConfigError(
            f"{config['cell_types']}: no cell type {cell_type!r}; known: {list(sheet.index)}"
        )
    row = sheet.loc[cell_type].to_dict()
    return prepare_cell_type(PrepareSettings.from_config(config, row), outdir, writers)


def run(args: argparse.Namespace) -> None:
    threads = args.threads
    if threads is not None:
        if threads < 1:
            raise GetdiffError(f"--threads must be >= 1, got {threads}")
        # pyarrow's pool (text parsing, Parquet) otherwise takes every core of the machine, not
        # the rule's share of it.
        pa.set_cpu_count(threads)
    writers = threads if threads is not None else len(os.sched_getaffinity(0))
    prepare_from_config(config_from_args(args), args.cell_type, args.outdir, writers)


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prepare",
        help="peaks + motif scan of one cell type -> region table and window tensors (Parquet)",
        description=__doc__.split("\n\n")[0],
    )
    add_config_arguments(parser)
    parser.add_argument("--cell-type", required=True, help="a cell_type of the cell-type sheet")
    parser.add_argument("--outdir", required=True, help="directory receiving the Parquet files")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for parsing and writing (default: every CPU this process may use)",
    )
    parser.set_defaults(func=run)


__all__ = [
    "PrepareSettings",
    "output_paths",
    "prepare_cell_type",
    "prepare_from_config",
    "register_cli",
]
