"""The diffusion process: schedule, noising, masked loss, masks, and the two samplers."""

from __future__ import annotations

import pytest
import torch

from getdiff.modeling.diffusion import (
    GaussianDiffusion,
    complementary_masks,
    num_masked,
    random_masks,
    random_timesteps,
)

B, R, F = 3, 10, 4


class TrueX0:
    """Stand-in network that always predicts the true x0 (repeated over sampler draws)."""

    def __init__(self, x0: torch.Tensor) -> None:
        self.x0 = x0
        self.inputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def __call__(self, x: torch.Tensor, mask: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.inputs.append((x.clone(), mask.clone(), t.clone()))
        return self.x0.repeat(x.shape[0] // self.x0.shape[0], 1, 1)


class SmallNet(torch.nn.Module):
    """A learnable stand-in: per-row linear map plus a timestep bias, with dropout."""

    def __init__(self, features: int = F) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(features, features)
        self.time = torch.nn.Embedding(1000, features)
        self.dropout = torch.nn.Dropout(0.5)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.linear(x) + self.time(t)[:, None, :])


def data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.rand(B, R, F, generator=gen)
    mask = random_masks(B, R, 0.5, generator=gen)
    return x0, mask


def test_linear_betas_run_from_beta_start_to_beta_end():
    diffusion = GaussianDiffusion(1000, 1e-4, 0.02)
    assert diffusion.betas.dtype == torch.float64
    assert diffusion.betas[0].item() == pytest.approx(1e-4)
    assert diffusion.betas[-1].item() == pytest.approx(0.02)
    assert torch.allclose(
        diffusion.betas.diff(), torch.full((999,), (0.02 - 1e-4) / 999.0, dtype=torch.float64)
    )


def test_alphas_cumprod_decrease_strictly_from_one_minus_beta_start():
    abar = GaussianDiffusion().alphas_cumprod
    assert abar[0].item() == pytest.approx(1 - 1e-4)
    assert bool((abar.diff() < 0).all())
    assert 0 < abar[-1].item() < 1e-4


def test_q_sample_is_sqrt_abar_x0_plus_sqrt_one_minus_abar_noise():
    diffusion = GaussianDiffusion()
    x0, _ = data()
    noise = torch.randn(B, R, F)
    t = torch.tensor([0, 500, 999])
    abar = diffusion.alphas_cumprod[t].float().view(-1, 1, 1)
    expected = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    torch.testing.assert_close(diffusion.q_sample(x0, t, noise), expected)


def test_training_loss_feeds_noisy_masked_rows_and_clean_unmasked_rows():
    diffusion = GaussianDiffusion()
    x0, mask = data()
    noise = torch.randn(B, R, F)
    t = torch.tensor([10, 400, 999])
    model = TrueX0(x0)
    diffusion.training_loss(model, x0, mask, t, noise)
    x_in, mask_in, t_in = model.inputs[0]
    noisy = diffusion.q_sample(x0, t, noise)
    torch.testing.assert_close(x_in[mask], noisy[mask])
    torch.testing.assert_close(x_in[~mask], x0[~mask])
    assert torch.equal(mask_in, mask) and torch.equal(t_in, t)


def test_training_loss_is_mean_squared_error_over_masked_values():
    diffusion = GaussianDiffusion()
    x0, mask = data()
    pred = torch.randn(B, R, F)
    loss, out = diffusion.training_loss(
        lambda x, m, t: pred, x0, mask, torch.zeros(B, dtype=torch.long), torch.randn(B, R, F)
    )
    expected = ((pred - x0)[mask] ** 2).mean()
    torch.testing.assert_close(loss, expected)
    assert out is pred


def test_training_loss_ignores_predictions_on_unmasked_rows():
    diffusion = GaussianDiffusion()
    x0, mask = data()
    pred = torch.randn(B, R, F)
    other = torch.where(mask[..., None], pred, pred + 100.0)
    args = (x0, mask, torch.zeros(B, dtype=torch.long), torch.randn(B, R, F))
    loss_a, _ = diffusion.training_loss(lambda x, m, t: pred, *args)
    loss_b, _ = diffusion.training_loss(lambda x, m, t: other, *args)
    assert loss_a.item() == loss_b.item()


def test_training_loss_is_zero_for_true_x0_and_backpropagates():
    diffusion = GaussianDiffusion()
    x0, mask = data()
    net = SmallNet()
    loss, _ = diffusion.training_loss(net, x0, mask, torch.tensor([1, 2, 3]), torch.randn(B, R, F))
    loss.backward()
    assert net.linear.weight.grad is not None and net.linear.weight.grad.abs().sum() > 0
    zero, _ = diffusion.training_loss(
        TrueX0(x0), x0, mask, torch.tensor([1, 2, 3]), torch.randn(B, R, F)
    )
    assert zero.item() == 0.0


@pytest.mark.parametrize("regions,ratio,expected", [(900, 0.5, 450), (10, 0.3, 3), (7, 0.5, 4)])
def test_random_masks_hide_exactly_round_ratio_regions_per_row(regions, ratio, expected):
    assert num_masked(regions, ratio) == round(regions * ratio) == expected
    mask = random_masks(16, regions, ratio, generator=torch.Generator().manual_seed(1))
    assert mask.dtype == torch.bool and mask.shape == (16, regions)
    assert mask.sum(dim=1).tolist() == [expected] * 16


def test_random_masks_mask_at_least_one_region():
    assert random_masks(2, 10, 0.01).sum(dim=1).tolist() == [1, 1]


def test_random_masks_are_reproducible_by_seed_and_vary_across_seeds_and_rows():
    a = random_masks(4, 50, 0.5, generator=torch.Generator().manual_seed(7))
    b = random_masks(4, 50, 0.5, generator=torch.Generator().manual_seed(7))
    c = random_masks(4, 50, 0.5, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])


