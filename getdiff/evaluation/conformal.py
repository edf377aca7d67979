"""Predictive intervals calibrated on held-out chromosomes: split conformal on residuals
standardised by each prediction's context.

The sampler's draws are no uncertainty (the one-step sampler returns nearly the same value for
every start noise), so intervals come from the errors a predictor makes on regions it was not
trained on. Those errors scale with how much the region's window varies: a window whose
unmasked regions barely differ is predicted closely, a varied one is not, and windows on one
chromosome differ in this several-fold from those on another. So each prediction carries the
context scale ``s`` (:func:`context_scale`: the standard deviation of the observed values over
the rows of its window that were unmasked when it was predicted, the rows the predictor saw),
and a residual is measured in it: ``z = (observed - predicted) / s``.

For one predictor, cell type and feature, the validation regions' ``z`` are grouped into
``bins`` bins of equal size by ``predicted / s``, how many context scales the prediction lies
above zero: values are non-negative, so near zero the lower tail is cut short and the errors
are skewed, far from it they are not (bins are a function of what is known at prediction time,
so the guarantee holds within each: Mondrian conformal). Of a bin's n sorted residuals, the
interval is the shortest span ``[z_(i), z_(i + k)]`` with ``k = ceil((n + 1) level)``: a new
region exchangeable with the bin's falls in it with probability ``k / (n + 1) >= level``
(choosing i on the same residuals makes this approximate), so ``[predicted + s z_(i), predicted
+ s z_(i + k)]`` covers its observed value, measurement noise included. The shortest span, not
equal tails: errors of counts are skewed, and equal tails then make a wider interval than the
level needs (measured on the demo: wider than one constant width at 90%, where the shortest is
narrower). Lower bounds are clipped at 0, below every normalised value.

A bin with fewer than :data:`MIN_BIN_REGIONS` regions (a constant predictor puts every region in
one bin) takes the quantiles of all its feature's residuals. Each fit also keeps the reference a
calibrated interval must beat: one width for every region (``constant_half_width``, from the
absolute residuals, at the same level).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from getdiff import __version__
from getdiff.errors import InputError
from getdiff.io import atomic_path
from getdiff.modeling.diffusion import SCALE_FLOOR

# Bins with fewer regions than this take the whole feature's quantiles: 19 is the least n whose
# 90% interval has both order statistics inside the sample.
MIN_BIN_REGIONS = 20
# Intervals are calibrated on the validation chromosomes, never on the test ones.
CALIBRATION_SPLIT = "validation"
# Levels metrics.json reports, and the grid of its reliability curve.
REPORTED_LEVELS = (0.5, 0.9)
RELIABILITY_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
# The sampler settings that change the point predictor an interval is calibrated for (the seed
# draws other noise from the same predictor, so it is not one of them).
SAMPLER_KEYS = ("method", "steps", "eta", "num_samples")


def _order_statistic_index(n: np.ndarray, probability: float) -> np.ndarray:
    """0-based index of the ``ceil((n + 1) p)``-th of each of n sorted values (the largest when
    that exceeds n): the split-conformal bound holding ``p`` of a new value's probability."""
    k = np.ceil((n + 1) * probability)
    return (np.clip(k, 1, np.maximum(n, 1)) - 1).astype(np.int64)


