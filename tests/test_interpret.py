"""getdiff interpret: the knock-out fit recovers known cis and neighbour effects of a model whose
answer is known, the tables have their columns, and the settings are checked."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from getdiff.config import validate_config
from getdiff.errors import ConfigError
from getdiff.evaluation.interpret import _differential, interpret_cell_type
from getdiff.evaluation.knockout import InterpretSettings, Predictor
from getdiff.evaluation.perturb import _motif_columns
from getdiff.modeling.diffusion import complementary_masks
from getdiff.tensors import WindowSet

SIZE = 300
MOTIFS = ["A", "B", "C", "D"]
CIS = np.array([0.3, -0.2, 0.0, 0.1])  # a carrier's own motif adds this
NEIGHBOUR = np.array([0.0, 0.0, 0.05, -0.04])  # per instance at distance 0
DECAY_BP = 15_000.0


def settings(**interpret) -> InterpretSettings:
    config = validate_config(
        {"cell_types": "x.tsv", "motif_scan": "s.bed", "interpret": {"bootstrap": 50, **interpret}}
    )
    return InterpretSettings.from_config(config)


def window_set(seed: int = 0, n_windows: int = 3) -> WindowSet:
    rng = np.random.default_rng(seed)
    n = SIZE * n_windows
    features = np.zeros((n, len(MOTIFS) + 1), dtype=np.float32)
    features[:, :-1] = rng.random((n, len(MOTIFS))) < [0.3, 0.2, 0.25, 0.3]
    features[:, -1] = rng.random(n)
    middle = np.cumsum(rng.integers(800, 2200, n)).astype(np.int64)
    regions = pd.DataFrame(
        {
            "chrom": "chr1",
            "start": middle - 100,
            "end": middle + 100,
            "name": [f"p{i}" for i in range(n)],
            "region_id": np.arange(n),
        }
    )
    meta = {
        "feature_names": [*MOTIFS, "accessibility"],
        "window_size": SIZE,
        "cell_type": "ct",
        "split": "test",
        "scaling": {"accessibility": {"constant": False, "max_log10_cpm": 2.0}},
    }
    starts = np.arange(n_windows) * SIZE
    return WindowSet(features, regions, starts, np.ones((n_windows, SIZE), bool), meta)


class LinearPredictor(Predictor):
    """A 'model' whose prediction is known: own motifs x CIS plus neighbours' motifs x
    NEIGHBOUR x exp(-distance / DECAY_BP) within 100 kb (the same under either mask)."""

    def __init__(self, windows: WindowSet) -> None:
        masks = complementary_masks(SIZE, 0.5, 0)
        super().__init__(
            None, None, windows, masks, None, {"predict": "accessibility"}, "cpu", 8, 0
        )

    def __post_init__(self) -> None:
        self.column = len(MOTIFS)
        self.midpoints = (self.windows.regions["start"] + self.windows.regions["end"]) / 2
        self.midpoints = self.midpoints.to_numpy(np.float64)

    def predict(self, window, variants, passes):
        mid = self.midpoints[self.windows.rows([window])[0]]
        distance = np.abs(mid[:, None] - mid[None, :])
        kernel = np.where(distance < 100_000, np.exp(-distance / DECAY_BP), 0.0)
        np.fill_diagonal(kernel, 0.0)
        motifs = variants[..., : len(MOTIFS)].astype(np.float64)
        own = motifs @ CIS
        around = np.einsum("ij,vjm,m->vi", kernel, motifs, NEIGHBOUR)
        return (0.5 + own + around).astype(np.float32)


def test_the_fit_recovers_known_cis_and_neighbour_effects():
    windows = window_set()
    table, by_distance = interpret_cell_type(LinearPredictor(windows), MOTIFS, settings(), 1.0)
    table = table.set_index("motif")
    np.testing.assert_allclose(table["cis_effect"], CIS, atol=2e-3)
    assert (table["cis_low"] <= table["cis_effect"]).all()
    assert (table["cis_effect"] <= table["cis_high"]).all()
    # no neighbour effect: context 0; neighbour-acting motifs: their sign, decaying with distance
    assert abs(table.loc["A", "context_effect"]) < 2e-3
    assert table.loc["C", "context_effect"] > 0.05 and table.loc["D", "context_effect"] < -0.04
    for motif, sign in (("C", 1), ("D", -1)):
        curve = by_distance[by_distance["motif"] == motif]["per_instance"].to_numpy() * sign
        assert (np.diff(curve) < 0).all() and curve[-1] > 0, (motif, curve)
    # the expected per-instance effect in the first band: the kernel's mean there
    first = by_distance[(by_distance["motif"] == "C") & (by_distance["band"] == "0-10kb")]
    assert 0.6 * NEIGHBOUR[2] < first["per_instance"].item() <= NEIGHBOUR[2]
    assert (table["n_regions"] == (windows.features[:, :4] > 0).sum(axis=0)).all()
    # per instance within reach: between the first band's and the last band's
    per_instance = by_distance[by_distance["motif"] == "C"]["per_instance"]
    assert per_instance.min() < table.loc["C", "context_per_instance"] < per_instance.max()


class EvidencePredictor(LinearPredictor):
    """The linear 'model' plus a window-wide term: EVIDENCE x the mean of A over the window's
    rows. A's instances anywhere in the window shift every region alike (the model reading A's
    frequency as evidence of the domain), which is no action of A on its neighbours."""

    EVIDENCE = 30.0

    def predict(self, window, variants, passes):
        frequency = variants[..., MOTIFS.index("A")].mean(axis=1, keepdims=True)
        return super().predict(window, variants, passes) + self.EVIDENCE * frequency


def test_a_window_wide_shift_is_not_read_as_a_context_effect():
    table, by_distance = interpret_cell_type(
        EvidencePredictor(window_set()), MOTIFS, settings(), 1.0
    )
    table = table.set_index("motif")
    per_instance = EvidencePredictor.EVIDENCE / SIZE
    np.testing.assert_allclose(table.loc["A", "beyond_per_instance"], per_instance, rtol=0.05)
    assert abs(table.loc["A", "context_effect"]) < 2e-3
    a_curve = by_distance[by_distance["motif"] == "A"]["per_instance"]
    assert a_curve.abs().max() < 0.05 * per_instance
    np.testing.assert_allclose(table["cis_effect"], CIS + np.eye(4)[0] * per_instance, atol=2e-3)
    assert table.loc["C", "context_effect"] > 0.05 and table.loc["D", "context_effect"] < -0.04


class ExplainingPredictor(LinearPredictor):
    """A 'model' with no neighbour effect that reads a shared domain level off the visible
    rows: own motifs x CIS plus LEVEL x the mean over the visible rows within 100 kb of their
    accessibility minus their own motifs' part. Knocking A out of visible neighbours while they
    keep their observed accessibility raises that level estimate: a context effect of -LEVEL x
    CIS[A] that is the model's explanation, not an effect of A on its neighbours."""

    LEVEL = 0.8

    def predict(self, window, variants, passes):
        mid = self.midpoints[self.windows.rows([window])[0]]
        near = np.abs(mid[:, None] - mid[None, :]) < 100_000
        np.fill_diagonal(near, False)
        first, second = (np.asarray(m) for m in self.masks)
        hidden = np.where(np.asarray(passes)[:, None] == 0, first, second)
        motifs = variants[..., : len(MOTIFS)].astype(np.float64)
        own = motifs @ CIS
        residual = (variants[..., self.column] - own) * ~hidden  # (V, R), visible rows only
        count = (near[None] & ~hidden[:, None, :]).sum(axis=2)
        level = np.einsum("ij,vj->vi", near, residual) / np.maximum(count, 1)
        return (own + self.LEVEL * level).astype(np.float32)


