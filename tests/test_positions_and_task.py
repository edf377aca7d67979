"""Genomic positions (rotary attention) and the accessibility task, end to end in the network,
the diffusion module and the imputation table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import active_model
from make_fixtures import fixture_weights, tiny_model
from safetensors.torch import load_file

from getdiff.errors import ConfigError
from getdiff.evaluation.impute import imputation_table
from getdiff.modeling.diffusion import GaussianDiffusion, Target
from getdiff.modeling.model import build_model
from getdiff.modeling.task import model_task, predicted_columns, predicted_features
from getdiff.tensors import WindowSet

# Made by tests/make_fixtures.py (provenance beside it) on another machine: its output is that
# machine's rounding, so it is compared to a tolerance, not bit for bit.
FIXTURE = "tests/data/tiny_model_outputs.safetensors"
# The fixture's outputs (|y| <= 0.54) come out of a 2-block, 16-wide network: dot products of
# K <= 64 terms (fc2), attention over 13 tokens, LayerNorms over 16. Another CPU's kernels (SIMD
# width, FMA or not, thread split) add those K terms in another order: each sum moves by a few
# float32 ulps (eps = 1.19e-7; about sqrt(K) * eps ~ 1e-6 relative for K = 64) and ~10 such
# layers carry it to the output. rtol 1e-5 (~84 ulps) bounds that; atol 1e-6 (8 ulps of 1) is
# the floor for outputs near 0, which inherit absolute error from O(0.1-1) activations. Measured:
# the default, AVX2 and AVX-512 kernels at 1 and 2 threads differ from the saved output by at
# most 6e-8 (1 ulp at 0.5), 1/27 of what is allowed; and a 1e-4 relative change of the inputs
# already exceeds it 20-fold (test_the_fixture_tolerance_fails_a_real_change).
FIXTURE_ATOL, FIXTURE_RTOL = 1e-6, 1e-5
NAMES = ["A", "B", "C", "accessibility"]


def assert_matches_fixture(actual: torch.Tensor, expected: torch.Tensor, msg=None) -> None:
    torch.testing.assert_close(actual, expected, atol=FIXTURE_ATOL, rtol=FIXTURE_RTOL, msg=msg)


def rotary_model(seed: int = 0, features: int = 4) -> torch.nn.Module:
    """A tiny rotary model whose adaLN and head are non-zero, so attention shows in the output."""
    return active_model(seed, num_motif=features, positions="rotary", rope_min_wavelength=100.0)


def inputs(b: int = 2, r: int = 16, f: int = 4, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, r, f, generator=g)
    mask = torch.rand(b, r, generator=g) < 0.5
    t = torch.tensor([999] * b)
    # Midpoints near the end of a large chromosome, spaced 200-20,000 bp apart.
    gaps = torch.randint(200, 20_000, (b, r), generator=g).double()
    positions = 240_000_000 + gaps.cumsum(dim=1)
    return x, mask, t, positions


@pytest.mark.parametrize("threads", [1, 2])
def test_positions_off_reproduces_the_model_before_positions_existed_to_rounding(threads):
    torch.set_num_threads(threads)  # the autouse one_torch_thread fixture restores it
    saved = load_file(FIXTURE)
    model = tiny_model(fixture_weights(saved))
    with torch.no_grad():
        out = model(saved["x"], saved["mask"], saved["t"])
        ignored = model(saved["x"], saved["mask"], saved["t"], torch.rand(2, 12) * 1e6)
    assert_matches_fixture(out, saved["output"])
    # Same process, same kernels: positions are not read when off, so the output is the same
    # bit for bit.
    assert torch.equal(ignored, out)


def fixture_positions() -> torch.Tensor:
    gaps = torch.randint(200, 20_000, (2, 12), generator=torch.Generator().manual_seed(2))
    return 240_000_000 + gaps.double().cumsum(dim=1)


def scaled(saved: dict[str, torch.Tensor], name: str, factor: float) -> torch.nn.Module:
    model = tiny_model(fixture_weights(saved))
    with torch.no_grad():
        dict(model.named_parameters())[name].mul_(factor)
    return model


# Real changes of the network or its inputs, each of which the fixture test must fail: rotary
# attention applied although positions are off, one weight matrix 0.1% larger, the timestep
# embedding one step off, every input 0.01% larger.
CHANGES = {
    "positions-leak-in-when-off": lambda s: tiny_model(fixture_weights(s), positions="rotary")(
        s["x"], s["mask"], s["t"], fixture_positions()
    ),
    "one-weight-1e-3-relative": lambda s: scaled(s, "encoder.blocks.0.attn.qkv.weight", 1 + 1e-3)(
        s["x"], s["mask"], s["t"]
    ),
    "timestep-off-by-one": lambda s: tiny_model(fixture_weights(s))(s["x"], s["mask"], s["t"] + 1),
    "inputs-1e-4-relative": lambda s: tiny_model(fixture_weights(s))(
        s["x"] * (1 + 1e-4), s["mask"], s["t"]
    ),
}


@pytest.mark.parametrize("change", CHANGES)
def test_the_fixture_tolerance_fails_a_real_change(change):
    saved = load_file(FIXTURE)
    with torch.no_grad():
        changed = CHANGES[change](saved)
    with pytest.raises(AssertionError, match="not close"):
        assert_matches_fixture(changed, saved["output"])
    # Not a near miss: well beyond what another machine's rounding could cause (1/27 of the
    # allowance measured, see FIXTURE_RTOL).
    allowed = FIXTURE_ATOL + FIXTURE_RTOL * saved["output"].abs()
    assert ((changed - saved["output"]).abs() / allowed).max() > 10


def test_permuting_regions_with_their_coordinates_permutes_the_output():
    model = rotary_model()
    x, mask, t, positions = inputs()
    perm = torch.randperm(x.shape[1], generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        permuted = model(x[:, perm], mask[:, perm], t, positions[:, perm])
        reference = model(x, mask, t, positions)[:, perm]
    torch.testing.assert_close(permuted, reference, atol=1e-5, rtol=1e-5)


def test_moving_a_masked_region_changes_its_prediction_when_positions_are_on():
    model = rotary_model()
    x, mask, t, positions = inputs()
    i = int(torch.nonzero(mask[0])[0])
    moved = positions.clone()
    moved[0, i] += 5_000
    with torch.no_grad():
        before = model(x, mask, t, positions)
        after = model(x, mask, t, moved)
    assert not torch.allclose(before[0, i], after[0, i], atol=1e-4)
    torch.testing.assert_close(before[1], after[1])  # other windows untouched


def test_shifting_a_whole_window_leaves_the_output_unchanged():
    model = rotary_model()
    x, mask, t, positions = inputs()
    with torch.no_grad():
        torch.testing.assert_close(
            model(x, mask, t, positions), model(x, mask, t, positions - 239_000_000)
        )


def test_rotary_model_without_positions_is_an_error():
    model = rotary_model()
    x, mask, t, _ = inputs()
    with pytest.raises(ValueError, match="positions"):
        model(x, mask, t)


def test_unknown_position_encoding_is_a_config_error():
    with pytest.raises(ConfigError, match="positions"):
        build_model("tiny", positions="alibi")


def test_rotary_model_has_the_same_parameters_as_the_plain_one():
    plain = build_model("tiny")
    rotary = build_model("tiny", positions="rotary")
    shapes = {k: v.shape for k, v in plain.state_dict().items()}
    assert shapes == {k: v.shape for k, v in rotary.state_dict().items()}


# --- the accessibility task ---------------------------------------------------------------------


class Recorder:
    """Stand-in network: records its input and returns a fixed prediction."""

    def __init__(self, prediction: torch.Tensor) -> None:
        self.prediction = prediction
        self.seen: list[torch.Tensor] = []

    def __call__(self, x, mask, t, positions=None, window_stats=None):
        self.seen.append(x.clone())
        self.stats = window_stats
        return self.prediction.repeat(x.shape[0] // self.prediction.shape[0], 1, 1)


def accessibility_target(window_scaling: bool = False) -> Target:
    scaled = torch.tensor([False, False, False, True]) if window_scaling else None
    return Target(predicted_columns("accessibility", NAMES), scaled)


def test_accessibility_task_predicts_only_the_accessibility_column():
    assert predicted_features("accessibility", NAMES) == ["accessibility"]
    assert predicted_columns("accessibility", NAMES).tolist() == [False, False, False, True]
    assert predicted_columns("all", NAMES) is None
    with pytest.raises(ConfigError, match="accessibility"):
        predicted_features("accessibility", ["A", "B"])


def test_masked_rows_keep_their_observed_motif_features_as_inputs():
    x0, mask, t, _ = inputs()
    recorder = Recorder(torch.zeros_like(x0))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(5))
    GaussianDiffusion().training_loss(recorder, x0, mask, t, noise, target=accessibility_target())
    seen = recorder.seen[0]
    assert torch.equal(seen[..., :3], x0[..., :3])  # motif inputs are observed, masked or not
    assert torch.equal(seen[~mask][:, 3], x0[~mask][:, 3])  # unmasked accessibility is clean
    assert not torch.allclose(seen[mask][:, 3], x0[mask][:, 3])  # masked accessibility is noised


def test_accessibility_loss_ignores_motif_columns():
    x0, mask, t, _ = inputs()
    noise = torch.randn(x0.shape)
    target = accessibility_target()
    prediction = x0.clone()
    prediction[..., 3] += 0.1
    wrong_motifs = prediction.clone()
    wrong_motifs[..., :3] = 5.0
    diffusion = GaussianDiffusion()
    loss, _ = diffusion.training_loss(Recorder(prediction), x0, mask, t, noise, target=target)
    same, _ = diffusion.training_loss(Recorder(wrong_motifs), x0, mask, t, noise, target=target)
    assert float(loss) == pytest.approx(0.01)  # mean over masked accessibility values only
    assert float(same) == float(loss)


def test_sampling_returns_observed_motif_features_for_masked_rows():
    x0, mask, _, _ = inputs()
    prediction = torch.full_like(x0, 0.5)
    mean, std = GaussianDiffusion().sample(
        Recorder(prediction), x0, mask, num_samples=2, target=accessibility_target()
    )
    assert torch.equal(mean[..., :3], x0[..., :3])
    assert torch.all(mean[mask][:, 3] == 0.5)
    assert torch.all(std[..., :3] == 0)


def test_imputation_table_reports_no_motif_predictions_in_accessibility_task():
    n, window = 4, 4
    regions = pd.DataFrame(
        {
            "chrom": ["chr1"] * n,
            "start": np.arange(n) * 100,
            "end": np.arange(n) * 100 + 50,
            "name": [f"p{i}" for i in range(n)],
            "region_id": np.arange(n),
        }
    )
    meta = {
        "feature_names": NAMES,
        "window_size": window,
        "scaling": {"motif_max": [1.0] * 3, "accessibility": {"constant": True, "value": 1.0}},
    }
    features = np.random.default_rng(0).random((n, 4)).astype(np.float32)
    windows = WindowSet(features, regions, np.array([0]), np.ones((1, window), bool), meta)
    mean = features[None].copy()
    table = imputation_table(windows, mean, "test", None, ["accessibility"])
    imputed = [c for c in table.columns if c.startswith("imputed")]
    assert imputed == ["imputed.accessibility", "imputed_raw.accessibility"]
    assert {f"observed.{name}" for name in NAMES} <= set(table.columns)


def test_a_config_contradicting_the_models_task_is_refused():
    config = {"task": {"predict": "all", "scaling": "none"}}
    assert model_task({}, config, "m.safetensors") == config["task"]  # files from before tasks
    with pytest.raises(ConfigError, match="trained with task.predict: accessibility"):
        model_task({"task": {"predict": "accessibility"}}, config, "m.safetensors")
    with pytest.raises(ConfigError, match="task.scaling: window"):
        model_task({"task": {"predict": "all", "scaling": "window"}}, config, "m.safetensors")


def test_window_scaling_standardises_by_the_unmasked_rows_and_maps_predictions_back():
    x0, mask, t, _ = inputs()
    target = accessibility_target(window_scaling=True)
    recorder = Recorder(torch.zeros_like(x0))  # predicts the window's unmasked mean
    loss, prediction = GaussianDiffusion().training_loss(
        recorder, x0, mask, t, torch.randn(x0.shape), target=target
    )
    kept = x0[0][~mask[0]][:, 3]
    standardised = recorder.seen[0][0][~mask[0]][:, 3]
    torch.testing.assert_close(standardised, (kept - kept.mean()) / kept.std(unbiased=False))
    assert torch.allclose(prediction[0][mask[0]][:, 3], kept.mean())
    assert torch.equal(prediction[..., :3], torch.zeros_like(x0[..., :3]))  # not rescaled
    # the statistics taken away are handed to the network: location then log scale
    assert recorder.stats.shape == (x0.shape[0], 2 * x0.shape[2])
    torch.testing.assert_close(recorder.stats[0, 3], kept.mean())
    torch.testing.assert_close(recorder.stats[0, 7], kept.std(unbiased=False).log())
    assert torch.all(recorder.stats[:, [0, 1, 2, 4, 5, 6]] == 0)  # motif columns: 0 and log 1
    mean, _ = GaussianDiffusion().sample(recorder, x0, mask, target=target)
    assert torch.allclose(mean[0][mask[0]][:, 3], kept.mean())


def test_window_scaling_in_the_spec_task_scales_accessibility_alone():
    from getdiff.modeling.task import target

    spec = target({"predict": "all", "scaling": "window"}, NAMES)
    assert spec.columns is None and spec.scaled.tolist() == [False, False, False, True]
    x0, mask, t, _ = inputs()
    recorder = Recorder(torch.zeros_like(x0))
    GaussianDiffusion().training_loss(recorder, x0, mask, t, torch.randn(x0.shape), target=spec)
    unmasked = ~mask[0]
    torch.testing.assert_close(recorder.seen[0][0][unmasked][:, :3], x0[0][unmasked][:, :3])


def test_window_conditioning_starts_as_a_no_op_and_then_conditions_every_window():
    torch.manual_seed(0)
    plain = build_model("tiny", num_motif=4, dropout=0.0).eval()
    torch.manual_seed(0)
    conditioned = build_model("tiny", num_motif=4, dropout=0.0, window_conditioning=True).eval()
    conditioned.load_state_dict(plain.state_dict(), strict=False)
    x, mask, t, _ = inputs()
    stats = torch.randn(x.shape[0], 8)
    with torch.no_grad():
        torch.testing.assert_close(conditioned(x, mask, t, window_stats=stats), plain(x, mask, t))
        conditioned.window_embed.weight.normal_()
        for block in conditioned.encoder.blocks:
            block.adaLN_modulation[-1].weight.normal_(std=0.1)
        conditioned.head_mask.weight.normal_(std=0.1)
        moved = stats.clone()
        moved[1] += 1.0
        before = conditioned(x, mask, t, window_stats=stats)
        after = conditioned(x, mask, t, window_stats=moved)
    torch.testing.assert_close(before[0], after[0])
    assert not torch.allclose(before[1], after[1])
    with pytest.raises(ValueError, match="window_stats"):
        conditioned(x, mask, t)


def test_cell_type_embedding_starts_as_a_no_op_and_then_separates_cell_types():
    torch.manual_seed(0)
    plain = build_model("tiny", num_motif=4, dropout=0.0).eval()
    torch.manual_seed(0)
    labelled = build_model("tiny", num_motif=4, dropout=0.0, num_cell_types=3).eval()
    labelled.load_state_dict(plain.state_dict(), strict=False)
    x, mask, t, _ = inputs()
    with torch.no_grad():
        for cell_type in ([0, 1], [2, 2]):
            out = labelled(x, mask, t, cell_type=torch.tensor(cell_type))
            torch.testing.assert_close(out, plain(x, mask, t))
        labelled.cell_type_embed.weight.normal_()
        for block in labelled.encoder.blocks:
            block.adaLN_modulation[-1].weight.normal_(std=0.1)
        labelled.head_mask.weight.normal_(std=0.1)
        same = labelled(x, mask, t, cell_type=torch.tensor([0, 1]))
        other = labelled(x, mask, t, cell_type=torch.tensor([0, 2]))
    torch.testing.assert_close(same[0], other[0])
    assert not torch.allclose(same[1], other[1])
    with pytest.raises(ValueError, match="cell_type"):
        labelled(x, mask, t)


def test_cell_type_embedding_is_trained_in_full_under_lora():
    from getdiff.modeling.lora import apply_lora

    model = apply_lora(build_model("tiny", num_motif=4, num_cell_types=2), r=2, alpha=4)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert any("cell_type_embed" in name and "modules_to_save" in name for name in trainable)


def test_windows_of_a_cell_type_the_model_was_not_trained_on_are_refused():
    from getdiff.errors import InputError
    from getdiff.evaluation.inference import cell_type_index

    model = build_model("tiny", num_motif=4, num_cell_types=2)
    metadata = {"cell_types": ["liver", "myeloid"]}
    windows = WindowSet(
        regions=pd.DataFrame(),
        features=np.zeros((0, 4), np.float32),
        starts=np.zeros(0, np.int64),
        scored=np.zeros((0, 1), bool),
        meta={"cell_type": "myeloid"},
    )
    assert cell_type_index(model, metadata, windows, "w.parquet") == 1
    windows.meta["cell_type"] = "kidney"
    with pytest.raises(InputError, match=r"w\.parquet.*'kidney'.*liver, myeloid"):
        cell_type_index(model, metadata, windows, "w.parquet")
    assert cell_type_index(build_model("tiny", num_motif=4), {}, windows, "w.parquet") is None
