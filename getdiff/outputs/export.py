"""AnnData (.h5ad) export of an imputation, for the scverse stack (scanpy, snapATAC2, muon).

Contract. ``getdiff export-h5ad`` joins one cell type's imputation table (getdiff impute) with
its prepared ``regions.parquet`` on ``region_id`` and writes one AnnData:

- ``obs``: one row per imputed region, in the table's order, indexed ``chrom:start-end``:
  ``chrom``, ``start``, ``end``, ``name``, ``region_id``, ``split`` (categorical), ``missing``
  (bool), then every ``observed*``/``imputed*`` column of the table for accessibility, by its
  table name (``observed.accessibility``, ``imputed_raw.accessibility``,
  ``imputed_lower_raw.accessibility``, ...; normalised and raw units as in the table).
- ``X``: the (regions x motif features) matrix as prepared, float32 CSR, normalised to [0, 1]
  (``raw = X * var["motif_max"]``).
- ``var``: indexed by the feature (cluster) names in feature order; ``motif_max`` (the scaling
  constant) and, when ``motif_to_cluster`` is configured, ``motifs`` (the motifs mapped to the
  cluster, comma-separated).
- ``uns["getdiff"]``: provenance: ``cell_type``, ``genome``, ``model``, ``config_sha256`` (of
  the settings that shape the imputation, :func:`config_hash`), ``getdiff_version`` (of this
  export and, as ``impute_getdiff_version``, of the imputation), ``prepare_id``, the input
  paths, ``interval_level`` (when the table has intervals), and ``impute_metadata`` (the
  table's own metadata as JSON, without the feature names and scaling already in ``var``).

Written aside and renamed in (a kill leaves no partial file).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from getdiff import __version__
from getdiff.config import TOP_LEVEL_KEYS, add_config_arguments, config_from_args
from getdiff.errors import InputError
from getdiff.io import atomic_path
from getdiff.tensors import ACCESSIBILITY, METADATA_KEY, load_regions

log = logging.getLogger(__name__)

# The config sections whose settings shape an imputation (with the top-level inputs): what
# config_sha256 hashes, whether the export runs from the workflow or by hand.
HASHED_SECTIONS = ("prepare", "task", "model", "diffusion", "train", "calibrate", "impute")
OBS_COORDINATES = ["chrom", "start", "end", "name", "region_id", "split", "missing"]


def config_hash(config: dict[str, Any]) -> str:
    """sha256 of the top-level inputs and :data:`HASHED_SECTIONS` of a validated config, as
    JSON with sorted keys."""
    keys = [*TOP_LEVEL_KEYS, *HASHED_SECTIONS]
    subset = {key: config[key] for key in keys if key in config}
    return hashlib.sha256(json.dumps(subset, sort_keys=True, default=str).encode()).hexdigest()


def _table_metadata(path: str | Path) -> dict[str, Any]:
    try:
        raw = pq.read_schema(path).metadata or {}
    except (OSError, ValueError) as err:
        raise InputError(path, f"not a readable Parquet file ({err})") from None
    if METADATA_KEY not in raw:
        raise InputError(path, "no getdiff metadata; expected a table written by getdiff impute")
    return json.loads(raw[METADATA_KEY])


def _obs(table: pd.DataFrame) -> pd.DataFrame:
    obs = table.copy()
    obs["chrom"] = pd.Categorical(obs["chrom"].astype(str))
    obs["split"] = pd.Categorical(obs["split"].astype(str))
    obs["name"] = obs["name"].astype(str).astype(object)
    obs["missing"] = obs["missing"].astype(bool)
    obs.index = pd.Index(
        [
            f"{c}:{s}-{e}"
            for c, s, e in zip(table["chrom"], table["start"], table["end"], strict=True)
        ],
        dtype=object,
    )
    return obs


def _cluster_motifs(mapping: str | Path | None, names: list[str]) -> list[str] | None:
    """Per cluster, the comma-joined motifs that ``motif_to_cluster`` maps to it."""
    if not mapping:
        return None
    from getdiff.genomics.motif_scores import load_motif_mapping

    members: dict[str, list[str]] = {name: [] for name in names}
    for motif, cluster in load_motif_mapping(mapping, names).items():
        members[cluster].append(motif)
    return [",".join(members[name]) for name in names]


def build_anndata(
    imputation: str | Path,
    regions_path: str | Path,
    config: dict[str, Any] | None = None,
    feature: str = ACCESSIBILITY,
) -> Any:
    """The AnnData of the module docstring (not written)."""
    import anndata as ad
    from scipy import sparse

    info = _table_metadata(imputation)
    names = pq.read_schema(imputation).names
    missing = [c for c in OBS_COORDINATES if c not in names]
    if missing:
        raise InputError(imputation, f"no column {missing[0]!r}; expected a getdiff impute table")
    # Only the coordinates and the feature's columns: a task-all table holds 6 per feature.
    wanted = [*OBS_COORDINATES, *[n for n in names if n.endswith(f".{feature}")]]
    table = pq.read_table(imputation, columns=wanted).to_pandas()
    regions = load_regions(regions_path)
    meta = regions.attrs["getdiff"]
    if meta["cell_type"] != info.get("cell_type", meta["cell_type"]):
        raise InputError(
            regions_path,
            f"is cell type {meta['cell_type']!r}, the imputation {imputation} is "
            f"{info['cell_type']!r}; expected the same cell type's prepared regions",
        )
    motif_names = [n for n in meta["feature_names"] if n != ACCESSIBILITY]
    ids = table["region_id"].to_numpy()
    if len(ids) and (ids.min() < 0 or ids.max() >= len(regions)):
        raise InputError(
            imputation,
            f"region_id up to {ids.max()} but {regions_path} has {len(regions)} regions; "
            "expected the prepared regions the imputation was made from (rerun getdiff impute)",
        )
    rows = regions.iloc[ids]
    same = (rows["start"].to_numpy() == table["start"].to_numpy()) & (
        rows["end"].to_numpy() == table["end"].to_numpy()
    )
    if not same.all():
        at = int(np.flatnonzero(~same)[0])
        raise InputError(
            imputation,
            f"region_id {ids[at]} is {table['chrom'].iloc[at]}:{table['start'].iloc[at]}-"
            f"{table['end'].iloc[at]} here but not in {regions_path}; expected the prepared "
            "regions the imputation was made from (rerun getdiff impute)",
        )
    matrix = sparse.csr_matrix(rows[motif_names].to_numpy(np.float32))
    scaling = meta["scaling"]
    var = pd.DataFrame(
        {"motif_max": np.asarray(scaling["motif_max"], np.float64)},
        index=pd.Index(motif_names, dtype=object),
    )
    motifs = _cluster_motifs((config or {}).get("motif_to_cluster"), motif_names)
    if motifs is not None:
        var["motifs"] = motifs
    provenance = {
        "cell_type": str(meta["cell_type"]),
        "genome": str(meta["genome"]),
        "model": str(info.get("model", "")),
        "config_sha256": config_hash(config) if config is not None else "",
        "getdiff_version": __version__,
        "impute_getdiff_version": str(info.get("getdiff_version", "")),
        "prepare_id": str(meta.get("prepare_id", "")),
        "imputation": str(imputation),
        "regions": str(regions_path),
        "impute_metadata": json.dumps(
            {k: v for k, v in info.items() if k not in ("feature_names", "scaling")}
        ),
    }
    if info.get("intervals"):
        provenance["interval_level"] = float(info["intervals"]["level"])
    return ad.AnnData(X=matrix, obs=_obs(table), var=var, uns={"getdiff": provenance})


def write_h5ad(adata: Any, output: str | Path) -> None:
    with atomic_path(output) as tmp:
        adata.write_h5ad(tmp)


def run(args: argparse.Namespace) -> None:
    config = config_from_args(args)
    adata = build_anndata(args.imputation, args.regions, config)
    write_h5ad(adata, args.output)
    log.info("wrote %s (%d regions x %d features)", args.output, *adata.shape)


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export-h5ad",
        help="AnnData (.h5ad) of a cell type's imputation and prepared motif features",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(parser)
    parser.add_argument("--imputation", required=True, help="Parquet from getdiff impute")
    parser.add_argument("--regions", required=True, help="the cell type's prepared regions.parquet")
    parser.add_argument("--output", required=True, help=".h5ad file to write")
    parser.set_defaults(func=run)
