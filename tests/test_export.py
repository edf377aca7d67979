"""What a biologist opens: the AnnData export (getdiff export-h5ad) and the locus view
(getdiff plot-locus)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from getdiff.cli import main
from getdiff.config import validate_config
from getdiff.errors import GetdiffError
from getdiff.outputs.export import build_anndata, config_hash
from getdiff.outputs.locus import (
    Region,
    check_region,
    default_locus,
    parse_region,
    read_locus_table,
)
from getdiff.tensors import MANIFEST, manifest, write_region_table

MOTIFS = ["A", "B/1", "C"]
FEATURES = [*MOTIFS, "accessibility"]
ACC = "accessibility"


def write_prepared(path: Path, n: int = 40, cell_type: str = "liver") -> pd.DataFrame:
    """A regions.parquet of ``n`` peaks on chr1 and chr11 with sparse motif features."""
    rng = np.random.default_rng(0)
    chrom = np.where(np.arange(n) < n // 2, "chr1", "chr11")
    start = np.tile(np.arange(n // 2) * 1000, 2)
    regions = pd.DataFrame(
        {
            "chrom": chrom,
            "start": start,
            "end": start + 400,
            "name": [f"peak{i}" for i in range(n)],
            "region_id": np.arange(n),
        }
    )
    features = rng.random((n, len(FEATURES))).astype(np.float32)
    features[:, :-1][features[:, :-1] < 0.6] = 0  # sparse motif columns
    meta = {
        "feature_names": FEATURES,
        "cell_type": cell_type,
        "genome": "hg38",
        "scaling": {"motif_max": [2.0, 3.0, 4.0], "accessibility": {"constant": True}},
        "getdiff_version": "0.1.0",
        "prepare_id": "abc",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_region_table(path, regions, features, meta)
    listing = manifest("abc", {path.name: path}, {"cell_type": cell_type})
    (path.parent / MANIFEST).write_text(json.dumps(listing))
    return pd.concat([regions, pd.DataFrame(features, columns=FEATURES)], axis=1)


def write_imputation(path: Path, prepared: pd.DataFrame, missing: int | None = None) -> Path:
    """An impute table of the chr11 regions (the test split) with intervals."""
    rows = prepared[prepared["chrom"] == "chr11"].reset_index(drop=True)
    observed = rows[ACC].to_numpy(np.float64)
    imputed = observed * 0.8 + 0.1
    table = rows[["chrom", "start", "end", "name", "region_id"]].assign(
        split="test", missing=np.arange(len(rows)) == missing
    )
    for prefix, values in {
        "observed": observed,
        "imputed": imputed,
        "imputed_lower": imputed - 0.1,
        "imputed_upper": imputed + 0.2,
    }.items():
        table[f"{prefix}.{ACC}"] = values
        table[f"{prefix}_raw.{ACC}"] = values * 100
    info = {
        "cell_type": "liver",
        "genome": "hg38",
        "feature_names": FEATURES,
        "model": "results/train/all/model.safetensors",
        "intervals": {"level": 0.9, "calibration_split": "validation"},
        "getdiff_version": "0.1.0",
    }
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    meta = {**(arrow.schema.metadata or {}), b"getdiff": json.dumps(info).encode()}
    pq.write_table(arrow.replace_schema_metadata(meta), path)
    return path


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path, pd.DataFrame]:
    regions = tmp_path / "prepare" / "liver" / "regions.parquet"
    prepared = write_prepared(regions)
    imputation = write_imputation(tmp_path / "liver.parquet", prepared, missing=3)
    return imputation, regions, prepared


CONFIG = validate_config({"cell_types": "cell_types.tsv", "motif_scan": "scan.bed"})


# --- AnnData -----------------------------------------------------------------------------------


def test_h5ad_round_trips_with_obs_x_var_and_provenance(tmp_path, inputs):
    import anndata as ad

    imputation, regions, prepared = inputs
    output = tmp_path / "out" / "liver.h5ad"
    args = ["export-h5ad", "--config-json", json.dumps(CONFIG), "--imputation", str(imputation)]
    assert main([*args, "--regions", str(regions), "--output", str(output)]) == 0
    adata = ad.read_h5ad(output)
    table = pd.read_parquet(imputation)
    assert adata.shape == (len(table), len(MOTIFS))
    assert list(adata.var_names) == MOTIFS
    assert adata.var["motif_max"].tolist() == [2.0, 3.0, 4.0]
    assert adata.obs_names[0] == f"chr11:{table['start'][0]}-{table['end'][0]}"
    for column in ("chrom", "start", "end", "name", "region_id", "split", "missing"):
        assert adata.obs[column].astype(table[column].dtype).tolist() == table[column].tolist()
    for prefix in ("observed", "imputed", "imputed_lower", "imputed_upper"):
        for unit in ("", "_raw"):
            name = f"{prefix}{unit}.{ACC}"
            np.testing.assert_array_equal(adata.obs[name].to_numpy(), table[name].to_numpy())
    assert adata.obs["missing"].sum() == 1
    # X is the prepared motif matrix of the same regions, sparse, float32
    from scipy import sparse

    assert sparse.issparse(adata.X) and adata.X.dtype == np.float32
    expected = prepared.set_index("region_id").loc[table["region_id"], MOTIFS].to_numpy()
    np.testing.assert_array_equal(adata.X.toarray(), expected)
    assert adata.X.nnz == np.count_nonzero(expected)
    uns = adata.uns["getdiff"]
    assert uns["model"] == "results/train/all/model.safetensors"
    assert uns["config_sha256"] == config_hash(CONFIG) and len(uns["config_sha256"]) == 64
    assert uns["getdiff_version"] and uns["cell_type"] == "liver" and uns["prepare_id"] == "abc"
    assert uns["interval_level"] == 0.9
    assert json.loads(uns["impute_metadata"])["intervals"]["calibration_split"] == "validation"
    assert [p.name for p in output.parent.iterdir()] == ["liver.h5ad"]  # no temporary left


def test_config_hash_ignores_sections_that_do_not_shape_the_imputation():
    other = validate_config(
        {"cell_types": "cell_types.tsv", "motif_scan": "scan.bed", "evaluate": {"num_samples": 3}}
    )
    changed = validate_config(
        {"cell_types": "cell_types.tsv", "motif_scan": "scan.bed", "impute": {"seed": 5}}
    )
    assert config_hash(other) == config_hash(CONFIG)
    assert config_hash(changed) != config_hash(CONFIG)


def test_var_lists_the_motifs_of_each_cluster_when_a_mapping_is_configured(tmp_path, inputs):
    imputation, regions, _ = inputs
    mapping = tmp_path / "map.tsv"
    mapping.write_text("MA1\tA\nMA2\tA\nMA3\tC\n")
    adata = build_anndata(imputation, regions, {**CONFIG, "motif_to_cluster": str(mapping)})
    assert adata.var["motifs"].tolist() == ["MA1,MA2", "", "MA3"]


def test_regions_of_another_run_are_refused_naming_both_files(tmp_path, inputs):
    imputation, _, _ = inputs
    other = tmp_path / "other" / "regions.parquet"
    write_prepared(other, n=20)  # fewer regions: the ids do not fit
    with pytest.raises(GetdiffError, match="region_id up to .* has 20 regions"):
        build_anndata(imputation, other, CONFIG)
    write_prepared(other, n=40, cell_type="blood")
    with pytest.raises(GetdiffError, match="is cell type 'blood'"):
        build_anndata(imputation, other, CONFIG)


# --- locus view --------------------------------------------------------------------------------


def test_plot_locus_writes_a_png_for_a_region_given_by_the_user(tmp_path, inputs):
    imputation, _, _ = inputs
    output = tmp_path / "locus.png"
    args = ["plot-locus", "--imputation", str(imputation), str(imputation)]
    assert main([*args, "--region", "chr11:1,500-6,000", "--output", str(output)]) == 0
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_default_locus_centres_on_the_strongest_peak_of_the_chromosome(tmp_path, inputs):
    imputation, _, _ = inputs
    table = read_locus_table(imputation)
    strongest = table.loc[table[f"observed_raw.{ACC}"].idxmax()]
    region = default_locus(table, "chr11", n_peaks=5)
    assert region.chrom == "chr11" and region.start <= strongest["start"] < region.end
    shown = table[(table["start"] < region.end) & (table["end"] > region.start)]
    assert len(shown) == 5
    assert default_locus(table, "chr5", n_peaks=5).chrom == "chr11"  # not imputed: fallback


def test_outdir_holds_the_default_locus_and_each_given_region(tmp_path, inputs):
    imputation, _, _ = inputs
    outdir = tmp_path / "loci"
    args = ["plot-locus", "--imputation", str(imputation), "--default-chromosome", "chr11"]
    assert main([*args, "--region", "chr11:0-2000", "--outdir", str(outdir)]) == 0
    names = sorted(p.name for p in outdir.iterdir())
    assert len(names) == 2 and "chr11_0-2000.png" in names


@pytest.mark.parametrize(
    ("region", "message"),
    [
        ("chr7:100-200", "unknown chromosome 'chr7'; the imputations hold chr11"),
        ("chr11:500-500", "is empty: start 500 >= end 500"),
        ("chr11:450-950", "outside every imputed peak; the nearest is chr11:0-400 (50 bp away)"),
        ("chr11-100-200", "expected chrom:start-end"),
    ],
)
def test_a_bad_region_is_a_one_line_error(tmp_path, inputs, capsys, region, message):
    imputation, _, _ = inputs
    args = ["plot-locus", "--imputation", str(imputation), "--region", region]
    assert main([*args, "--output", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("getdiff plot-locus: error: ") and message in err[-1]
    assert not (tmp_path / "x.png").exists()


def test_parse_region_accepts_commas_and_check_region_accepts_a_partial_overlap(inputs):
    assert parse_region("chr11:1,000-2,500") == Region("chr11", 1000, 2500)
    table = read_locus_table(inputs[0])
    check_region(Region("chr11", 399, 401), [table])  # overlaps chr11:0-400 by one base