def test_propagated_knock_outs_do_not_read_the_models_explanation_as_a_context_effect():
    windows = window_set()
    mids = (windows.regions["start"] + windows.regions["end"]).to_numpy() / 2
    domain = 0.2 * np.sin(mids / 2e5)
    windows.features[:, -1] = 0.3 + windows.features[:, :4] @ CIS + domain
    predictor = ExplainingPredictor(windows)
    naive = interpret_cell_type(predictor, MOTIFS, settings(propagate=False), 1.0)[0]
    kept = interpret_cell_type(predictor, MOTIFS, settings(), 1.0)[0]
    naive, kept = naive.set_index("motif"), kept.set_index("motif")
    # without propagation: A (cis +0.3) seems to close its neighbours, B (cis -0.2) to open them
    assert naive.loc["A", "context_effect"] < -0.02 and naive.loc["B", "context_effect"] > 0.005
    for motif in ("A", "B", "D"):
        assert abs(kept.loc[motif, "context_effect"]) < 0.25 * abs(
            naive.loc[motif, "context_effect"]
        )
    np.testing.assert_allclose(kept["cis_effect"], CIS, atol=0.02)


def test_recovery_scores_a_table_against_the_planted_effects(tmp_path):
    from getdiff.simulation import recovery

    planted = pd.DataFrame(
        {
            "cell_type": "ct",
            "motif": ["A", "B", "C", "D", "E"],
            "kind": ["cis", "cis", "cis", "neighbour", "cis"],
            "partner": ".",
            "weight": [0.3, -0.1, 0.2, 0.25, 0.0],
            "decay_bp": [0, 0, 0, 20000, 0],
        }
    )
    effects = pd.DataFrame(
        {
            "cell_type": "ct",
            "motif": ["A", "B", "C", "D", "E"],
            "n_regions": [500, 500, 500, 500, 50],
            "cis_effect": [0.03, -0.01, 0.02, 0.0, 9.0],  # E: too few regions to count
            "context_effect": [0.001, 0.0, -0.002, 0.01, 0.0],
            "ridge_cis_effect": [0.03, 0.02, -0.01, 0.0, 0.0],
            "ridge_context_effect": [0.02, 0.0, -0.002, 0.01, 0.0],
        }
    )
    planted.to_csv(tmp_path / "planted.tsv", sep="\t", index=False)
    effects.to_csv(tmp_path / "effects.tsv", sep="\t", index=False)
    row = recovery(tmp_path / "effects.tsv", tmp_path / "planted.tsv").iloc[0]
    assert row["cis_spearman"] == 1.0 and row["motifs"] == 3  # D is not a cis motif
    assert row["neighbour_ranks"] == [1]
    assert row["ridge_cis_spearman"] == 0.5 and row["ridge_neighbour_ranks"] == [2]
    assert np.isnan(row["differential_spearman"])  # one cell type: nothing to differ from
    # two cell types: differential_cis against each planted weight minus the motif's mean
    other = planted.assign(cell_type="ct2", weight=[0.1, -0.1, 0.4, 0.25, 0.0])
    pd.concat([planted, other]).to_csv(tmp_path / "planted.tsv", sep="\t", index=False)
    both = pd.concat([effects, effects.assign(cell_type="ct2")])
    both["differential_cis"] = [0.01, 0.0, -0.01, 0.0, 0.0, -0.01, 0.0, 0.01, 0.0, 0.0]
    both.to_csv(tmp_path / "effects.tsv", sep="\t", index=False)
    rows = recovery(tmp_path / "effects.tsv", tmp_path / "planted.tsv")
    assert rows["differential_spearman"].tolist() == [1.0, 1.0]


