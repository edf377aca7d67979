"""Calibrated predictive intervals (getdiff.evaluation.conformal, getdiff calibrate): coverage on
data with known noise, sharpness against one constant width, the file round trip, validation
only."""

from __future__ import annotations

import numpy as np
import pytest

from getdiff.errors import InputError
from getdiff.evaluation.conformal import (
    MIN_BIN_REGIONS,
    RELIABILITY_LEVELS,
    Calibration,
    _shortest_bounds,
    context_scale,
    coverage_summary,
    interval_scores,
    read_calibration,
    write_calibration,
)


def noisy_windows(rng, n_windows: int, size: int = 200):
    """Observed = truth + noise whose sd is the window's own spread (known, varying 4-fold
    between windows) and right-skewed (gamma), clipped at 0 as counts are; the prediction is
    the truth. Returns observed, predicted and the windows' true scales, each (n * size, 1)."""
    spread = rng.uniform(0.01, 0.04, n_windows).repeat(size)[:, None]
    truth = rng.uniform(0.05, 0.5, (n_windows * size, 1))
    noise = (rng.gamma(2.0, 1.0, truth.shape) - 2.0) / np.sqrt(2.0)
    observed = np.maximum(truth + spread * noise, 0.0)
    return observed, truth, spread


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_intervals_cover_their_level_on_held_out_data_with_known_noise(seed):
    rng = np.random.default_rng(seed)
    observed, predicted, scale = noisy_windows(rng, 30)
    fit = Calibration.fit(observed, predicted, scale, ["accessibility"], [0.5, 0.9], bins=5)
    held_out, held_predicted, held_scale = noisy_windows(rng, 30)
    for level in (0.5, 0.9):
        lower, upper = fit.interval(held_predicted, held_scale, level)
        summary = coverage_summary(held_out, lower, upper)
        assert abs(summary["coverage"] - level) < 0.05, (level, summary["coverage"])
        # conditional calibration: narrow and wide intervals cover alike
        assert all(abs(c - level) < 0.1 for c in summary["coverage_by_width_quintile"])


def test_intervals_are_narrower_than_one_constant_width_covering_as_much():
    rng = np.random.default_rng(3)
    observed, predicted, scale = noisy_windows(rng, 30)
    fit = Calibration.fit(observed, predicted, scale, ["a"], RELIABILITY_LEVELS, bins=5)
    held_out, held_predicted, held_scale = noisy_windows(rng, 30)
    scores = interval_scores(held_out, held_predicted, held_scale, fit)
    for level in ("0.5", "0.9"):
        assert scores[level]["mean_width"] < 0.95 * scores[level]["constant_width_same_coverage"]
        widths = scores[level]["mean_width_by_width_quintile"]
        assert widths[-1] > 2 * widths[0]  # the noisier windows get the wider intervals
    # an interval that ignored the context scale would be no better than the constant one
    blind = Calibration.fit(observed, predicted, np.ones_like(scale), ["a"], [0.9], bins=1)
    lower, upper = blind.interval(held_predicted, np.ones_like(held_scale), 0.9)
    assert coverage_summary(held_out, lower, upper)["mean_width"] > scores["0.9"]["mean_width"]


def test_shortest_bounds_are_the_narrowest_span_of_k_gaps():
    # n = 9: k = ceil(10 * 0.5) = 5 gaps; spans of 5 gaps: [0, 5] is 5, [1, 6] ... [4, 9] are 2.6+
    residuals = np.array([[-4.0, -1.0, 0.0, 0.1, 0.2, 1.0, 1.2, 3.0, 9.0]]).T
    ((low, high),) = _shortest_bounds(residuals, np.array([0.5]))[:, :, 0]
    assert (low, high) == (-1.0, 1.2)  # span 2.2, the narrowest of (-4, 1), (-1, 1.2), (0, 3)...
    # k cannot exceed the sample: the whole range
    ((low, high),) = _shortest_bounds(residuals, np.array([0.99]))[:, :, 0]
    assert (low, high) == (-4.0, 9.0)


def test_small_bins_fall_back_to_the_whole_feature():
    rng = np.random.default_rng(0)
    n = 3 * MIN_BIN_REGIONS - 1  # room for two bins of at least MIN_BIN_REGIONS
    observed, predicted = rng.random((n, 2)), np.full((n, 2), 0.5)
    fit = Calibration.fit(observed, predicted, np.ones((n, 2)), ["a", "b"], [0.9], bins=10)
    assert fit.lower.shape[1] == n // MIN_BIN_REGIONS
    # a constant prediction puts every region in one bin; the empty one takes the pooled bounds
    assert fit.counts[:, 0].tolist() == [n, 0]
    np.testing.assert_array_equal(fit.lower[0, 0], fit.lower[0, 1])