def _shortest_bounds(residuals: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """(L, 2, F) the shortest interval between order statistics of each column of (N, F)
    residuals (NaN = absent) that holds ``k = ceil((n + 1) level)`` of its n values' gaps, so
    that a new exchangeable value falls inside with probability k / (n + 1) >= level."""
    ordered = np.sort(residuals, axis=0)  # NaN sorts last
    n = np.sum(~np.isnan(residuals), axis=0)
    out = np.full((len(levels), 2, residuals.shape[1]), np.nan)
    if len(ordered) == 0:
        return out
    starts = np.arange(len(ordered))[:, None]
    for i, level in enumerate(levels):
        k = np.minimum(np.ceil((n + 1) * level), np.maximum(n - 1, 0)).astype(np.int64)
        ends = starts + k[None, :]
        valid = ends < n[None, :]
        upper = np.take_along_axis(ordered, np.minimum(ends, len(ordered) - 1), axis=0)
        width = np.where(valid, upper - ordered, np.inf)
        best = np.argmin(width, axis=0)[None, :]
        out[i, 0] = np.take_along_axis(ordered, best, axis=0)[0]
        out[i, 1] = np.take_along_axis(upper, best, axis=0)[0]
    return np.where(n[None, None, :] > 0, out, np.nan)


@dataclass
class Calibration:
    """Binned residual bounds of one predictor on one cell type's calibration regions."""

    features: list[str]  # the columns of the predictions it applies to
    levels: np.ndarray  # (L,) central interval levels
    edges: np.ndarray  # (B - 1, F) interior bin edges on predicted / context scale
    lower: np.ndarray  # (L, B, F) standardised residual of the lower bound
    upper: np.ndarray  # (L, B, F) standardised residual of the upper bound
    counts: np.ndarray  # (B, F) calibration regions per bin
    half_width: np.ndarray  # (L, F) the constant-width reference: one |residual| bound for all

    @classmethod
    def fit(
        cls,
        observed: np.ndarray,
        predicted: np.ndarray,
        scale: np.ndarray,
        features: list[str],
        levels: list[float],
        bins: int,
    ) -> Calibration:
        """Calibrate (N, F) predictions with their (N, F) context scales against observed values
        (see the module docstring)."""
        observed = np.asarray(observed, dtype=np.float64)
        predicted = np.asarray(predicted, dtype=np.float64)
        scale = np.maximum(np.asarray(scale, dtype=np.float64), SCALE_FLOOR)
        levels = np.asarray(sorted(set(levels)), dtype=np.float64)
        bins = max(1, min(bins, len(observed) // MIN_BIN_REGIONS))
        ratio = predicted / scale
        edges = (
            np.quantile(ratio, np.arange(1, bins) / bins, axis=0)
            if bins > 1
            else np.empty((0, predicted.shape[1]))
        )
        residuals = (observed - predicted) / scale
        which = _bin_of(ratio, edges)
        pooled = _shortest_bounds(residuals, levels)
        bounds = np.empty((len(levels), bins, 2, predicted.shape[1]))
        counts = np.empty((bins, predicted.shape[1]), dtype=np.int64)
        for b in range(bins):
            inside = which == b
            counts[b] = inside.sum(axis=0)
            own = _shortest_bounds(np.where(inside, residuals, np.nan), levels)
            bounds[:, b] = np.where(counts[b] >= MIN_BIN_REGIONS, own, pooled)
        half_width = np.stack([constant_width(observed - predicted, level) for level in levels])
        return cls(features, levels, edges, bounds[:, :, 0], bounds[:, :, 1], counts, half_width)

    def select(self, columns: list[int]) -> Calibration:
        """The calibration of the features at ``columns`` only."""
        return Calibration(
            [self.features[j] for j in columns],
            self.levels,
            self.edges[:, columns],
            self.lower[:, :, columns],
            self.upper[:, :, columns],
            self.counts[:, columns],
            self.half_width[:, columns],
        )

    def level_index(self, level: float) -> int:
        found = np.flatnonzero(np.isclose(self.levels, level))
        if not len(found):
            raise KeyError(f"no interval level {level:g} (calibrated: {self.level_names()})")
        return int(found[0])

    def level_names(self) -> str:
        return ", ".join(f"{v:g}" for v in self.levels)

    def interval(
        self, predicted: np.ndarray, scale: np.ndarray, level: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) of (N, F) predictions with their context scales at ``level``, float32,
        lower clipped at 0."""
        i = self.level_index(level)
        predicted = np.asarray(predicted, dtype=np.float64)
        scale = np.maximum(np.asarray(scale, dtype=np.float64), SCALE_FLOOR)
        which = _bin_of(predicted / scale, self.edges)
        columns = np.arange(predicted.shape[1])[None, :]
        lower = predicted + scale * self.lower[i][which, columns]
        upper = predicted + scale * self.upper[i][which, columns]
        return np.maximum(lower, 0.0).astype(np.float32), upper.astype(np.float32)

    def constant_interval(
        self, predicted: np.ndarray, level: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """The constant-width reference interval at ``level``: predicted -/+ one half-width."""
        half = self.half_width[self.level_index(level)]
        predicted = np.asarray(predicted, dtype=np.float64)
        return np.maximum(predicted - half, 0.0), predicted + half

    def to_frame(self) -> pd.DataFrame:
        """One row per level x bin x feature: the bin's range of predicted / context scale and
        the standardised residuals of its bounds."""
        n_levels, n_bins, n_features = self.lower.shape
        low = np.vstack([np.full(n_features, -np.inf), self.edges])
        high = np.vstack([self.edges, np.full(n_features, np.inf)])
        shape = (n_levels, n_bins, n_features)
        return pd.DataFrame(
            {
                "feature": np.broadcast_to(np.asarray(self.features, dtype=object), shape).ravel(),
                "level": np.broadcast_to(self.levels[:, None, None], shape).ravel(),
                "bin": np.broadcast_to(np.arange(n_bins)[None, :, None], shape).ravel(),
                "ratio_low": np.broadcast_to(low[None], shape).ravel(),
                "ratio_high": np.broadcast_to(high[None], shape).ravel(),
                "z_low": self.lower.ravel(),
                "z_high": self.upper.ravel(),
                "n": np.broadcast_to(self.counts[None], shape).ravel(),
                "constant_half_width": np.broadcast_to(self.half_width[:, None], shape).ravel(),
            }
        )

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Calibration:
        """Inverse of :meth:`to_frame` (rows in any order)."""
        features = list(dict.fromkeys(frame["feature"]))
        levels = np.sort(frame["level"].unique())
        n_bins = int(frame["bin"].max()) + 1
        f = pd.Categorical(frame["feature"], categories=features).codes
        l_index = np.searchsorted(levels, frame["level"].to_numpy())
        b = frame["bin"].to_numpy()
        shape = (len(levels), n_bins, len(features))
        if len(frame) != math.prod(shape):
            raise ValueError(f"expected {math.prod(shape)} rows, got {len(frame)}")
        lower, upper = np.full(shape, np.nan), np.full(shape, np.nan)
        counts = np.zeros(shape[1:], dtype=np.int64)
        half_width = np.full((len(levels), len(features)), np.nan)
        half_width[l_index, f] = frame["constant_half_width"].to_numpy()
        lower[l_index, b, f] = frame["z_low"].to_numpy()
        upper[l_index, b, f] = frame["z_high"].to_numpy()
        counts[b, f] = frame["n"].to_numpy()
        edges = np.zeros((n_bins - 1, len(features)))
        first = l_index == 0
        inner = first & (b > 0)
        edges[b[inner] - 1, f[inner]] = frame["ratio_low"].to_numpy()[inner]
        return cls(features, levels, edges, lower, upper, counts, half_width)


def _bin_of(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(N, F) bin of each value: the number of its feature's edges it lies above."""
    which = np.zeros(values.shape, dtype=np.int64)
    for edge in edges:
        which += values > edge
    return which


def context_scale(
    windows: np.ndarray, first_mask: np.ndarray, missing: np.ndarray | None = None
) -> np.ndarray:
    """(n, R, F) context scale of each window position: the standard deviation of each feature
    over the window's rows that the pass predicting the position left unmasked (the first pass
    hides ``first_mask``, the second the rest; ``missing`` (n, R) rows are never context)."""
    windows = np.asarray(windows, dtype=np.float64)
    n, size, _ = windows.shape
    scale = np.empty(windows.shape, dtype=np.float32)
    absent = np.zeros((n, size), dtype=bool) if missing is None else missing
    for hidden in (first_mask, ~first_mask):
        keep = (~hidden[None, :] & ~absent)[..., None]
        count = np.maximum(keep.sum(axis=1, keepdims=True), 1)
        mean = (windows * keep).sum(axis=1, keepdims=True) / count
        spread = np.sqrt((((windows - mean) * keep) ** 2).sum(axis=1, keepdims=True) / count)
        scale[:, hidden] = spread
    return scale


def constant_width(residuals: np.ndarray, level: float) -> np.ndarray:
    """(F,) the conformal bound of |residual| at ``level`` over all (N, F) residuals: the
    half-width of the same interval for every region (the reference a binned one must beat)."""
    absolute = np.sort(np.abs(np.asarray(residuals, dtype=np.float64)), axis=0)
    n = np.full(absolute.shape[1], len(absolute))
    if not len(absolute):
        return np.full(absolute.shape[1], np.nan)
    index = _order_statistic_index(n, level)
    return absolute[index, np.arange(absolute.shape[1])]


def coverage_summary(
    observed: np.ndarray, lower: np.ndarray, upper: np.ndarray, groups: int = 5
) -> dict:
    """Empirical coverage and mean width of intervals over all values, and the coverage within
    ``groups`` equal-size groups of increasing width (conditional calibration)."""
    inside = (observed >= lower) & (observed <= upper)
    width = (upper - lower).ravel()
    order = np.argsort(width, kind="stable")
    parts = np.array_split(order, groups) if groups and len(order) >= groups else []
    return {
        "coverage": float(inside.mean()) if inside.size else math.nan,
        "mean_width": float(width.mean()) if width.size else math.nan,
        "coverage_by_width_quintile": [float(inside.ravel()[p].mean()) for p in parts],
        "mean_width_by_width_quintile": [float(width[p].mean()) for p in parts],
        "n": int(inside.size),
    }


@dataclass
class CalibrationSet:
    """A model group's calibrations (``calibration.parquet``): cell type -> predictor -> fit."""

    path: Path
    meta: dict  # sampler, split, bins, levels, model, getdiff_version
    fits: dict[str, dict[str, Calibration]]

    def of(self, cell_type: str, predictor: str = "model") -> Calibration:
        if cell_type not in self.fits or predictor not in self.fits[cell_type]:
            raise InputError(
                self.path,
                f"has no calibration of {predictor!r} for cell type {cell_type!r} (it holds "
                f"{', '.join(sorted(self.fits))}); rerun getdiff calibrate for this model group",
            )
        return self.fits[cell_type][predictor]

    def sampler_differences(self, sampler: dict) -> list[str]:
        """'key: calibrated X, here Y' for each sampler setting that differs from ``sampler``."""
        calibrated = self.meta["sampler"]
        return [
            f"{key}: calibrated {calibrated[key]!r}, here {sampler[key]!r}"
            for key in SAMPLER_KEYS
            if calibrated.get(key) != sampler.get(key)
        ]


def write_calibration(path: str | Path, fits: dict[str, dict[str, Calibration]], meta: dict):
    """One Parquet of every fit's :meth:`Calibration.to_frame` rows, ``meta`` in its metadata."""
    frames = [
        fit.to_frame().assign(cell_type=cell_type, predictor=predictor)
        for cell_type, by_predictor in fits.items()
        for predictor, fit in by_predictor.items()
    ]
    frame = pd.concat(frames, ignore_index=True)
    leading = ["cell_type", "predictor", "feature"]
    frame = frame[leading + [c for c in frame.columns if c not in leading]]
    table = pa.Table.from_pandas(frame, preserve_index=False)
    info = {**meta, "getdiff_version": __version__}
    table = table.replace_schema_metadata({b"getdiff": json.dumps(info)})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_calibration(path: str | Path) -> CalibrationSet:
    """The :class:`CalibrationSet` in ``path`` (written by :func:`write_calibration`)."""
    path = Path(path)
    try:
        table = pq.read_table(path)
        meta = json.loads(table.schema.metadata[b"getdiff"])
    except (OSError, KeyError, TypeError, ValueError, pa.ArrowInvalid) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise InputError(path, "is not a calibration file written by getdiff calibrate") from None
    frame = table.to_pandas()
    fits: dict[str, dict[str, Calibration]] = {}
    for (cell_type, predictor), rows in frame.groupby(["cell_type", "predictor"], sort=False):
        fits.setdefault(cell_type, {})[predictor] = Calibration.from_frame(rows)
    return CalibrationSet(path, meta, fits)


def interval_scores(
    observed: np.ndarray, predicted: np.ndarray, scale: np.ndarray, fit: Calibration
) -> dict:
    """Coverage of ``fit``'s intervals around (N, T) predictions (with their context scales) of
    (N, T) observed values: at each reported level, with two constant-width references beside
    it (the one calibrated on validation, and the one that covers as much here, whose width is
    chosen on these very values), and the reliability curve."""
    absolute = np.abs(observed - predicted).ravel()
    result = {}
    for level in REPORTED_LEVELS:
        lower, upper = fit.interval(predicted, scale, level)
        summary = coverage_summary(observed, lower, upper)
        low, high = fit.constant_interval(predicted, level)
        reference = coverage_summary(observed, low, high, groups=0)
        summary["constant_width"] = {
            "coverage": reference["coverage"],
            "mean_width": reference["mean_width"],
        }
        same = 2 * float(np.quantile(absolute, summary["coverage"])) if absolute.size else math.nan
        summary["constant_width_same_coverage"] = same
        result[f"{level:g}"] = summary
    curve = [fit.interval(predicted, scale, level) for level in RELIABILITY_LEVELS]
    result["reliability"] = {
        "levels": list(RELIABILITY_LEVELS),
        "coverage": [float(((observed >= lo) & (observed <= hi)).mean()) for lo, hi in curve],
    }
    return result