def test_effects_are_in_log10_cpm_units_and_the_bootstrap_is_seeded():
    windows = window_set(seed=1, n_windows=2)
    one, _ = interpret_cell_type(LinearPredictor(windows), MOTIFS, settings(), 1.0)
    two, _ = interpret_cell_type(LinearPredictor(windows), MOTIFS, settings(), 2.0)
    again, _ = interpret_cell_type(LinearPredictor(windows), MOTIFS, settings(), 1.0)
    np.testing.assert_allclose(two["cis_effect"], 2 * one["cis_effect"], rtol=1e-9)
    pd.testing.assert_frame_equal(one, again)


def test_differential_effects_are_relative_to_the_group_mean():
    table = pd.DataFrame(
        {
            "cell_type": ["x", "y", "x", "y"],
            "motif": ["A", "A", "B", "B"],
            "cis_effect": [1.0, 3.0, 0.0, 0.0],
        }
    )
    out = _differential(table, ["cis"])
    assert out["differential_cis"].tolist() == [-1.0, 1.0, 0.0, 0.0]


def test_unknown_motif_names_are_refused_with_close_ones():
    with pytest.raises(ConfigError, match=r"'CTFC' \(did you mean CTCF"):
        _motif_columns(["CTFC"], ["CTCF", "GATA1", "SPI1"])


