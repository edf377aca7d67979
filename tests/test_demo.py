"""Demo data: deterministic files, formats the prepare stage reads, a context-predictable model."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from getdiff.cli import main
from getdiff.config import load_cell_types, load_config
from getdiff.demo import CELL_TYPES, HG38_SIZES, write_demo_data
from getdiff.errors import ConfigError
from getdiff.genomics.motif_scores import load_cluster_names
from getdiff.prepare import prepare_from_config
from getdiff.tensors import load_window_set

SMALL_DEMO_CHROMOSOMES = {"chr1", "chr10", "chr11", "chr21"}  # as in conftest.small_demo


def read_table(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", header=None, compression="gzip")


def file_bytes(paths: dict[str, Path]) -> dict[str, bytes]:
    files = {key: path.read_bytes() for key, path in paths.items()}
    index = Path(f"{paths['motif_scan']}.tbi")
    if index.exists():
        files["tbi"] = index.read_bytes()
    return files


def test_same_seed_gives_identical_files(tmp_path):
    kwargs = dict(peaks_per_cell_type=300, chromosomes=["chr21", "chr22"], seed=5)
    a = write_demo_data(tmp_path / "a", **kwargs)
    b = write_demo_data(tmp_path / "b", **kwargs)
    bytes_a, bytes_b = file_bytes(a), file_bytes(b)
    for key in ("config", "cell_types"):  # these name their own directory
        bytes_a.pop(key), bytes_b.pop(key)
    assert bytes_a == bytes_b


def test_other_seed_gives_other_peaks(tmp_path):
    a = write_demo_data(tmp_path / "a", 300, ["chr21", "chr22"], seed=1)
    b = write_demo_data(tmp_path / "b", 300, ["chr21", "chr22"], seed=2)
    assert a["peaks_demo_liver"].read_bytes() != b["peaks_demo_liver"].read_bytes()


def test_writes_three_cell_types_scan_sheet_and_config(small_demo):
    assert set(small_demo) == {
        *(f"peaks_{c}" for c in CELL_TYPES),
        "motif_scan",
        "genome_fasta",
        "motifs",
        "planted_effects",
        "cell_types",
        "config",
    }
    assert CELL_TYPES == ("demo_myeloid", "demo_liver", "demo_lymphoid")


def test_peak_files_are_narrowpeak_with_positive_integer_counts_in_column_7(small_demo):
    for cell_type in CELL_TYPES:
        table = read_table(small_demo[f"peaks_{cell_type}"])
        assert table.shape == (600, 10)
        assert pd.api.types.is_integer_dtype(table[6]) and table[6].min() > 0
        assert set(table[0]) == SMALL_DEMO_CHROMOSOMES
        assert (table[1] < table[2]).all() and (table[1] >= 0).all()
        fai = pd.read_csv(f"{small_demo['genome_fasta']}.fai", sep="\t", header=None, index_col=0)
        assert (table[2] <= table[0].map(fai[1])).all()
        assert (table[2] <= table[0].map(HG38_SIZES)).all()


def test_cell_types_share_about_sixty_percent_of_peaks(small_demo):
    keys = [
        set(map(tuple, read_table(small_demo[f"peaks_{c}"])[[0, 1, 2]].to_numpy().tolist()))
        for c in CELL_TYPES
    ]
    shared = keys[0] & keys[1] & keys[2]
    assert len(shared) == 360
    assert len(keys[0] - keys[1] - keys[2]) == 240


def test_peaks_are_spread_in_proportion_to_chromosome_size(small_demo):
    table = read_table(small_demo["peaks_demo_myeloid"])
    per_chrom = table[0].value_counts()
    assert per_chrom["chr1"] > per_chrom["chr10"] > per_chrom["chr21"]


def test_scan_uses_known_clusters_and_is_sorted_for_tabix(small_demo):
    scan = read_table(small_demo["motif_scan"])
    assert set(scan[3]) <= set(load_cluster_names())
    assert (scan[4] > 0).all()
    for _, block in scan.groupby(0, sort=False):
        assert block[1].is_monotonic_increasing
    with gzip.open(small_demo["motif_scan"], "rt") as handle:
        assert len(handle.readline().split("\t")) == 6


def test_scan_has_a_tabix_index_when_pysam_is_available(small_demo):
    pytest.importorskip("pysam")
    assert Path(f"{small_demo['motif_scan']}.tbi").exists()


def test_sheet_and_config_are_valid_and_point_at_the_files(small_demo):
    config = load_config(small_demo["config"])
    assert Path(config["genome_fasta"]) == small_demo["genome_fasta"]
    assert Path(config["motifs"]) == small_demo["motifs"]
    assert config["motif_scan"] == "results/scan/motif_scan.tsv.gz"  # the workflow scans
    sheet = load_cell_types(config["cell_types"])
    assert list(sheet.index) == list(CELL_TYPES)
    assert sheet["counts_column"].tolist() == [7, 7, 7]
    assert [Path(p) for p in sheet["peaks"]] == [small_demo[f"peaks_{c}"] for c in CELL_TYPES]


def test_relative_out_gives_relative_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = write_demo_data("rel", 200, ["chr21", "chr22"], seed=0)
    sheet = pd.read_csv(paths["cell_types"], sep="\t")
    assert sheet["peaks"].tolist() == [f"rel/peaks/{c}.narrowPeak.gz" for c in CELL_TYPES]
    assert load_config(paths["config"])["genome_fasta"] == "rel/genome.fa.gz"


def test_unknown_chromosome_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown chromosome\(s\) \['chr99'\]"):
        write_demo_data(tmp_path, 300, ["chr1", "chr99"])


def test_cli_writes_the_demo(tmp_path):
    out = tmp_path / "cli"
    args = ["demo-data", "--out", str(out), "--peaks-per-cell-type", "200"]
    assert main([*args, "--chromosomes", "chr21,chr22", "--seed", "4"]) == 0
    assert (out / "peaks" / "demo_lymphoid.narrowPeak.gz").exists()
    assert (out / "config.yaml").exists()


def test_accessibility_varies_between_windows_more_than_chance(tmp_path):
    """The window-scale latent makes window means differ: between-window variance >> var / W."""
    paths = write_demo_data(tmp_path / "demo", 3000, ["chr21", "chr22"], seed=0)
    config = load_config(paths["config"])
    config.update(motif_scan=str(paths["motif_scan"]), cluster_names=None)  # the planted hits
    config["prepare"].update(
        window_size=50,
        train_stride=50,
        train_jitter=0,
        validation_chromosomes=[],
        test_chromosomes=["chr22"],
    )
    prepared = prepare_from_config(config, "demo_myeloid", tmp_path / "prep")
    accessibility = load_window_set(prepared["train"]).windows()[:, :, -1]
    between = accessibility.mean(axis=1).var()
    chance = accessibility.var() / accessibility.shape[1]
    assert between > 3 * chance


def test_scanning_the_demo_genome_finds_the_planted_motifs(small_demo, tmp_path):
    """The planted instances (the demo's motif_scan.bed.gz) are found by getdiff scan at the
    default p < 1e-4, beside the chance matches every real scan has."""
    from getdiff.genomics.scan import ScanSettings, scan_motifs

    config = load_config(small_demo["config"])
    result = scan_motifs(ScanSettings.from_config(config, 1), tmp_path / "scan")
    columns = ["chrom", "start", "end", "name"]
    planted = read_table(small_demo["motif_scan"]).iloc[:, :4].set_axis(columns, axis=1)
    found = read_table(result.paths["scan"]).iloc[:, :4].set_axis(columns, axis=1)
    recovered = planted.merge(found, on=columns, how="left", indicator=True)["_merge"] == "both"
    assert recovered.mean() > 0.85
    assert len(found) < 4 * len(planted)


def test_planted_effects_name_every_cluster_per_cell_type(small_demo):
    planted = pd.read_csv(small_demo["planted_effects"], sep="\t", keep_default_na=False)
    names = load_cluster_names()
    for cell_type in CELL_TYPES:
        rows = planted[planted["cell_type"] == cell_type]
        single = rows[rows["kind"] != "cooperative"]
        assert single["motif"].tolist() == names  # one cis or neighbour weight per cluster
        assert (single["kind"] == "neighbour").sum() == 6
        assert (single.loc[single["kind"] == "neighbour", "decay_bp"] == 20000).all()
        pairs = rows[rows["kind"] == "cooperative"]
        assert len(pairs) == 3 and set(pairs["partner"]) <= set(names)
    cis = planted[planted["kind"] == "cis"].pivot(
        index="motif", columns="cell_type", values="weight"
    )
    assert (cis != 0).all().all()  # every cluster has a cis weight, differing between cell types
    assert cis.corr().min().min() < 0.9


def test_neighbour_acting_motifs_shift_the_peaks_around_them(tmp_path):
    """A peak's log count rises with the neighbour-acting motifs of positive weight within 20 kb
    around it (its own motifs aside), and falls with those of negative weight."""
    import numpy as np

    paths = write_demo_data(tmp_path / "demo", 20000, ["chr1", "chr2"], seed=0)
    planted = pd.read_csv(paths["planted_effects"], sep="\t", keep_default_na=False)
    cell_type = CELL_TYPES[0]
    acting = planted[(planted["cell_type"] == cell_type) & (planted["kind"] == "neighbour")]
    peaks = read_table(paths[f"peaks_{cell_type}"]).iloc[:, [0, 1, 2, 6]]
    peaks.columns = ["chrom", "start", "end", "count"]
    hits = read_table(paths["motif_scan"]).iloc[:, [0, 1, 3]]
    hits.columns = ["chrom", "start", "motif"]
    for sign in (1, -1):
        motifs = set(acting.loc[np.sign(acting["weight"]) == sign, "motif"])
        near = np.zeros(len(peaks))
        for chrom, group in peaks.groupby("chrom"):
            middle = ((group["start"] + group["end"]) / 2).to_numpy()
            at = hits[(hits["chrom"] == chrom) & hits["motif"].isin(motifs)]["start"].to_numpy()
            at = np.sort(at)
            around = np.searchsorted(at, middle + 20_000) - np.searchsorted(at, middle - 20_000)
            own = np.searchsorted(at, group["end"]) - np.searchsorted(at, group["start"])
            near[group.index] = around - own
        r = np.corrcoef(near, np.log(peaks["count"]))[0, 1]
        assert sign * r > 0.05, (sign, r)
