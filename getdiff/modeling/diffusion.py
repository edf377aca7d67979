"""The diffusion process of GETRegionDiffusion, apart from the network (which knows no betas).

Shapes: ``x0`` and every sample are (B, R, F) float (B windows, R regions, F features);
``mask`` is (B, R) bool, True = the region is hidden and must be predicted; ``t`` is (B,) long
in [0, T). The network is any callable ``model(x, mask, t) -> x0 prediction (B, R, F)``;
the conditions that are given (``positions`` (B, R), ``cell_type`` (B,), and the window
statistics below) are passed on as keyword arguments.

What is predicted is a :class:`Target`. ``columns`` (F,) bool selects the predicted features
(None = all, the spec's task). A value is hidden when its row is masked and its column is
predicted; the other columns of masked rows stay clean inputs (the ``accessibility`` task: motif
features are known from sequence, only accessibility is noised, predicted and scored). The
``scaled`` columns (F,) bool (None = none; getdiff scales accessibility only) of each window are
standardised by the mean and standard deviation of its unmasked rows before noising, and
predictions are mapped back: every window (and cell type) then enters the network and the loss
on one scale, whatever its level.
Those statistics (B, 2F: location, then log scale) are passed on as ``window_stats``, so the
network can still condition on a window's level and spread.

One formulation is used in training and at inference, so there is no train/inference mismatch:

- Linear betas from ``beta_start`` to ``beta_end`` over ``num_timesteps`` (T) steps;
  ``alphas_cumprod`` (abar) is computed in float64 and used as float32 on the data's device.
- Hidden values enter the network as x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, one t per
  sample; everything else stays clean context. The network predicts x0 for every row and the
  loss is the MSE over the hidden values only.
- Sampling starts hidden values from N(0, I) at t = T-1. ``one-step`` takes the network's x0
  prediction there; ``ddim`` walks a respaced schedule of ``steps`` timesteps, using the
  abar of the chosen timesteps (not single-step alphas), and returns the last x0 prediction.
  ``eta`` > 0 adds DDIM's stochastic term. Several draws give a per-value mean and std.

Masks: exactly ``num_masked(R, ratio)`` regions per sample (argsort of seeded uniform noise,
drawn on the data's device); ``complementary_masks`` gives two masks that hide every region
exactly once, for evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from getdiff.defaults import DEFAULTS

Model = Callable[..., torch.Tensor]
SAMPLERS = ("one-step", "ddim")
# Defaults of the signatures below: the schema's (diffusion: and evaluate: sections).
_SCHEDULE = DEFAULTS["diffusion"]
_SAMPLER = DEFAULTS["evaluate"]
# complementary_masks splits a window into halves, each predicted from the other: evaluation's
# design, apart from diffusion.mask_ratio (the share hidden in training).
HALF = 0.5


SCALE_FLOOR = 1e-3  # smallest window standard deviation divided by (values are in [0, 1])


@dataclass(frozen=True)
class Target:
    """Which values a masked row hides, and how they are scaled (see the module doc)."""

    columns: torch.Tensor | None = None  # (F,) bool: predicted features; None = all
    scaled: torch.Tensor | None = None  # (F,) bool: features standardised per window; None = none

    @property
    def window_scaling(self) -> bool:
        return self.scaled is not None

    def scaling(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, F) location and scale: unmasked rows' mean and std in the scaled columns
        (floored at SCALE_FLOOR), 0 and 1 elsewhere."""
        keep = (~mask).unsqueeze(-1).to(x.dtype)
        count = keep.sum(dim=1, keepdim=True).clamp_min(1.0)
        loc = (x * keep).sum(dim=1, keepdim=True) / count
        var = ((x - loc).square() * keep).sum(dim=1, keepdim=True) / count
        scale = var.sqrt().clamp_min(SCALE_FLOOR)
        if self.scaled is not None:
            scaled = self.scaled.to(x.device)
            loc, scale = torch.where(scaled, loc, 0.0), torch.where(scaled, scale, 1.0)
        return loc, scale


def to_model_units(
    target: Target, x: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor], torch.Tensor | None]:
    """``x`` as the network sees it (window-scaled or as is), the map back to data units, and
    the window statistics (B, 2F): location and log scale, or None without window scaling."""
    if not target.window_scaling:
        return x, lambda values: values, None
    loc, scale = target.scaling(x, mask)
    stats = torch.cat([loc, scale.log()], dim=-1).squeeze(1)
    return (x - loc) / scale, lambda values: values * scale + loc, stats


