"""The prepare stage end to end: hand-computed outputs, splits, order invariance, errors, CLI."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import prepare_with

from getdiff.cli import main
from getdiff.errors import InputError
from getdiff.prepare import output_paths
from getdiff.tensors import load_regions, load_window_set, load_windows

PEAK_LINES = [
    "track name=peaks",
    "chr2\t100\t200\tp3\t4",
    "chr1\t500\t600\tp2\t2",
    "chr1\t100\t200\tp1\t1",
    "chr1\t900\t950\tp0\t0",
    "chr10\t10\t20\tp4\t1",
    "chr10\t50\t60\tp5\t3",
    "chrY\t1\t10\tpy\t5",
    "chr2\t300\t400\tp6\t8",
]
SCAN_LINES = [
    "chr1\t150\t160\tA\t2",
    "chr1\t550\t560\tA\t4",
    "chr1\t590\t610\tB\t1",
    "chr2\t100\t101\tC\t3",
    "chr2\t350\t351\tC\t6",
    "chr10\t15\t16\tB\t2",
]
SETTINGS = dict(
    cell_type="toy",
    counts_column=5,
    window_size=2,
    max_span=10**6,
    train_stride=1,
    train_jitter=0,
    validation_chromosomes=["chr10"],
    test_chromosomes=["chr2"],
)


@pytest.fixture
def toy(tmp_path, write_lines, tiny_clusters):
    """Hand-made peaks + scan + 3 clusters; returns the keyword arguments of prepare_cell_type."""
    return dict(
        peaks=write_lines(tmp_path / "toy.bed", PEAK_LINES),
        motif_scan=write_lines(tmp_path / "scan.bed", SCAN_LINES),
        cluster_names=tiny_clusters,
        outdir=tmp_path / "out",
        **SETTINGS,
    )


def test_region_table_matches_hand_computed_values(toy):
    prepare_with(**toy)
    table = load_regions(toy["outdir"] / "regions.parquet")
    assert table["name"].tolist() == ["p1", "p2", "p3", "p6", "p4", "p5"]
    assert table["region_id"].tolist() == list(range(6))
    np.testing.assert_allclose(table["A"], [0.5, 1, 0, 0, 0, 0])
    np.testing.assert_allclose(table["B"], [0, 0.5, 0, 0, 1, 0])
    np.testing.assert_allclose(table["C"], [0, 0, 0.5, 1, 0, 0])
    counts = np.array([1, 2, 4, 8, 1, 3])
    acpm = np.log10(counts / counts.sum() * 1e5 + 1)
    np.testing.assert_allclose(table["accessibility"], acpm / acpm.max(), rtol=1e-6)
    assert list(table.columns)[-1] == "accessibility"


def test_metadata_records_scaling_drops_and_provenance(toy):
    prepare_with(**toy)
    meta = load_regions(toy["outdir"] / "regions.parquet").attrs["getdiff"]
    assert meta["feature_names"] == ["A", "B", "C", "accessibility"]
    assert meta["scaling"]["motif_max"] == [4.0, 2.0, 6.0]
    assert meta["scaling"]["accessibility"]["total_counts"] == 19.0
    assert meta["dropped_peaks"] == {"chromosome_not_selected": 1, "zero_accessibility": 1}
    assert meta["cell_type"] == "toy" and meta["genome"] == "hg38"
    assert "getdiff_version" in meta


def test_each_split_holds_its_chromosomes_windows(toy):
    paths = prepare_with(**toy)
    train = load_window_set(paths["train"])
    validation = load_window_set(paths["validation"])
    test = load_window_set(paths["test"])
    assert train.regions["name"].tolist() == ["p1", "p2"]
    assert validation.regions["name"].tolist() == ["p4", "p5"]
    assert test.regions["name"].tolist() == ["p3", "p6"]
    assert (train.meta["split"], validation.meta["split"], test.meta["split"]) == (
        "train",
        "validation",
        "test",
    )
    windows, meta = load_windows(paths["test"])
    assert windows.shape == (1, 2, 4)
    np.testing.assert_allclose(windows[0, :, 2], [0.5, 1.0])
    assert meta["window_size"] == 2


def test_split_without_windows_is_a_valid_empty_file_with_a_warning(toy, caplog):
    caplog.set_level(logging.WARNING)
    paths = prepare_with(**{**toy, "test_chromosomes": ["chr22"]})
    windows, meta = load_windows(paths["test"])
    assert windows.shape == (0, 2, 4)
    assert meta["n_windows"] == 0
    assert "split 'test' has no window" in caplog.text


def test_peaks_without_counts_get_constant_accessibility(toy):
    prepare_with(**{**toy, "counts_column": None})
    table = load_regions(toy["outdir"] / "regions.parquet")
    assert table["accessibility"].tolist() == [1.0] * 7  # the zero-count peak is kept
    assert table.attrs["getdiff"]["scaling"]["accessibility"]["constant"] is True


def test_counts_file_supplies_accessibility(toy, tmp_path, write_lines):
    fields = [line.split("\t") for line in PEAK_LINES[1:]]
    counts = write_lines(tmp_path / "counts.bg", ["\t".join(f[:3] + f[4:5]) for f in fields])
    prepare_with(**{**toy, "counts_column": None, "counts_file": counts})
    expected = load_regions(toy["outdir"] / "regions.parquet")
    prepare_with(**{**toy, "outdir": tmp_path / "again"})
    reference = load_regions(tmp_path / "again" / "regions.parquet")
    np.testing.assert_array_equal(expected["accessibility"], reference["accessibility"])


@pytest.mark.parametrize("seed", range(5))
def test_shuffled_peak_lines_give_the_same_values_at_the_same_coordinates(
    tmp_path, write_lines, tiny_clusters, seed
):
    rng = np.random.default_rng(seed)
    lines = [
        f"chr{c}\t{s}\t{s + 40}\tpk{c}_{s}\t{1 + (s * 7 + c) % 23}"
        for c in (1, 2, 10)
        for s in range(0, 2000, 100)
    ]
    scan = [
        f"chr{c}\t{s}\t{s + 5}\t{'ABC'[s % 3]}\t{s % 11 + 1}"
        for c in (1, 2, 10)
        for s in range(0, 2100, 37)
    ]
    common = dict(
        motif_scan=write_lines(tmp_path / "scan.bed", scan),
        cluster_names=tiny_clusters,
        **{**SETTINGS, "window_size": 5, "train_stride": 3, "train_jitter": 2},
    )
    prepare_with(peaks=write_lines(tmp_path / "a.bed", lines), outdir=tmp_path / "a", **common)
    shuffled = [lines[i] for i in rng.permutation(len(lines))]
    prepare_with(peaks=write_lines(tmp_path / "b.bed", shuffled), outdir=tmp_path / "b", **common)
    a = load_regions(tmp_path / "a" / "regions.parquet")
    b = load_regions(tmp_path / "b" / "regions.parquet")
    pd.testing.assert_frame_equal(a, b)
    for split in ("train", "validation", "test"):
        wa = load_window_set(tmp_path / "a" / f"windows_{split}.parquet")
        wb = load_window_set(tmp_path / "b" / f"windows_{split}.parquet")
        np.testing.assert_array_equal(wa.windows(), wb.windows())
        pd.testing.assert_frame_equal(wa.regions, wb.regions)


def bad_peaks(toy, write_lines):
    lines = list(PEAK_LINES)
    lines[3] = "chr1\t100\t90\tp1\t1"
    return {"peaks": write_lines(toy["peaks"], lines)}, f"{toy['peaks']}:4: start must be < end"


def bad_scan(toy, write_lines):
    lines = [*SCAN_LINES, "chr1\t1\t2\tA\tNaN"]
    scan = write_lines(toy["motif_scan"], lines)
    return {"motif_scan": scan}, f"{scan}:7: score (column 5) must be a finite number"


def unknown_cluster(toy, write_lines):
    scan = write_lines(toy["motif_scan"], [*SCAN_LINES[:2], "chr1\t1\t2\tD\t1"])
    return {"motif_scan": scan}, f"{scan}:3: unknown motif cluster 'D'"


def chrom_mismatch(toy, write_lines):
    scan = write_lines(toy["motif_scan"], [line[3:] for line in SCAN_LINES])
    return {"motif_scan": scan}, f"{scan}:1: chromosome naming mismatch"


def too_few_peaks(toy, write_lines):
    return {"window_size": 3}, (
        f"{toy['peaks']}: no chromosome has at least window_size=3 kept peaks (6 peaks on 3 "
        "chromosomes; most: chr1 with 2)"
    )


def empty_scan(toy, write_lines):
    scan = write_lines(toy["motif_scan"], ["# nothing"])
    return {"motif_scan": scan}, f"{scan}: no motif hits found"


@pytest.mark.parametrize(
    "make_bad", [bad_peaks, bad_scan, unknown_cluster, chrom_mismatch, too_few_peaks, empty_scan]
)
def test_bad_input_is_reported_and_leaves_no_output(toy, write_lines, make_bad):
    change, expected = make_bad(toy, write_lines)
    toy["outdir"].mkdir()
    with pytest.raises(InputError) as err:
        prepare_with(**{**toy, **change})
    assert str(err.value).startswith(expected)
    assert list(toy["outdir"].iterdir()) == []


def test_error_keeps_previous_outputs_untouched(toy, write_lines):
    paths = prepare_with(**toy)
    before = {key: path.read_bytes() for key, path in paths.items()}
    with pytest.raises(InputError):
        prepare_with(**{**toy, **bad_scan(toy, write_lines)[0]})
    assert {key: path.read_bytes() for key, path in paths.items()} == before
    assert sorted(p.name for p in toy["outdir"].iterdir()) == sorted(p.name for p in paths.values())


def write_config(tmp_path, toy) -> tuple:
    sheet = tmp_path / "cell_types.tsv"
    sheet.write_text(f"cell_type\tpeaks\tcounts_file\tcounts_column\ntoy\t{toy['peaks']}\t\t5\n")
    config = {
        "cell_types": str(sheet),
        "motif_scan": str(toy["motif_scan"]),
        "cluster_names": str(toy["cluster_names"]),
        "prepare": {
            "window_size": 2,
            "max_span": 10**6,
            "train_stride": 1,
            "train_jitter": 0,
            "validation_chromosomes": ["chr10"],
            "test_chromosomes": ["chr2"],
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, config


def test_cli_prepares_a_cell_type_from_the_config_file(tmp_path, toy):
    config_path, _ = write_config(tmp_path, toy)
    outdir = tmp_path / "cli"
    assert (
        main(
            ["prepare", "--config", str(config_path), "--cell-type", "toy", "--outdir", str(outdir)]
        )
        == 0
    )
    for path in output_paths(outdir).values():
        assert path.exists()
    direct = prepare_with(**{**toy, "outdir": tmp_path / "direct"})
    pd.testing.assert_frame_equal(
        load_regions(outdir / "regions.parquet"), load_regions(direct["regions"])
    )


def test_cli_accepts_the_config_as_json(tmp_path, toy):
    _, config = write_config(tmp_path, toy)
    outdir = tmp_path / "json"
    args = ["prepare", "--config-json", json.dumps(config), "--cell-type", "toy"]
    assert main([*args, "--outdir", str(outdir)]) == 0
    assert load_windows(outdir / "windows_test.parquet")[0].shape == (1, 2, 4)


def test_cli_reports_an_unknown_cell_type(tmp_path, toy, capsys):
    config_path, _ = write_config(tmp_path, toy)
    args = ["prepare", "--config", str(config_path), "--cell-type", "nope", "--outdir"]
    assert main([*args, str(tmp_path / "x")]) == 2
    assert "no cell type 'nope'; known: ['toy']" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_demo_cell_type_gives_283_features_with_accessibility_last(small_demo, tmp_path):
    paths = prepare_with(
        cell_type="demo_liver",
        peaks=small_demo["peaks_demo_liver"],
        counts_column=7,
        motif_scan=small_demo["motif_scan"],
        outdir=tmp_path / "demo_liver",
        window_size=20,
        max_span=10**9,
        train_stride=10,
        train_jitter=3,
    )
    windows, meta = load_windows(paths["test"])
    assert windows.shape[1:] == (20, 283)
    assert windows.shape[0] >= 2
    assert meta["feature_names"][-1] == "accessibility"
    assert meta["feature_names"][16] == "CTCF"
    assert windows.min() >= 0 and windows.max() <= 1
    assert load_window_set(paths["train"]).meta["chromosomes"] == ["chr1", "chr21"]


def test_a_test_chromosome_outside_the_selected_ones_is_an_error_not_a_leak(toy):
    from getdiff.errors import ConfigError

    with pytest.raises(ConfigError, match=r"prepare.test_chromosomes.*\['11'\].*closest: chr1"):
        prepare_with(**{**toy, "test_chromosomes": ["11"]})
    assert not toy["outdir"].exists()


def test_cli_threads_bound_the_work_and_give_the_same_files(tmp_path, toy, capsys, monkeypatch):
    import pyarrow as pa

    monkeypatch.setattr(pa, "set_cpu_count", lambda n: calls.append(n))
    calls: list[int] = []
    config_path, _ = write_config(tmp_path, toy)
    args = ["prepare", "--config", str(config_path), "--cell-type", "toy", "--outdir"]
    assert main([*args, str(tmp_path / "one"), "--threads", "1"]) == 0
    assert main([*args, str(tmp_path / "four"), "--threads", "4"]) == 0
    pd.testing.assert_frame_equal(
        load_regions(tmp_path / "one" / "regions.parquet"),
        load_regions(tmp_path / "four" / "regions.parquet"),
    )
    assert calls == [1, 4]
    assert main([*args, str(tmp_path / "none"), "--threads", "0"]) == 2
    assert "--threads 0: expected a whole number >= 1" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()
