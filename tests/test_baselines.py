"""The baselines evaluate scores beside the model (getdiff.evaluation.baselines), against
hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from getdiff.evaluation.baselines import (
    Ridge,
    neighbour_indices,
    neighbour_mean_prediction,
    window_mean_prediction,
)
from getdiff.tensors import WindowSet


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