def hidden_values(mask: torch.Tensor, columns: torch.Tensor | None) -> torch.Tensor:
    """(B, R, 1) or (B, R, F) bool: masked rows x predicted columns (all columns when None)."""
    rows = mask.unsqueeze(-1)
    return rows if columns is None else rows & columns.to(mask.device)


def _call(
    model: Model, x: torch.Tensor, mask: torch.Tensor, t: torch.Tensor, conditions: dict
) -> torch.Tensor:
    """The network on (x, mask, t) plus the conditions that are given (positions, statistics)."""
    return model(x, mask, t, **{k: v for k, v in conditions.items() if v is not None})


class GaussianDiffusion:
    """Linear-beta Gaussian diffusion on masked rows: noising, training loss, samplers."""

    def __init__(
        self,
        num_timesteps: int = _SCHEDULE["num_timesteps"],
        beta_start: float = _SCHEDULE["beta_start"],
        beta_end: float = _SCHEDULE["beta_end"],
    ) -> None:
        if num_timesteps < 1:
            raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
        if not 0 < beta_start <= beta_end < 1:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
        self.num_timesteps = num_timesteps
        self.betas = torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)
        self._device_cache: dict[torch.device, torch.Tensor] = {}

    @classmethod
    def from_config(cls, section: dict) -> GaussianDiffusion:
        """From the config's ``diffusion:`` section (``mask_ratio`` is the caller's)."""
        return cls(section["num_timesteps"], section["beta_start"], section["beta_end"])

    def _abar(self, t: torch.Tensor) -> torch.Tensor:
        """abar_t as float32 on t's device, shaped (B, 1, 1) to broadcast over (B, R, F)."""
        table = self._device_cache.get(t.device)
        if table is None:
            table = self.alphas_cumprod.to(device=t.device, dtype=torch.float32)
            self._device_cache[t.device] = table
        return table[t].view(-1, 1, 1)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, for every row of every sample."""
        abar = self._abar(t)
        return abar.sqrt() * x0 + (1.0 - abar).sqrt() * noise

    def training_loss(
        self,
        model: Model,
        x0: torch.Tensor,
        mask: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor,
        positions: torch.Tensor | None = None,
        target: Target = Target(),
        cell_type: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Noise the hidden values to step t, predict x0, return (masked MSE, prediction).

        The loss is a float32 scalar: mean of squared errors over the hidden values (masked rows
        x ``target.columns``), on the window-scaled values when ``target.window_scaling``. The
        prediction is returned in the data's units. Written as a weighted sum rather than
        boolean indexing: no host sync.
        """
        hidden = hidden_values(mask, target.columns)
        z0, to_data, stats = to_model_units(target, x0, mask)
        x_in = torch.where(hidden, self.q_sample(z0, t, noise), z0)
        conditions = {"positions": positions, "window_stats": stats, "cell_type": cell_type}
        pred = _call(model, x_in, mask, t, conditions)
        weight = hidden.expand_as(x0).to(torch.float32)
        squared = (pred.float() - z0.float()).square() * weight
        return squared.sum() / weight.sum().clamp_min(1.0), to_data(pred)

    def ddim_timesteps(self, steps: int) -> torch.Tensor:
        """``steps`` timesteps, evenly spread and descending from T-1 to 0 (just T-1 if steps=1)."""
        if not 1 <= steps <= self.num_timesteps:
            raise ValueError(f"DDIM steps must be in [1, {self.num_timesteps}], got {steps}")
        # Spacing >= 1 keeps the rounded values distinct.
        return torch.linspace(self.num_timesteps - 1, 0, steps, dtype=torch.float64).round().long()

    @torch.inference_mode()
    def sample(
        self,
        model: Model,
        x: torch.Tensor,
        mask: torch.Tensor,
        method: str = _SAMPLER["sampler"],
        steps: int = _SAMPLER["ddim_steps"],
        eta: float = _SAMPLER["eta"],
        num_samples: int = _SAMPLER["num_samples"],
        generator: torch.Generator | None = None,
        positions: torch.Tensor | None = None,
        target: Target = Target(),
        cell_type: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Impute the hidden values of ``x``; return (mean, std) over ``num_samples`` draws.

        ``noise`` (broadcastable to one draw of ``x``) replaces the starting noise of every draw:
        the same noise for several inputs makes their differences free of sampling noise.

        ``x`` holds the observed values (hidden ones are ignored); every other value comes back
        as observed with std 0. std uses Bessel's correction and is all zeros for one draw.
        ``generator`` must live on ``x``'s device. The model is run in eval mode (dropout off)
        and its previous mode restored.
        """
        if method not in SAMPLERS:
            raise ValueError(f"unknown sampler {method!r}; choose one of {SAMPLERS}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        batch = x.shape[0]
        z, to_data, stats = to_model_units(target, x, mask)

        # All draws in one batch: row s * B + b is draw s of window b (one draw: no copies).
        def draws_of(value: torch.Tensor | None) -> torch.Tensor | None:
            if value is None or num_samples == 1:
                return value
            return value.repeat(num_samples, *([1] * (value.dim() - 1)))

        xs, ms = draws_of(z), draws_of(mask)
        conditions = {
            "positions": draws_of(positions),
            "window_stats": draws_of(stats),
            "cell_type": draws_of(cell_type),
        }
        rows = hidden_values(ms, target.columns)
        was_training = getattr(model, "training", False)
        if hasattr(model, "eval"):
            model.eval()
        try:
            if noise is None:
                x_t = torch.randn(xs.shape, generator=generator, device=xs.device, dtype=xs.dtype)
            else:
                x_t = draws_of(noise.to(xs.dtype).expand(x.shape))
            if method == "one-step":
                t = torch.full((xs.shape[0],), self.num_timesteps - 1, device=xs.device)
                x0_hat = _call(model, torch.where(rows, x_t, xs), ms, t, conditions).to(xs.dtype)
            else:
                x0_hat = self._ddim_loop(
                    model, xs, ms, conditions, rows, x_t, (steps, eta), generator
                )
        finally:
            if hasattr(model, "train"):
                model.train(was_training)
        observed = hidden_values(mask, target.columns)
        if num_samples == 1:
            mean = torch.where(observed, to_data(x0_hat), x)
            return mean, torch.zeros_like(mean)
        draws = to_data(x0_hat.view(num_samples, batch, *x.shape[1:]))
        mean = torch.where(observed, draws.mean(dim=0), x)
        return mean, torch.where(observed, draws.std(dim=0), 0.0)

    def _ddim_loop(
        self,
        model: Model,
        xs: torch.Tensor,
        ms: torch.Tensor,
        conditions: dict,
        rows: torch.Tensor,
        x_t: torch.Tensor,
        schedule: tuple[int, float],
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """DDIM (Song et al. 2021, eq. 12) over the respaced timesteps; returns the last x0_hat.

        ``rows`` marks the hidden values; ``schedule`` is (steps, eta).
        """
        steps, eta = schedule
        timesteps = self.ddim_timesteps(steps).tolist()
        abars = self.alphas_cumprod.tolist()
        x0_hat = xs
        for i, step in enumerate(timesteps):
            t = torch.full((xs.shape[0],), step, device=xs.device, dtype=torch.long)
            x0_hat = _call(model, torch.where(rows, x_t, xs), ms, t, conditions).to(xs.dtype)
            if i == len(timesteps) - 1:
                break
            abar_t, abar_prev = abars[step], abars[timesteps[i + 1]]
            eps_hat = (x_t - math.sqrt(abar_t) * x0_hat) / math.sqrt(1.0 - abar_t)
            sigma = eta * math.sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev))
            direction = math.sqrt(max(1.0 - abar_prev - sigma**2, 0.0))
            x_t = math.sqrt(abar_prev) * x0_hat + direction * eps_hat
            if sigma > 0:
                z = torch.randn(xs.shape, generator=generator, device=xs.device, dtype=xs.dtype)
                x_t = x_t + sigma * z
        return x0_hat


def num_masked(num_regions: int, mask_ratio: float) -> int:
    """Regions masked per sample: round(R * ratio), kept in [1, R] so the loss is defined."""
    return min(max(round(num_regions * mask_ratio), 1), num_regions)


def random_masks(
    batch: int,
    num_regions: int,
    mask_ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(B, R) bool with exactly ``num_masked(R, ratio)`` True per row, drawn on ``device``."""
    noise = torch.rand(batch, num_regions, generator=generator, device=device)
    hidden = noise.argsort(dim=1)[:, : num_masked(num_regions, mask_ratio)]
    mask = torch.zeros(batch, num_regions, dtype=torch.bool, device=noise.device)
    return mask.scatter_(1, hidden, True)


def complementary_masks(
    num_regions: int, mask_ratio: float = HALF, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two (R,) bool masks, ``m`` and ``~m``: every region is masked in exactly one of them.

    ``m`` hides ``num_masked(R, ratio)`` regions chosen by ``seed`` (same on every machine).
    """
    generator = torch.Generator().manual_seed(seed)
    mask = random_masks(1, num_regions, mask_ratio, generator=generator)[0]
    return mask, ~mask


def random_timesteps(
    batch: int,
    num_timesteps: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(B,) long, uniform in [0, num_timesteps), one per sample, drawn on ``device``."""
    return torch.randint(0, num_timesteps, (batch,), generator=generator, device=device)
