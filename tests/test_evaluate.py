"""Metrics and baselines of the evaluate stage, against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from getdiff.baselines import (
    Ridge,
    neighbour_indices,
    neighbour_mean_prediction,
    window_mean_prediction,
)
from getdiff.metrics import (
    centre_by_group,
    metrics,
    metrics_per_column,
    pearson_interval,
    within_window_pearson,
)
from getdiff.tensors import WindowSet


def test_metrics_match_hand_computed_values():
    observed = np.array([1.0, 2.0, 3.0, 4.0])
    predicted = np.array([1.0, 2.0, 2.0, 5.0])
    result = metrics(observed, predicted)
    assert result["mse"] == pytest.approx(0.5)
    # SS_res = 2, SS_tot = 5 -> R^2 = 0.6
    assert result["r2"] == pytest.approx(0.6)
    assert result["pearson"] == pytest.approx(np.corrcoef(observed, predicted)[0, 1])
    # ranks 1 2 3 4 vs 1 2.5 2.5 4 (ties share the average rank): r = 4.5 / sqrt(5 * 4.5)
    assert result["spearman"] == pytest.approx(4.5 / np.sqrt(5 * 4.5))
    assert result["n"] == 4


def test_constant_prediction_has_undefined_pearson_and_negative_r2():
    result = metrics(np.array([0.0, 1.0]), np.array([2.0, 2.0]))
    assert math.isnan(result["pearson"]) and math.isnan(result["spearman"])
    assert result["r2"] < 0


def test_metrics_per_column_equal_metrics_of_each_column():
    rng = np.random.default_rng(0)
    observed, predicted = rng.random((50, 3)), rng.random((50, 3))
    columns = metrics_per_column(observed, predicted)
    for j in range(3):
        single = metrics(observed[:, j], predicted[:, j])
        assert columns["pearson"][j] == pytest.approx(single["pearson"])
        assert columns["mse"][j] == pytest.approx(single["mse"])
        assert columns["r2"][j] == pytest.approx(single["r2"])


def test_neighbour_indices_find_nearest_unmasked_on_each_side():
    mask = np.array([True, False, True, True, False, True])
    left, right = neighbour_indices(mask)
    assert left.tolist() == [-1, -1, 1, 1, 1, 4]
    assert right.tolist() == [1, 4, 4, 4, -1, -1]


def test_neighbour_mean_uses_one_side_at_window_edges():
    mask = np.array([True, False, True, True, False, True])
    values = np.arange(6, dtype=np.float32).reshape(1, 6, 1) * 10
    prediction = neighbour_mean_prediction(values, mask)[0, :, 0]
    assert prediction[0] == 10  # only the right neighbour (position 1)
    assert prediction[2] == pytest.approx((10 + 40) / 2)
    assert prediction[5] == 40  # only the left neighbour (position 4)


def test_window_mean_is_the_mean_of_the_unmasked_rows():
    mask = np.array([True, False, True, False])
    values = np.array([[[1.0], [2.0], [3.0], [6.0]]], dtype=np.float32)
    assert window_mean_prediction(values, mask)[0, :, 0].tolist() == [4.0, 4.0, 4.0, 4.0]


def test_within_window_pearson_ignores_window_levels():
    observed = np.array([[1.0], [2.0], [11.0], [12.0]])
    window = np.array([0, 0, 1, 1])
    level_only = np.array([[1.5], [1.5], [11.5], [11.5]])
    assert metrics(observed, level_only)["pearson"] > 0.99  # pooled looks excellent
    assert math.isnan(within_window_pearson(observed, level_only, window))  # nothing per region
    ordered = np.array([[0.0], [1.0], [20.0], [21.0]])
    assert within_window_pearson(observed, ordered, window) == pytest.approx(1.0)
    assert centre_by_group(observed, window)[:, 0].tolist() == [-0.5, 0.5, -0.5, 0.5]


def test_pearson_interval_contains_r_and_narrows_with_n():
    low, high = pearson_interval(0.5, 100)
    assert low < 0.5 < high
    narrow = pearson_interval(0.5, 10_000)
    assert high - low > narrow[1] - narrow[0]


def ridge_windows(n_windows: int, seed: int) -> WindowSet:
    """Accessibility = 0.3 * motif A - 0.2 * motif B + 0.5 * window level, exactly."""
    rng = np.random.default_rng(seed)
    size = 10
    motifs = rng.random((n_windows * size, 2))
    level = np.repeat(rng.random(n_windows), size)
    accessibility = 0.3 * motifs[:, 0] - 0.2 * motifs[:, 1] + 0.5 * level
    features = np.c_[motifs, accessibility].astype(np.float32)
    meta = {"feature_names": ["A", "B", "accessibility"], "window_size": size}
    starts = np.arange(n_windows) * size
    return WindowSet(features, None, starts, np.ones((n_windows, size), bool), meta)


def test_ridge_recovers_a_linear_accessibility_model_from_motifs_and_window_level():
    mask = np.arange(10) % 2 == 0
    ridge = Ridge(np.array([2]), own_motifs=True, alpha=1e-6).fit(ridge_windows(200, 0), mask)
    test = ridge_windows(20, 1)
    windows = test.windows()
    prediction = ridge.predict(windows, mask)
    # The window level is read off the unmasked rows, so it is estimated, not exact.
    assert np.corrcoef(prediction[:, mask, 2].ravel(), windows[:, mask, 2].ravel())[0, 1] > 0.9
    assert np.all(prediction[:, ~mask] == 0) and np.all(prediction[:, :, :2] == 0)