def test_context_scale_is_the_spread_of_the_rows_the_pass_kept():
    windows = np.array([[[0.0], [1.0], [2.0], [4.0]]])  # one window, 4 rows, 1 feature
    first = np.array([True, False, True, False])  # the first pass hides rows 0 and 2
    scale = context_scale(windows, first)[0, :, 0]
    # rows 0, 2 see rows 1 and 3 (values 1, 4: sd 1.5); rows 1, 3 see rows 0 and 2 (sd 1.0)
    np.testing.assert_allclose(scale, [1.5, 1.0, 1.5, 1.0])
    missing = np.array([[False, False, False, True]])  # row 3 is never context
    scale = context_scale(windows, first, missing)[0, :, 0]
    np.testing.assert_allclose(scale, [0.0, 1.0, 0.0, 1.0])


def test_calibration_file_round_trips_and_names_what_it_lacks(tmp_path):
    rng = np.random.default_rng(0)
    observed, predicted, scale = noisy_windows(rng, 5)
    fit = Calibration.fit(observed, predicted, scale, ["accessibility"], [0.5, 0.9], bins=5)
    sampler = {"method": "one-step", "steps": 50, "eta": 0.0, "num_samples": 8, "seed": 0}
    path = tmp_path / "calibration.parquet"
    write_calibration(path, {"liver": {"model": fit}}, {"sampler": sampler, "split": "validation"})
    loaded = read_calibration(path)
    again = loaded.of("liver", "model")
    for name in ("levels", "edges", "lower", "upper", "counts", "half_width"):
        np.testing.assert_allclose(getattr(again, name), getattr(fit, name), err_msg=name)
    a = fit.interval(predicted, scale, 0.9)
    b = again.interval(predicted, scale, 0.9)
    np.testing.assert_array_equal(a[0], b[0])
    assert loaded.sampler_differences({**sampler, "num_samples": 1}) == [
        "num_samples: calibrated 8, here 1"
    ]
    with pytest.raises(InputError, match="no calibration of 'model' for cell type 'myeloid'"):
        loaded.of("myeloid")
    with pytest.raises(KeyError, match="no interval level 0.8"):
        again.interval(predicted, scale, 0.8)
    (tmp_path / "other.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputError, match="not a calibration file"):
        read_calibration(tmp_path / "other.parquet")


def test_calibration_reads_the_validation_chromosomes_never_the_test_ones(tmp_path, monkeypatch):
    """Whatever evaluate.split is, calibrate predicts the validation windows (and fits the ridge
    on the training ones); the test windows are never opened."""
    import argparse
    from types import SimpleNamespace

    import getdiff.evaluation.calibrate as calibrate
    from getdiff.evaluation.metrics import ScoredRegions

    sheet = tmp_path / "cell_types.tsv"
    sheet.write_text("cell_type\tpeaks\tcounts_file\tcounts_column\nliver\tp.bed\t\t5\n")
    config = tmp_path / "config.yaml"
    config.write_text(f"cell_types: {sheet}\nmotif_scan: scan.bed\nevaluate: {{split: test}}\n")
    seen = {}
    rng = np.random.default_rng(0)
    observed, predicted, scale = noisy_windows(rng, 2)

    def fake_predict(loaded, windows, training, settings, split):
        seen.update(windows=windows, training=training, split=split)
        regions = ScoredRegions(
            ["accessibility"], observed, {"model": predicted}, np.zeros(len(observed)), scale
        )
        return {"liver": regions}

    monkeypatch.setattr(calibrate, "predict_split", fake_predict)
    loaded = SimpleNamespace(path=tmp_path / "model.safetensors", task={"predict": "accessibility"})
    monkeypatch.setattr(calibrate.LoadedModel, "load", lambda *a: loaded)
    output = tmp_path / "calibration.parquet"
    args = argparse.Namespace(
        config=str(config),
        config_json=None,
        group="all",
        model="m",
        threads=1,
        level=None,
        prepared_dir=str(tmp_path / "prepare"),
        output=str(output),
    )
    calibrate.run(args)
    assert seen["split"] == "validation"
    assert [p.name for p in seen["windows"].values()] == ["windows_validation.parquet"]
    assert [p.name for p in seen["training"].values()] == ["windows_train.parquet"]
    loaded = read_calibration(output)
    assert loaded.meta["split"] == "validation"
    assert 0.9 in loaded.of("liver").levels  # impute.interval_level's default