def test_complementary_masks_cover_each_region_exactly_once():
    first, second = complementary_masks(901, 0.5, seed=3)
    assert first.shape == second.shape == (901,)
    assert torch.equal(first.int() + second.int(), torch.ones(901, dtype=torch.int))
    assert int(first.sum()) == num_masked(901, 0.5)
    again, _ = complementary_masks(901, 0.5, seed=3)
    assert torch.equal(first, again)


def test_random_timesteps_are_uniform_integers_in_range():
    t = random_timesteps(10_000, 1000, generator=torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and t.shape == (10_000,)
    assert int(t.min()) >= 0 and int(t.max()) <= 999
    assert 450 < t.float().mean().item() < 550


def test_ddim_timesteps_descend_from_last_step_to_zero_without_repeats():
    diffusion = GaussianDiffusion()
    steps = diffusion.ddim_timesteps(50)
    assert steps.dtype == torch.long and len(steps) == 50
    assert steps[0].item() == 999 and steps[-1].item() == 0
    assert bool((steps.diff() < 0).all())
    assert diffusion.ddim_timesteps(1).tolist() == [999]
    assert diffusion.ddim_timesteps(1000).tolist() == list(range(999, -1, -1))
    with pytest.raises(ValueError):
        diffusion.ddim_timesteps(1001)


def test_respaced_schedule_matches_full_schedule_at_chosen_steps():
    """Betas of the respaced chain compose to the full abar at each chosen step."""
    diffusion = GaussianDiffusion()
    chosen = diffusion.ddim_timesteps(20).flip(0)
    abar = diffusion.alphas_cumprod[chosen]
    respaced_betas = 1 - abar / torch.cat([torch.ones(1, dtype=abar.dtype), abar[:-1]])
    torch.testing.assert_close(torch.cumprod(1 - respaced_betas, 0), abar)


def test_ddim_eta0_walks_the_forward_process_at_the_respaced_steps():
    """With an exact x0 network and eta=0, the state at each chosen step t is q_sample(x0, t, eps)
    for one eps: only true if the update uses abar of the chosen steps, not single-step alphas."""
    diffusion = GaussianDiffusion()
    x0, mask = data()
    model = TrueX0(x0)
    gen = torch.Generator().manual_seed(0)
    diffusion.sample(model, x0, mask, method="ddim", steps=10, generator=gen)
    chosen = diffusion.ddim_timesteps(10)
    assert [inp[2][0].item() for inp in model.inputs] == chosen.tolist()
    first = model.inputs[0][0]
    abar_first = diffusion.alphas_cumprod[999].item()
    eps = (first - abar_first**0.5 * x0) / (1 - abar_first) ** 0.5
    for (x_in, _, t), step in zip(model.inputs, chosen.tolist(), strict=True):
        assert bool((t == step).all())
        expected = diffusion.q_sample(x0, t, eps)
        torch.testing.assert_close(x_in[mask], expected[mask], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(x_in[~mask], x0[~mask])


@pytest.mark.parametrize("method", ["one-step", "ddim"])
def test_sampler_with_true_x0_network_returns_x0_exactly(method):
    diffusion = GaussianDiffusion()
    x0, mask = data()
    observed = torch.where(mask[..., None], torch.full_like(x0, 123.0), x0)
    mean, std = diffusion.sample(TrueX0(x0), observed, mask, method=method, steps=25, eta=1.0)
    assert torch.equal(mean, x0)
    assert torch.equal(std, torch.zeros_like(x0))


def test_one_step_sampler_calls_network_once_at_last_timestep_with_unit_noise_rows():
    diffusion = GaussianDiffusion()
    x0, mask = data()
    model = TrueX0(x0)
    diffusion.sample(model, x0, mask, method="one-step", generator=torch.Generator())
    assert len(model.inputs) == 1
    x_in, _, t = model.inputs[0]
    assert t.tolist() == [999] * B
    torch.testing.assert_close(x_in[~mask], x0[~mask])
    assert not torch.equal(x_in[mask], x0[mask])


@pytest.mark.parametrize("method", ["one-step", "ddim"])
def test_sampler_returns_observed_rows_unchanged(method):
    diffusion = GaussianDiffusion()
    x0, mask = data()
    mean, std = diffusion.sample(SmallNet(), x0, mask, method=method, steps=5, num_samples=3)
    assert torch.equal(mean[~mask], x0[~mask])
    assert torch.equal(std[~mask], torch.zeros_like(std[~mask]))


@pytest.mark.parametrize("method", ["one-step", "ddim"])
def test_sampling_is_deterministic_given_a_seed(method):
    diffusion = GaussianDiffusion()
    x0, mask = data()
    net = SmallNet()

    def draw(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return diffusion.sample(net, x0, mask, method=method, steps=5, eta=1.0, generator=gen)[0]

    assert torch.equal(draw(0), draw(0))
    assert not torch.equal(draw(0), draw(1))


def test_ddim_with_eta_draws_fresh_noise_each_step():
    """eta > 0 changes the result for the same starting noise; eta = 0 is deterministic DDIM."""
    diffusion = GaussianDiffusion()
    x0, mask = data()
    net = SmallNet()

    def draw(eta: float) -> torch.Tensor:
        gen = torch.Generator().manual_seed(0)
        return diffusion.sample(net, x0, mask, method="ddim", steps=5, eta=eta, generator=gen)[0]

    assert not torch.equal(draw(0.0), draw(1.0))


def test_std_is_zero_for_one_sample_and_positive_for_several():
    diffusion = GaussianDiffusion()
    x0, mask = data()
    net = SmallNet()
    gen = torch.Generator().manual_seed(0)
    mean, std = diffusion.sample(net, x0, mask, num_samples=1, generator=gen)
    assert mean.shape == std.shape == x0.shape
    assert torch.equal(std, torch.zeros_like(std))
    mean, std = diffusion.sample(net, x0, mask, num_samples=4, generator=gen)
    assert mean.shape == std.shape == x0.shape
    assert bool((std[mask] > 0).all())


def test_several_samples_average_independent_draws():
    """num_samples draws equal, in distribution, separate calls: their mean is their average."""
    diffusion = GaussianDiffusion()
    x0, mask = data()
    net = SmallNet()
    gen = torch.Generator().manual_seed(0)
    mean, std = diffusion.sample(net, x0, mask, num_samples=2, generator=gen)
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn((2 * B, R, F), generator=gen)
    with torch.no_grad():
        net.eval()
        t = torch.full((B,), 999)
        draws = torch.stack(
            [net(torch.where(mask[..., None], n, x0), mask, t) for n in noise.view(2, B, R, F)]
        )
    expected = torch.where(mask[..., None], draws, x0)
    torch.testing.assert_close(mean, expected.mean(0))
    torch.testing.assert_close(std, expected.std(0))


def test_sampler_runs_network_in_eval_mode_and_restores_training_mode():
    diffusion = GaussianDiffusion()
    x0, mask = data()
    net = SmallNet().train()
    first = diffusion.sample(net, x0, mask, generator=torch.Generator().manual_seed(0))[0]
    second = diffusion.sample(net, x0, mask, generator=torch.Generator().manual_seed(0))[0]
    assert torch.equal(first, second)  # dropout would make these differ
    assert net.training


def test_sampler_rejects_unknown_method():
    x0, mask = data()
    with pytest.raises(ValueError, match="sampler"):
        GaussianDiffusion().sample(TrueX0(x0), x0, mask, method="ddpm")