@pytest.mark.parametrize(
    "bands, message",
    [
        ([[0, 10000], [20000, 100000]], "band 2 is"),
        ([[0, 10000], [10000, 50000]], "ends at 50000"),
        ([[5, 100000]], "band 1 is"),
    ],
)
def test_distance_bands_must_tile_the_context(bands, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(
            {"cell_types": "x.tsv", "motif_scan": "s.bed", "interpret": {"distance_bands": bands}}
        )


def test_common_noise_makes_a_variant_identical_to_the_original():
    """The same input under common noise predicts the same, so a knock-out's difference is its
    own (no sampling noise)."""
    from getdiff.modeling.diffusion import GaussianDiffusion
    from getdiff.modeling.model import build_model

    windows = window_set(n_windows=1)
    model = build_model("tiny", num_motif=len(MOTIFS) + 1, num_regions=SIZE).eval()
    diffusion = GaussianDiffusion()
    masks = complementary_masks(SIZE, 0.5, 0)
    task = {"predict": "accessibility", "scaling": "window"}
    predictor = Predictor(model, diffusion, windows, masks, None, task, torch.device("cpu"), 4, 0)
    x = windows.windows([0])[0]
    out = predictor.predict(0, np.stack([x, x, x]), np.array([0, 0, 1]))
    np.testing.assert_array_equal(out[0], out[1])
    assert not np.allclose(out[0], out[2])  # the other mask: another context


def test_the_locus_view_labels_each_peak_with_its_strongest_present_motif(tmp_path):
    from getdiff.outputs.locus import Region, plot_locus, read_locus_table, top_motifs

    table = pd.DataFrame(
        {
            "chrom": ["chr1"] * 3,
            "start": [100, 400, 900],
            "end": [300, 600, 1100],
            "split": ["test"] * 3,
            "missing": [False] * 3,
            "observed_raw.accessibility": [5.0, 8.0, 2.0],
            "imputed_raw.accessibility": [4.0, 7.0, 3.0],
            "observed.A": [1.0, 0.0, 0.0],
            "observed.B": [0.5, 0.3, 0.0],
        }
    )
    path = tmp_path / "ct.parquet"
    table.to_parquet(path)
    effects = pd.DataFrame(
        {"cell_type": ["ct", "ct"], "motif": ["A", "B"], "cis_effect": [0.1, -0.25]}
    )
    locus = read_locus_table(path)
    labels = top_motifs(locus, path, effects)
    assert labels.tolist() == ["B -0.250", "B -0.250", ""]  # |B| > |A|; the last has neither
    other = top_motifs(locus, path, effects.assign(cell_type="other"))
    assert (other == "").all()  # not interpreted: no labels, no error
    plot_locus(Region("chr1", 0, 1200), [locus], tmp_path / "locus.png", labels=[labels])
    assert (tmp_path / "locus.png").stat().st_size > 1000


def test_a_read_under_one_mask_leaves_the_rows_it_shows_unread():
    predictor = LinearPredictor(window_set(n_windows=1))
    x = predictor.windows.windows([0])[0][None]
    both, first = predictor.read(0, x), predictor.read(0, x, passes=(0,))
    hidden = np.asarray(predictor.masks[0])
    np.testing.assert_array_equal(first[0, hidden], both[0, hidden])
    assert np.isnan(first[0, ~hidden]).all() and not np.isnan(both).any()


def test_the_decay_plot_shows_the_motifs_acting_most_per_instance_not_the_most_frequent():
    from getdiff.evaluation.plots import decay_motifs

    rows = [
        ("ct", motif, start, effect)
        for motif, near, far in (("common", 1e-4, 3e-4), ("rare", -8e-4, -1e-4), ("none", 0, 0))
        for start, effect in ((0, near), (10_000, far))
    ]
    by_distance = pd.DataFrame(
        rows, columns=["cell_type", "motif", "band_start_bp", "per_instance"]
    )
    assert decay_motifs(by_distance, 2) == ["rare", "common"]
