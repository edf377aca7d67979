"""The linear answer that interpretation has to beat: a ridge of accessibility on motif presence.

Per cell type, fitted on the regions of the training split (each region once), the accessibility
the model reads ([0, 1]) regressed on

- the presence (feature > 0) of each motif in the region itself;
- the number of other regions carrying each motif in each distance band of ``interpret``
  (``distance_bands``, tiling ``context_bp``);
- the number carrying it from ``context_bp`` to DOMAIN_FACTOR x ``context_bp``: the motif density
  of the domain. Motif content co-varies with accessibility along the genome, so without this
  term a motif common in open domains would read as acting on its neighbours.

Inputs are standardised, with a light ridge (PENALTY) so that a motif that never varies gets 0.
``ridge_cis_effect`` is the coefficient of a region's own presence, and ``ridge_context_effect``
the band coefficients times the mean counts per band of the interpreted regions with an instance
within reach, as ``context_effect`` is formed from the knock-outs. Both are in the units of
:mod:`getdiff.evaluation.knockout` once multiplied by the cell type's units.
"""

from __future__ import annotations

import numpy as np

from getdiff.evaluation.knockout import InterpretSettings
from getdiff.tensors import ACCESSIBILITY, WindowSet, region_midpoints

DOMAIN_FACTOR = 10  # the domain term counts instances from context_bp to 10 x context_bp
PENALTY = 1.0  # ridge penalty on standardised inputs (tens of thousands of regions)
CHUNK = 8192  # regions per block when accumulating the normal equations

_CHROM_SPACING = 1e11  # larger than any chromosome: one sorted axis, no count crosses a chromosome


def _sorted_axis(windows: WindowSet) -> tuple[np.ndarray, np.ndarray]:
    """The rows once, ordered along one axis (chromosome offset + midpoint); (order, position)."""
    codes = windows.regions["chrom"].astype("category").cat.codes.to_numpy(np.float64)
    position = codes * _CHROM_SPACING + region_midpoints(windows.regions)
    order = np.argsort(position, kind="stable")
    return order, position[order]


def band_counts(
    windows: WindowSet, motifs: np.ndarray, bands: list[tuple[int, int]]
) -> tuple[np.ndarray, np.ndarray]:
    """(n, M) presence and (n, B, M) number of *other* regions carrying each motif at a distance
    in each band [lo, hi), for the rows of ``windows`` in their stored order."""
    order, position = _sorted_axis(windows)
    presence = (windows.features[order][:, motifs] > 0).astype(np.float64)
    cumulative = np.vstack([np.zeros((1, len(motifs))), np.cumsum(presence, axis=0)])

    def near(reach: float) -> np.ndarray:  # regions carrying each motif at |distance| < reach
        upper = np.searchsorted(position, position + reach, side="left")
        return cumulative[upper] - cumulative[np.searchsorted(position, position - reach, "right")]

    # a band [lo, hi): within hi and not within lo (the region itself excluded from the first)
    counts = np.stack([near(hi) - (near(lo) if lo > 0 else presence) for lo, hi in bands], axis=1)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    # small whole numbers: exact in float32, half the memory of the inputs
    return presence[inverse].astype(np.float32), counts[inverse].astype(np.float32)


def _inputs(windows: WindowSet, motifs: np.ndarray, settings: InterpretSettings) -> np.ndarray:
    """(n, M x (B + 2)) inputs: own presence, band counts, domain counts."""
    bands = [*settings.distance_bands, (settings.context_bp, DOMAIN_FACTOR * settings.context_bp)]
    presence, counts = band_counts(windows, motifs, bands)
    return np.concatenate([presence, counts.reshape(len(presence), -1)], axis=1)


def _ridge(inputs: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Coefficients (in the inputs' own units) of a ridge on standardised inputs, intercept free."""
    n, p = inputs.shape
    gram, cross = np.zeros((p, p)), np.zeros(p)
    for start in range(0, n, CHUNK):
        block = inputs[start : start + CHUNK].astype(np.float64)
        gram += block.T @ block
        cross += block.T @ target[start : start + CHUNK]
    mean = inputs.mean(axis=0, dtype=np.float64)
    gram -= n * np.outer(mean, mean)
    cross -= n * mean * target.mean()
    scale = np.sqrt(np.maximum(np.diag(gram) / n, 0.0))
    scale[scale == 0] = 1.0  # a constant input: its coefficient is held at 0 by the penalty
    standard = gram / np.outer(scale, scale) + PENALTY * np.eye(p)
    return np.linalg.solve(standard, cross / scale) / scale


def ridge_effects(
    train: WindowSet, interpreted: WindowSet, motifs: np.ndarray, settings: InterpretSettings
) -> dict[str, np.ndarray]:
    """(M,) ``cis`` and ``context`` effects of the ridge fitted on ``train`` (model units), the
    context averaged over the regions of ``interpreted`` with an instance within reach."""
    inputs = _inputs(train, motifs, settings)
    target = train.features[:, train.meta["feature_names"].index(ACCESSIBILITY)]
    beta = _ridge(inputs, target.astype(np.float64))
    n_motifs, n_bands = len(motifs), len(settings.distance_bands)
    per_instance = beta[n_motifs : n_motifs * (1 + n_bands)].reshape(n_bands, n_motifs)
    _, counts = band_counts(interpreted, motifs, list(settings.distance_bands))
    within = counts.sum(axis=1) > 0  # (n, M)
    mean_counts = (counts * within[:, None, :]).sum(axis=0) / np.maximum(within.sum(axis=0), 1)
    return {"cis": beta[:n_motifs], "context": (per_instance * mean_counts).sum(axis=0)}
