"""The training data on the device: each split's windows over the group's cell types, the
seeded epoch order, and the fixed validation set (masks, t and noise the same on every pass)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from getdiff.errors import InputError
from getdiff.modeling.diffusion import random_masks, random_timesteps
from getdiff.tensors import load_window_set, region_midpoints, windows_path


@dataclass
class WindowData:
    """The windows of one split over one or more cell types, on the training device."""

    features: torch.Tensor  # (N, F) float32: every cell type's regions stacked
    positions: torch.Tensor  # (N,) float64: each region's genomic midpoint (bp)
    starts: torch.Tensor  # (n_windows,) long: row in ``features`` of each window's first region
    cell_type: torch.Tensor  # (n_windows,) long: index of each window's cell type
    window_size: int
    feature_names: list[str]

    def __len__(self) -> int:
        return int(self.starts.numel())

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B,) window indices -> (B, W, F) features, (B, W) midpoints and (B,) cell types."""
        offsets = torch.arange(self.window_size, device=self.starts.device)
        rows = self.starts[index, None] + offsets
        return self.features[rows], self.positions[rows], self.cell_type[index]


def load_split_windows(
    prepared_dir: str | Path, cell_types: list[str], split: str, device: torch.device
) -> WindowData:
    """Read ``{prepared_dir}/{cell_type}/windows_{split}.parquet`` for each cell type and stack."""
    features, positions, starts, names, window_size = [], [], [], None, None
    offset, counts = 0, []
    for cell_type in cell_types:
        path = windows_path(prepared_dir, cell_type, split)
        if not path.exists():
            raise InputError(path, "window tensors not found (run `getdiff prepare` first)")
        windows = load_window_set(path)
        these = list(windows.meta["feature_names"])
        size = int(windows.meta["window_size"])
        if names is not None and (these != names or size != window_size):
            raise InputError(
                path,
                f"features or window size differ from {cell_types[0]}'s; cell types trained "
                "together must share both",
            )
        names, window_size = these, size
        features.append(torch.tensor(windows.features, dtype=torch.float32))
        positions.append(torch.from_numpy(region_midpoints(windows.regions)))
        starts.append(torch.tensor(windows.starts, dtype=torch.long) + offset)
        counts.append(len(windows.starts))
        offset += features[-1].shape[0]
    assert names is not None and window_size is not None
    return WindowData(
        features=torch.cat(features).to(device),
        positions=torch.cat(positions).to(device),
        starts=torch.cat(starts).to(device),
        cell_type=torch.arange(len(counts)).repeat_interleave(torch.tensor(counts)).to(device),
        window_size=window_size,
        feature_names=names,
    )


class EpochSampler:
    """Window indices of each step: epoch e is a permutation seeded by (seed, e).

    A pure function of the step, so resuming needs no sampler state and every window is seen
    once per epoch.
    """

    def __init__(self, num_windows: int, batch_size: int, seed: int, device: torch.device):
        self.num_windows = num_windows
        self.batch_size = batch_size
        self.seed = seed
        self.device = device
        self._cache: dict[int, torch.Tensor] = {}

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch not in self._cache:
            state = np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0]
            generator = torch.Generator().manual_seed(int(state))
            perm = torch.randperm(self.num_windows, generator=generator).to(self.device)
            self._cache = {e: p for e, p in self._cache.items() if e >= epoch - 1}
            self._cache[epoch] = perm
        return self._cache[epoch]

    def indices(self, step: int) -> torch.Tensor:
        """(B,) long window indices for step ``step`` (0-based)."""
        first = step * self.batch_size
        last = first + self.batch_size - 1
        lo, hi = first // self.num_windows, last // self.num_windows
        stream = torch.cat([self._permutation(e) for e in range(lo, hi + 1)])
        start = first - lo * self.num_windows
        return stream[start : start + self.batch_size]


@dataclass
class ValidationSet:
    """Fixed validation batch material: windows, masks, t and noise, the same on every pass."""

    x0: torch.Tensor  # (V, W, F)
    positions: torch.Tensor  # (V, W) float64 midpoints
    cell_type: torch.Tensor  # (V,) long
    mask: torch.Tensor  # (V, W) bool
    t: torch.Tensor  # (V,) long
    noise: torch.Tensor  # (V, W, F)


def spread_over_cell_types(cell_type: torch.Tensor, count: int) -> torch.Tensor:
    """(count,) sorted window indices taken in turn from each cell type, each in its windows'
    order: every cell type is scored even when the first one has ``count`` windows, and all the
    windows (in order) when there are no more than ``count``."""
    rank = torch.empty_like(cell_type)  # each window's position among its cell type's
    for value in cell_type.unique():
        rows = cell_type == value
        rank[rows] = torch.arange(int(rows.sum()), device=cell_type.device)
    turns = rank * (int(cell_type.max()) + 1) + cell_type
    return torch.sort(torch.argsort(turns, stable=True)[:count]).values


def make_validation_set(
    data: WindowData, count: int, mask_ratio: float, num_timesteps: int, seed: int
) -> ValidationSet | None:
    """``count`` windows (:func:`spread_over_cell_types`) with masks/t/noise drawn on the CPU
    (same on every device)."""
    count = min(count, len(data))
    if count == 0:
        return None
    generator = torch.Generator().manual_seed(seed)
    x0, positions, cell_type = data.batch(spread_over_cell_types(data.cell_type, count))
    mask = random_masks(count, data.window_size, mask_ratio, generator=generator)
    t = random_timesteps(count, num_timesteps, generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    device = x0.device
    return ValidationSet(x0, positions, cell_type, mask.to(device), t.to(device), noise.to(device))
