"""getdiff.evaluation.evaluate on its own: which parts are scored, every predictor's values from
the pass that masked each region, the summary and per-feature rows, JSON safety, the cell types
scored. (The scores themselves: test_metrics.py; the baselines: test_baselines.py.)"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from getdiff.errors import ConfigError
from getdiff.evaluation.baselines import Ridge, neighbour_mean_prediction, window_mean_prediction
from getdiff.evaluation.evaluate import (
    PREDICTORS,
    _json_safe,
    evaluated_cell_types,
    part_columns,
    per_feature_rows,
    score_regions,
    summarise,
)
from getdiff.tensors import WindowSet

NAMES = ["A", "B", "accessibility"]
SIZE = 6


def windows(n_windows: int, seed: int) -> WindowSet:
    """Non-overlapping windows of SIZE regions with random features, every region scored once."""
    rng = np.random.default_rng(seed)
    n = n_windows * SIZE
    regions = pd.DataFrame({"chrom": ["chr1"] * n, "start": np.arange(n) * 1000})
    regions["end"], regions["name"], regions["region_id"] = regions.start + 500, "p", np.arange(n)
    features = rng.random((n, len(NAMES))).astype(np.float32)
    meta = {"feature_names": NAMES, "window_size": SIZE}
    starts = np.arange(n_windows) * SIZE
    return WindowSet(features, regions, starts, np.ones((n_windows, SIZE), bool), meta)


def scored_regions(features: list[str], model_mean: np.ndarray | None = None):
    test = windows(3, seed=1)
    first_mask = np.arange(SIZE) % 2 == 0
    columns = np.array([NAMES.index(f) for f in features])
    ridge = Ridge(columns, own_motifs=False).fit(windows(20, seed=0), first_mask)
    mean = test.windows() if model_mean is None else model_mean
    train_mean = np.full(len(NAMES), 0.5, np.float32)
    return test, first_mask, score_regions(test, mean, first_mask, train_mean, ridge, features)


def test_parts_are_accessibility_then_motifs_and_all_features_when_motifs_are_predicted():
    assert part_columns(NAMES) == {
        "accessibility": [2],
        "motifs": [0, 1],
        "all_features": [0, 1, 2],
    }
    assert part_columns(["accessibility"]) == {"accessibility": [0]}


def test_every_predictor_is_scored_on_every_region_of_the_predicted_features():
    test, _, scored = scored_regions(["accessibility"])
    assert sorted(scored.predictions) == sorted(PREDICTORS)
    assert scored.observed.shape == (len(test.features), 1)
    np.testing.assert_array_equal(scored.observed[:, 0], test.features[:, 2])
    assert all(p.shape == scored.observed.shape for p in scored.predictions.values())
    assert scored.window.tolist() == np.repeat(np.arange(3), SIZE).tolist()
    assert scored.scale.shape == scored.observed.shape


def test_a_baseline_predicts_each_region_from_the_pass_that_masked_it():
    test, first_mask, scored = scored_regions(NAMES)
    full = test.windows()
    for name, predict in (
        ("window_mean", window_mean_prediction),
        ("neighbour_mean", neighbour_mean_prediction),
    ):
        first, second = predict(full, first_mask), predict(full, ~first_mask)
        expected = np.where(first_mask[None, :, None], first, second).reshape(-1, len(NAMES))
        np.testing.assert_allclose(scored.predictions[name], expected)
    np.testing.assert_array_equal(scored.predictions["train_mean"], 0.5)


def test_a_model_that_returns_the_observed_values_scores_perfectly():
    _, _, scored = scored_regions(NAMES)
    summary = summarise(scored)
    assert list(summary) == ["accessibility", "motifs", "all_features"]
    model = summary["accessibility"]["model"]
    assert model["pearson"] == pytest.approx(1.0) and model["mse"] == pytest.approx(0.0)
    assert model["within_window_pearson"] == pytest.approx(1.0)
    assert summary["all_features"]["model"]["n"] == 3 * SIZE * len(NAMES)


def test_per_feature_rows_are_one_per_feature_and_predictor():
    _, _, scored = scored_regions(NAMES)
    rows = per_feature_rows("liver", scored)
    assert len(rows) == len(NAMES) * len(PREDICTORS)
    assert {(r["feature"], r["predictor"]) for r in rows} == {
        (f, p) for f in NAMES for p in PREDICTORS
    }
    assert all(r["cell_type"] == "liver" and r["n"] == 3 * SIZE for r in rows)
    model_acc = next(
        r for r in rows if r["feature"] == "accessibility" and r["predictor"] == "model"
    )
    assert model_acc["pearson"] == pytest.approx(1.0) and model_acc["mse"] == pytest.approx(0.0)


def test_undefined_scores_become_null_in_json():
    value = {"pearson": math.nan, "ci": [math.inf, 0.5], "nested": {"r2": -math.inf}, "n": 3}
    assert json.loads(json.dumps(_json_safe(value), allow_nan=False)) == {
        "pearson": None,
        "ci": [None, 0.5],
        "nested": {"r2": None},
        "n": 3,
    }


def test_the_cell_types_scored_are_the_groups_unless_evaluate_names_others():
    sheet = ["liver", "myeloid", "lymphoid"]
    config = {"evaluate": {"cell_types": None}}
    assert evaluated_cell_types(config, ["liver", "myeloid"], sheet) == ["liver", "myeloid"]
    config = {"evaluate": {"cell_types": ["lymphoid", "liver", "lymphoid"]}}
    assert evaluated_cell_types(config, ["liver"], sheet) == ["lymphoid", "liver"]


def test_a_cell_type_to_score_that_is_not_in_the_sheet_is_an_error_naming_it():
    config = {"evaluate": {"cell_types": ["kidney"]}}
    with pytest.raises(ConfigError, match="evaluate.cell_types.*'kidney'"):
        evaluated_cell_types(config, ["liver"], ["liver", "myeloid"])
