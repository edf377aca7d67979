"""Every stage's output names, in one place: the rules (workflow/rules/*.smk) and the commands
both take them from here, so a file is never spelled twice.

Under the config's ``results`` folder::

    scan/                    motif_scan.tsv.gz (+ .tbi), motifs.tsv, motif_names.txt
    prepare/<cell type>/     regions.parquet, windows_<split>.parquet, manifest.json
    train/<group>/           model.safetensors, adapter/, history.tsv, config.yaml, checkpoints/
    calibrate/<group>/       calibration.parquet
    evaluate/<group>/        metrics.json, metrics_per_feature.tsv, plots/
    impute/<group>/          <cell type>.parquet, <cell type>.h5ad
    tracks/<group>/          <cell type>.<track>.bw (getdiff.outputs.tracks.track_paths), loci/

A dict of names lists the output that marks a complete set first (``getdiff.io.output_set``
renames it in last). This module imports nothing but pathlib: the Snakemake process reads it.
"""

from __future__ import annotations

from pathlib import Path

SPLITS = ("train", "validation", "test")

# getdiff scan, in <results>/scan/: the scan first (it marks a complete set).
SCAN_DIR = "scan"
SCAN_FILES = {
    "scan": "motif_scan.tsv.gz",
    "index": "motif_scan.tsv.gz.tbi",
    "motifs": "motifs.tsv",
    "names": "motif_names.txt",
}

# getdiff prepare, in <results>/prepare/<cell type>/ (manifest.json is renamed in last).
REGIONS_FILE = "regions.parquet"
MANIFEST_FILE = "manifest.json"

# getdiff train, in <results>/train/<group>/: the model first (what the workflow waits for).
TRAIN_FILES = {
    "model": "model.safetensors",
    "adapter": "adapter",
    "history": "history.tsv",
    "config": "config.yaml",
}
TRAIN_DIRECTORIES = frozenset({"adapter"})
CHECKPOINTS_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"

# getdiff calibrate, in <results>/calibrate/<group>/.
CALIBRATION_FILE = "calibration.parquet"

# getdiff evaluate, in <results>/evaluate/<group>/: metrics.json first (the marker).
EVALUATE_FILES = {
    "metrics": "metrics.json",
    "per_feature": "metrics_per_feature.tsv",
    "plots": "plots",
}
EVALUATE_DIRECTORIES = frozenset({"plots"})

# getdiff interpret, in <results>/interpret/<group>/: the motif effects first (the marker).
INTERPRET_FILES = {
    "effects": "motif_effects.tsv",
    "distance": "context_by_distance.tsv",
    "plots": "plots",
}
INTERPRET_DIRECTORIES = frozenset({"plots"})


def windows_file(split: str) -> str:
    """File name of a split's windows inside a cell type's prepared folder."""
    return f"windows_{split}.parquet"


def imputation_file(cell_type: str) -> str:
    """getdiff impute's output of one cell type, in <results>/impute/<group>/."""
    return f"{cell_type}.parquet"


def anndata_file(cell_type: str) -> str:
    """getdiff export-h5ad's output of one cell type, beside its imputation."""
    return f"{cell_type}.h5ad"


def in_folder(folder: str | Path, names: dict[str, str]) -> dict[str, Path]:
    """``{key: folder / name}`` for a dict of output names, in its order."""
    return {key: Path(folder) / name for key, name in names.items()}
