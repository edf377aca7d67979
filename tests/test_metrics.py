"""Scores of the evaluate stage (getdiff.evaluation.metrics), against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from getdiff.evaluation.metrics import (
    centre_by_group,
    metrics,
    metrics_per_column,
    pearson_interval,
    within_window_pearson,
)


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
