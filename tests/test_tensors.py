"""Normalisation, window layout, and the Parquet window/region files (write -> load)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from getdiff.errors import InputError
from getdiff.tensors import (
    FeatureMatrix,
    layout_windows,
    load_regions,
    load_window_set,
    load_windows,
    normalise_accessibility,
    normalise_motifs,
    read_metadata,
    region_features,
    tile_chromosome,
    to_raw_units,
    train_starts,
    write_region_table,
    write_window_set,
)

NAMES = ["A", "B", "accessibility"]


def regions_on(chroms: list[tuple[str, int]], spacing: int = 100) -> pd.DataFrame:
    """Genome-ordered regions: ``n`` regions of 10 bp every ``spacing`` bp per chromosome."""
    parts = []
    for chrom, n in chroms:
        start = np.arange(n, dtype=np.int64) * spacing
        parts.append(pd.DataFrame({"chrom": chrom, "start": start, "end": start + 10}))
    table = pd.concat(parts, ignore_index=True)
    table["name"] = [f"r{i}" for i in range(len(table))]
    table["region_id"] = np.arange(len(table))
    return table


def base_meta(window_size: int = 4) -> dict:
    return {
        "feature_names": NAMES,
        "cell_type": "ct",
        "genome": "hg38",
        "getdiff_version": "test",
        "scaling": {
            "motif_max": [2.0, 4.0],
            "accessibility": {"constant": True, "value": 1.0},
        },
        "split": "test",
        "window_size": window_size,
    }


def test_motif_columns_are_divided_by_their_max():
    scores = np.array([[1.0, 0.0, 3.0], [4.0, 0.0, 1.5]], dtype=np.float32)
    values, maxima = normalise_motifs(scores)
    np.testing.assert_allclose(values.toarray(), [[0.25, 0, 1], [1, 0, 0.5]])
    assert maxima == [4.0, 0.0, 3.0]
    assert values.dtype == np.float32


def test_accessibility_is_log10_cpm_over_its_max():
    values, scaling = normalise_accessibility(np.array([1.0, 3.0]), 2)
    low, high = np.log10(0.25e5 + 1), np.log10(0.75e5 + 1)
    np.testing.assert_allclose(values, [low / high, 1.0], rtol=1e-6)
    assert scaling["total_counts"] == 4.0
    assert scaling["max_log10_cpm"] == pytest.approx(high)
    assert not scaling["constant"]


def test_accessibility_without_counts_is_the_constant_one():
    values, scaling = normalise_accessibility(None, 3)
    np.testing.assert_array_equal(values, [1, 1, 1])
    assert scaling == {"constant": True, "value": 1.0}


def test_to_raw_units_inverts_the_normalisation():
    scores = np.array([[1.0, 0.0], [4.0, 2.0]], dtype=np.float32)
    counts = np.array([5.0, 20.0])
    motif, maxima = normalise_motifs(scores)
    acc, acc_scaling = normalise_accessibility(counts, 2)
    meta = {"scaling": {"motif_max": maxima, "accessibility": acc_scaling}}
    raw = to_raw_units(FeatureMatrix(motif, acc).dense(slice(None)), meta)
    np.testing.assert_allclose(raw, np.c_[scores, counts], rtol=1e-5)


def test_to_raw_units_gives_the_constant_for_constant_accessibility():
    meta = {"scaling": {"motif_max": [2.0], "accessibility": {"constant": True, "value": 1.0}}}
    raw = to_raw_units(np.array([[[0.5, 0.3]]]), meta)
    np.testing.assert_allclose(raw, [[[1.0, 1.0]]])


@pytest.mark.parametrize(
    ("n", "starts", "score_from"),
    [(10, [0], [0]), (20, [0, 10], [0, 0]), (25, [0, 10, 15], [0, 0, 5]), (11, [0, 1], [0, 9])],
)
def test_evaluation_tiles_end_aligned_with_shared_rows_unscored(n, starts, score_from):
    got_starts, got_from = tile_chromosome(n, 10)
    assert got_starts.tolist() == starts
    assert got_from.tolist() == score_from


@pytest.mark.parametrize("n", range(10, 64))
def test_evaluation_tiles_score_every_row_exactly_once(n):
    starts, score_from = tile_chromosome(n, 10)
    scored = [s + p for s, f in zip(starts, score_from, strict=True) for p in range(f, 10)]
    assert sorted(scored) == list(range(n))


def test_train_starts_without_jitter_follow_the_stride():
    rng = np.random.default_rng(0)
    assert train_starts(50, 20, 10, 0, rng).tolist() == [0, 10, 20, 30]


def test_train_jitter_stays_in_range_and_within_the_chromosome():
    rng = np.random.default_rng(1)
    starts = train_starts(1000, 20, 50, 5, rng)
    assert starts.min() >= 0 and starts.max() <= 980
    base = np.arange(0, 981, 50)
    nearest = base[np.abs(starts[:, None] - base[None, :]).argmin(axis=1)]
    assert np.all((starts - nearest >= -5) & (starts - nearest < 5))
    assert len(np.unique(starts - nearest)) > 1


def test_windows_never_cross_chromosomes_and_short_ones_are_skipped():
    regions = regions_on([("chr1", 13), ("chr2", 3), ("chr3", 9)])
    layout = layout_windows(
        regions,
        ["chr1", "chr2", "chr3"],
        training=True,
        window_size=4,
        max_span=10**9,
        stride=2,
        jitter=0,
        seed=0,
    )
    assert layout.skipped_chromosomes == {"chr2": 3}
    chrom = regions["chrom"].to_numpy()[layout.rows]
    for start in layout.starts:
        assert len(set(chrom[start : start + 4])) == 1
    assert layout.starts.tolist() == [0, 2, 4, 6, 8, 13, 15, 17]
    assert len(layout.rows) == 13 + 9


def test_training_windows_spanning_more_than_max_span_are_skipped():
    regions = regions_on([("chr1", 8)])
    regions.loc[5:, ["start", "end"]] += 10_000  # a gap between rows 4 and 5
    layout = layout_windows(
        regions,
        ["chr1"],
        training=True,
        window_size=3,
        max_span=1000,
        stride=1,
        jitter=0,
        seed=0,
    )
    assert layout.starts.tolist() == [0, 1, 2, 5]
    assert layout.skipped_max_span == 2


def test_evaluation_tiles_are_kept_even_when_spanning_more_than_max_span():
    regions = regions_on([("chr1", 8)], spacing=1000)
    layout = layout_windows(
        regions, ["chr1"], training=False, window_size=3, max_span=10, stride=1, jitter=0, seed=0
    )
    assert layout.starts.tolist() == [0, 3, 5]
    assert layout.score_from.tolist() == [0, 0, 1]
    assert layout.over_max_span == 3


def test_training_layout_is_deterministic_per_seed():
    regions = regions_on([("chr1", 500), ("chr2", 400)])
    kwargs = dict(training=True, window_size=20, max_span=10**9, stride=10, jitter=5)
    a = layout_windows(regions, ["chr1", "chr2"], seed=3, **kwargs)
    b = layout_windows(regions, ["chr1", "chr2"], seed=3, **kwargs)
    c = layout_windows(regions, ["chr1", "chr2"], seed=4, **kwargs)
    assert a.starts.tolist() == b.starts.tolist()
    assert a.starts.tolist() != c.starts.tolist()


def write_example(path, n_rows: int = 6, window_size: int = 4):
    regions = regions_on([("chr1", n_rows)])
    features = np.arange(n_rows * 3, dtype=np.float32).reshape(n_rows, 3) / 100
    write_window_set(
        path, regions, features, np.array([0, 2]), np.array([0, 2]), base_meta(window_size)
    )
    return regions, features


def test_window_file_round_trip_gathers_windows_and_scored_mask(tmp_path):
    path = tmp_path / "windows_test.parquet"
    regions, features = write_example(path)
    window_set = load_window_set(path)
    np.testing.assert_array_equal(window_set.features, features)
    assert window_set.regions["start"].tolist() == regions["start"].tolist()
    assert window_set.scored.tolist() == [[True] * 4, [False, False, True, True]]
    windows, meta = load_windows(path)
    assert windows.shape == (2, 4, 3) and windows.dtype == np.float32
    np.testing.assert_array_equal(windows[1], features[2:6])
    assert meta["n_windows"] == 2 and meta["feature_names"] == NAMES
    np.testing.assert_array_equal(window_set.windows([1]), windows[1:])


def test_window_file_with_no_window_loads_as_empty(tmp_path):
    path = tmp_path / "windows_validation.parquet"
    write_window_set(
        path,
        regions_on([("chr1", 1)]).iloc[:0],
        np.zeros((0, 3), np.float32),
        np.zeros(0, np.int64),
        np.zeros(0, np.int64),
        base_meta(),
    )
    windows, meta = load_windows(path)
    assert windows.shape == (0, 4, 3)
    assert meta["n_windows"] == 0


def test_region_table_round_trip(tmp_path):
    path = tmp_path / "regions.parquet"
    regions = regions_on([("chr1", 3)])
    features = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]], np.float32)
    write_region_table(path, regions, features, base_meta())
    table = load_regions(path)
    assert list(table.columns) == ["chrom", "start", "end", "name", "region_id", *NAMES]
    assert table["accessibility"].dtype == np.float32
    np.testing.assert_array_equal(region_features(table), features)
    assert table.attrs["getdiff"]["cell_type"] == "ct"


def test_parquet_without_metadata_is_an_input_error_naming_it(tmp_path):
    path = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"x": [1]}), path)
    with pytest.raises(InputError, match=rf"{path}: no 'getdiff' metadata"):
        load_windows(path)


def test_window_file_with_wrong_width_is_an_input_error(tmp_path):
    path = tmp_path / "windows_test.parquet"
    write_example(path)
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[b"getdiff"])
    meta["feature_names"] = ["A", "accessibility"]
    meta["scaling"]["motif_max"] = [1.0]
    pq.write_table(table.replace_schema_metadata({b"getdiff": json.dumps(meta)}), path)
    with pytest.raises(InputError, match=rf"{path}: column 'features' is .*expected"):
        load_window_set(path)


def test_metadata_that_is_not_json_is_an_input_error(tmp_path):
    path = tmp_path / "windows_test.parquet"
    pq.write_table(pa.table({"x": [1]}).replace_schema_metadata({b"getdiff": b"{oops"}), path)
    with pytest.raises(InputError, match="not valid JSON"):
        read_metadata(path)


def test_region_table_is_not_accepted_as_a_window_file(tmp_path):
    path = tmp_path / "regions.parquet"
    write_region_table(path, regions_on([("chr1", 1)]), np.zeros((1, 3), np.float32), base_meta())
    with pytest.raises(InputError, match="metadata format is 'getdiff.regions/1'"):
        load_window_set(path)


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_regions(tmp_path / "nope.parquet")


def sparse_example(n_rows: int, seed: int = 0) -> tuple[FeatureMatrix, np.ndarray]:
    """A FeatureMatrix of 2 motif columns (mostly zero) + accessibility, and its dense copy."""
    from scipy import sparse

    rng = np.random.default_rng(seed)
    motifs = rng.random((n_rows, 2)).astype(np.float32) * (rng.random((n_rows, 2)) < 0.3)
    accessibility = rng.random(n_rows).astype(np.float32)
    return FeatureMatrix(sparse.csr_array(motifs), accessibility), np.c_[motifs, accessibility]


def test_feature_matrix_rows_equal_the_dense_matrix_in_both_layouts():
    features, dense = sparse_example(50)
    rows = np.array([3, 7, 7, 49, 0])
    assert features.shape == (50, 3)
    np.testing.assert_array_equal(features.dense(rows), dense[rows])
    np.testing.assert_array_equal(features.dense(slice(10, 20), by_feature=True), dense[10:20].T)


def test_files_from_a_feature_matrix_in_many_row_groups_equal_the_dense_ones(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    import getdiff.tensors as tensors

    monkeypatch.setattr(tensors, "REGION_ROW_GROUP", 4)
    monkeypatch.setattr(tensors, "WINDOW_ROW_GROUP", 3)
    features, dense = sparse_example(11)
    regions = regions_on([("chr1", 11)])
    rows = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    write_region_table(tmp_path / "regions.parquet", regions, features, base_meta())
    write_window_set(
        tmp_path / "windows.parquet", regions, features, np.array([0, 6]), np.array([0, 2]),
        base_meta(), rows=rows,
    )  # fmt: skip
    assert pq.ParquetFile(tmp_path / "regions.parquet").num_row_groups == 3
    assert pq.ParquetFile(tmp_path / "windows.parquet").num_row_groups == 4
    np.testing.assert_array_equal(
        region_features(load_regions(tmp_path / "regions.parquet")), dense
    )
    window_set = load_window_set(tmp_path / "windows.parquet")
    np.testing.assert_array_equal(window_set.features, dense[rows])
    assert window_set.regions["region_id"].tolist() == rows.tolist()
    assert window_set.meta["n_regions"] == 10
