"""Prediction metrics: Pearson, Spearman, MSE and R^2, pooled or per column, and the
within-window score.

All sums are float64. ``R^2 = 1 - SS_res / SS_tot`` with SS_tot around the observed mean, so a
constant prediction at the observed mean scores 0 and worse ones score below 0. Pearson is NaN
when either side is constant (a constant predictor carries no per-region information); so is
Spearman (scipy.stats, average ranks for ties), which is robust to the heavy tail of counts.

``within_window`` centres observed and predicted values on their window's mean before scoring:
a predictor that only gets each window's level right (what a window average does) scores 0
there, so it shows whether predictions carry per-region information.

:class:`ScoredRegions` holds one cell type's scored regions (observed and every predictor's
values, and each region's window); :func:`pool` stacks cell types for pooled scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


def metrics(observed: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Pearson, Spearman, MSE and R^2 over all values of two equally shaped arrays, and n."""
    obs = np.asarray(observed, dtype=np.float64).ravel()
    pred = np.asarray(predicted, dtype=np.float64).ravel()
    if obs.size == 0:
        return {"pearson": math.nan, "spearman": math.nan, "mse": math.nan, "r2": math.nan, "n": 0}
    residual = np.sum((obs - pred) ** 2)
    total = np.sum((obs - obs.mean()) ** 2)
    return {
        "pearson": pearson(obs, pred),
        "spearman": spearman(obs, pred),
        "mse": float(residual / obs.size),
        "r2": float(1.0 - residual / total) if total > 0 else math.nan,
        "n": int(obs.size),
    }


def _correlation(test, observed: np.ndarray, predicted: np.ndarray) -> float:
    """``test`` (a scipy.stats correlation) of two flattened arrays; NaN when either is constant
    or has < 2 values."""
    obs = np.asarray(observed, dtype=np.float64).ravel()
    pred = np.asarray(predicted, dtype=np.float64).ravel()
    if obs.size < 2 or np.ptp(obs) == 0 or np.ptp(pred) == 0:
        return math.nan
    return float(test(obs, pred).statistic)


def pearson(observed: np.ndarray, predicted: np.ndarray) -> float:
    """Pearson r of two flattened arrays; NaN when either is constant or has < 2 values."""
    return _correlation(stats.pearsonr, observed, predicted)


def spearman(observed: np.ndarray, predicted: np.ndarray) -> float:
    """Spearman rank correlation of two flattened arrays; NaN as for :func:`pearson`."""
    return _correlation(stats.spearmanr, observed, predicted)


def pearson_interval(r: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Fisher-z confidence interval of a Pearson r over n independent pairs (NaN if undefined)."""
    if not math.isfinite(r) or n < 4 or abs(r) >= 1:
        return math.nan, math.nan
    half = stats.norm.ppf(0.5 + level / 2) / math.sqrt(n - 3)
    z = math.atanh(r)
    return math.tanh(z - half), math.tanh(z + half)


def metrics_per_column(observed: np.ndarray, predicted: np.ndarray) -> dict[str, np.ndarray]:
    """Pearson, MSE, R^2 of each column of (N, F) arrays, vectorised over columns."""
    obs = np.asarray(observed, dtype=np.float64)
    pred = np.asarray(predicted, dtype=np.float64)
    obs_c = obs - obs.mean(axis=0)
    pred_c = pred - pred.mean(axis=0)
    residual = ((obs - pred) ** 2).sum(axis=0)
    total = (obs_c**2).sum(axis=0)
    denom = np.sqrt(total * (pred_c**2).sum(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(denom > 0, (obs_c * pred_c).sum(axis=0) / denom, np.nan)
        r2 = np.where(total > 0, 1.0 - residual / total, np.nan)
    return {"pearson": r, "mse": residual / max(len(obs), 1), "r2": r2}


def centre_by_group(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """(N, F) values minus the mean of their group (e.g. window) in each column."""
    values = np.asarray(values, dtype=np.float64)
    _, index = np.unique(groups, return_inverse=True)
    counts = np.bincount(index).astype(np.float64)
    sums = np.zeros((len(counts), values.shape[1]))
    np.add.at(sums, index, values)
    return values - (sums / counts[:, None])[index]


def within_window_pearson(observed: np.ndarray, predicted: np.ndarray, groups: np.ndarray) -> float:
    """Pearson over all values after centring both sides on each group's (window's) mean."""
    return pearson(centre_by_group(observed, groups), centre_by_group(predicted, groups))


def score(observed: np.ndarray, predicted: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """:func:`metrics` plus the within-window Pearson and a 95% interval of the Pearson."""
    result = metrics(observed, predicted)
    low, high = pearson_interval(result["pearson"], result["n"])
    result.update(
        pearson_ci95=[low, high],
        within_window_pearson=within_window_pearson(observed, predicted, groups),
    )
    return result


@dataclass
class ScoredRegions:
    """One cell type's scored regions: observed and predicted values of the predicted features."""

    features: list[str]  # the predicted features, the columns below
    observed: np.ndarray  # (N, T)
    predictions: dict[str, np.ndarray]  # predictor -> (N, T)
    window: np.ndarray  # (N,) window of each region (the within-window groups)
    scale: np.ndarray | None = (
        None  # (N, T) context scale (getdiff.evaluation.conformal.context_scale)
    )


def pool(scored: list[ScoredRegions]) -> ScoredRegions:
    """Cell types' scored regions stacked; window ids kept distinct across cell types."""
    offsets = np.cumsum([0] + [int(s.window.max()) + 1 for s in scored[:-1]])
    return ScoredRegions(
        features=scored[0].features,
        observed=np.concatenate([s.observed for s in scored]),
        predictions={
            p: np.concatenate([s.predictions[p] for s in scored]) for p in scored[0].predictions
        },
        window=np.concatenate([s.window + o for s, o in zip(scored, offsets, strict=True)]),
        scale=None
        if any(s.scale is None for s in scored)
        else np.concatenate([s.scale for s in scored]),
    )
