"""Metrics and baselines of the evaluate stage, against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from getdiff.evaluate import (
    metrics,
    metrics_per_column,
    neighbour_indices,
    neighbour_mean_prediction,
)


def test_metrics_match_hand_computed_values():
    observed = np.array([1.0, 2.0, 3.0, 4.0])
    predicted = np.array([1.0, 2.0, 2.0, 5.0])
    result = metrics(observed, predicted)
    assert result["mse"] == pytest.approx(0.5)
    # SS_res = 2, SS_tot = 5 -> R^2 = 0.6
    assert result["r2"] == pytest.approx(0.6)
    assert result["pearson"] == pytest.approx(np.corrcoef(observed, predicted)[0, 1])
    assert result["n"] == 4


def test_constant_prediction_has_undefined_pearson_and_negative_r2():
    result = metrics(np.array([0.0, 1.0]), np.array([2.0, 2.0]))
    assert math.isnan(result["pearson"])
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
