"""The ridge baseline of interpretation: neighbour counts per band are exact, and the ridge
recovers the cis and neighbour weights of data made by a known linear rule, without reading a
domain's motif density as a neighbour effect."""

from __future__ import annotations

import numpy as np
import pandas as pd

from getdiff.config import validate_config
from getdiff.evaluation.knockout import InterpretSettings
from getdiff.evaluation.motif_regression import band_counts, ridge_effects
from getdiff.tensors import WindowSet


def settings() -> InterpretSettings:
    return InterpretSettings.from_config(validate_config({"cell_types": "x", "motif_scan": "s"}))


def _window_set(middle: np.ndarray, chrom: np.ndarray, features: np.ndarray) -> WindowSet:
    regions = pd.DataFrame(
        {
            "chrom": chrom,
            "start": (middle - 100).astype(np.int64),
            "end": (middle + 100).astype(np.int64),
            "name": [f"p{i}" for i in range(len(middle))],
            "region_id": np.arange(len(middle)),
        }
    )
    names = [f"M{i}" for i in range(features.shape[1] - 1)] + ["accessibility"]
    meta = {"feature_names": names, "window_size": 1, "cell_type": "ct", "split": "train"}
    n = len(middle)
    return WindowSet(features, regions, np.arange(n), np.ones((n, 1), bool), meta)


def test_band_counts_match_a_distance_matrix_across_chromosomes_and_shared_midpoints():
    rng = np.random.default_rng(0)
    n = 400
    middle = np.cumsum(rng.integers(0, 4000, n)).astype(np.float64)  # 0: shared midpoints
    chrom = np.where(np.arange(n) < 250, "chr2", "chr1")  # stored out of chromosome order
    features = np.zeros((n, 3), np.float32)
    features[:, :2] = rng.random((n, 2)) < 0.4
    order = rng.permutation(n)
    windows = _window_set(middle[order], chrom[order], features[order])
    bands = [(0, 5_000), (5_000, 20_000), (20_000, 60_000)]
    presence, counts = band_counts(windows, np.array([0, 1]), bands)

    mid, same = middle[order], chrom[order][:, None] == chrom[order][None, :]
    distance = np.abs(mid[:, None] - mid[None, :])
    other = ~np.eye(n, dtype=bool) & same
    for b, (lo, hi) in enumerate(bands):
        inside = (distance >= lo) & (distance < hi) & other
        np.testing.assert_array_equal(counts[:, b], inside @ features[order, :2])
    np.testing.assert_array_equal(presence, features[order, :2] > 0)


def test_the_ridge_recovers_a_linear_rule_and_deconfounds_the_domain():
    rng = np.random.default_rng(1)
    n = 20_000
    middle = np.cumsum(rng.integers(800, 2200, n)).astype(np.float64)
    domain = np.sin(middle / 2e6)  # slow (12 Mb period): a chromatin domain signal
    rates = np.array([0.3, 0.2, 0.25, 0.3, 0.3])
    logit = (
        np.log(rates / (1 - rates))[None, :]
        + np.array([0.5, -0.5, 0.5, -0.5, 1.5]) * domain[:, None]
    )
    motifs = (rng.random((n, 5)) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    cis = np.array([0.03, -0.02, 0.0, 0.01, 0.0])
    neighbour = np.array([0.0, 0.0, 0.004, -0.003, 0.0])  # per carrier, decaying
    around = np.zeros(n)  # the neighbours' sum by offsets (a 20k x 20k distance matrix is big)
    emitted = motifs @ neighbour
    for offset in range(1, 120):
        gap = middle[offset:] - middle[:-offset]
        decay = np.where(gap < 100_000, np.exp(-gap / 15_000), 0.0)
        around[:-offset] += decay * emitted[offset:]
        around[offset:] += decay * emitted[:-offset]
    access = 0.5 + motifs @ cis + around + 0.05 * domain + 0.01 * rng.standard_normal(n)
    features = np.concatenate([motifs, access[:, None]], axis=1).astype(np.float32)
    windows = _window_set(middle, np.full(n, "chr1"), features)
    effects = ridge_effects(windows, windows, np.arange(5), settings())

    np.testing.assert_allclose(effects["cis"], cis, atol=2e-3)
    # the neighbour-acting motifs' context effects: their sign, and larger than the others'
    assert effects["context"][2] > 0.01 and effects["context"][3] < -0.01
    # the domain (which opens chromatin) is marked by every motif's density, most by motif 4's:
    # not read as the others acting on their neighbours (0.037 for motif 4 without the domain term)
    assert (
        np.abs(effects["context"][[0, 1, 4]]).max() < 0.25 * np.abs(effects["context"][2:4]).min()
    )
