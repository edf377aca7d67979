"""A trained model applied to window sets: the sampler settings, the identity check of model
and windows, and every window position predicted once (two complementary masks).

Shared by ``getdiff evaluate`` (scores the predictions) and ``getdiff impute`` (writes them).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from getdiff.defaults import DEFAULTS
from getdiff.errors import InputError
from getdiff.modeling.diffusion import GaussianDiffusion, complementary_masks
from getdiff.modeling.model import load_model, model_metadata
from getdiff.modeling.task import SPEC_TASK, recorded_settings, target
from getdiff.tensors import WindowSet, region_midpoints

log = logging.getLogger(__name__)

_SAMPLER = DEFAULTS["evaluate"]  # the defaults below are the schema's


@dataclass
class SamplerSettings:
    """How masked rows are drawn: ``one-step`` or ``ddim`` (``steps``, ``eta``), ``num_samples``."""

    method: str = _SAMPLER["sampler"]
    steps: int = _SAMPLER["ddim_steps"]
    eta: float = _SAMPLER["eta"]
    num_samples: int = _SAMPLER["num_samples"]
    seed: int = _SAMPLER["seed"]
    batch_size: int = _SAMPLER["batch_size"]

    @classmethod
    def from_config(cls, section: dict) -> SamplerSettings:
        return cls(
            method=section["sampler"],
            steps=section["ddim_steps"],
            eta=section["eta"],
            num_samples=section["num_samples"],
            seed=section["seed"],
            batch_size=section["batch_size"],
        )


@dataclass
class LoadedModel:
    """A trained model and what every command that runs it reads beside it: its metadata, the
    task and diffusion schedule it was trained with (checked against the config at load), the
    device, and how it serves a cell type it never saw (``model.unseen_cell_types``)."""

    path: Path
    model: torch.nn.Module
    meta: dict
    diffusion: GaussianDiffusion
    task: dict[str, str]
    device: torch.device
    unseen: str

    @classmethod
    def load(cls, path: str | Path, config: dict, device: torch.device) -> LoadedModel:
        meta = model_metadata(path)
        task = recorded_settings(meta, config, path)
        model = load_model(path, device=device).eval()
        diffusion = GaussianDiffusion.from_config(config["diffusion"])
        unseen = config["model"]["unseen_cell_types"]
        return cls(Path(path), model, meta, diffusion, task, device, unseen)


def check_compatible(
    model: torch.nn.Module, metadata: dict, windows: WindowSet, path: str | Path
) -> None:
    """The model must have been trained on this window size and these features, in this order."""
    config = model.config
    names = list(windows.meta["feature_names"])
    if len(names) != config.num_motif:
        raise InputError(
            path, f"has {len(names)} features per region but the model expects {config.num_motif}"
        )
    trained = list(metadata.get("feature_names", names))
    if trained != names:
        j = next(j for j, (a, b) in enumerate(zip(trained, names, strict=True)) if a != b)
        raise InputError(
            path,
            f"feature {j + 1} is {names[j]!r} but the model was trained with {trained[j]!r} there; "
            "windows must have the model's features in the model's order",
        )
    if windows.meta["window_size"] != config.num_regions:
        raise InputError(
            path,
            f"has windows of {windows.meta['window_size']} regions but the model expects "
            f"{config.num_regions}",
        )


def cell_type_index(
    model: torch.nn.Module,
    metadata: dict,
    windows: WindowSet,
    path: str | Path,
    unseen: str = DEFAULTS["model"]["unseen_cell_types"],
) -> int | None:
    """The windows' cell type as the model's embedding index, or None if it embeds no cell type.

    A cell type the model was not trained on gets the unknown entry (index ``num_cell_types``)
    when the model has one and ``unseen`` is ``unknown`` (model.unseen_cell_types), logged; else
    it is refused, naming the fix. :func:`is_seen` tells which happened. A model that embeds no
    cell type serves any, logging one it was not trained on.
    """
    name = windows.meta["cell_type"]
    trained = list(metadata.get("cell_types", []))
    if not model.config.num_cell_types:
        if trained and name not in trained:
            log.warning(
                "%s: cell type %r was not among the model's training cell types (%s); the model "
                "embeds no cell type and serves it from its windows alone",
                path,
                name,
                ", ".join(trained),
            )
        return None
    if name in trained:
        return trained.index(name)
    if unseen == "unknown" and model.config.unknown_cell_type:
        log.warning(
            "%s: cell type %r was not among the model's (%s): served by its unknown-cell-type "
            "embedding",
            path,
            name,
            ", ".join(trained),
        )
        return model.config.num_cell_types
    fix = (
        "or set model.unseen_cell_types: unknown"
        if model.config.unknown_cell_type
        else "or train with model.cell_type_dropout > 0 (an unknown-cell-type entry)"
    )
    raise InputError(
        path,
        f"holds cell type {name!r}, but the model embeds only the cell types it was trained "
        f"on ({', '.join(trained)}); retrain with it, {fix}, or use model.cell_type_embedding: "
        "false",
    )


def is_seen(metadata: dict, cell_type: str) -> bool:
    """Whether the model was trained on ``cell_type`` (models without cell types saw them all)."""
    trained = metadata.get("cell_types")
    return trained is None or cell_type in trained


def impute_windows(
    model: torch.nn.Module,
    diffusion: GaussianDiffusion,
    windows: WindowSet,
    settings: SamplerSettings,
    device: torch.device,
    masks: tuple[torch.Tensor, torch.Tensor] | None = None,
    missing: np.ndarray | None = None,
    task: dict[str, str] = SPEC_TASK,
    cell_type: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predict every window position from the pass that hid it.

    Returns (mean, std, hidden): mean/std (n_windows, R, F) float32, and the (R,) bool mask of
    the first pass (positions where it is False were predicted in the second pass). ``missing``
    is an optional (n_regions,) bool over the WindowSet's rows, hidden in both passes. With the
    ``accessibility`` task only that column is predicted; the others come back as observed.
    ``cell_type`` is the model's index of the windows' cell type (see :func:`cell_type_index`).
    """
    what = target(task, list(windows.meta["feature_names"]))
    midpoints = region_midpoints(windows.regions)
    size = windows.meta["window_size"]
    first, second = masks if masks is not None else complementary_masks(size, seed=settings.seed)
    n = len(windows.starts)
    features = windows.features
    mean = np.empty((n, size, features.shape[1]), dtype=np.float32)
    std = np.empty_like(mean)
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    offsets = np.arange(size)
    label = None if cell_type is None else torch.tensor([cell_type], device=device)
    started, done = time.monotonic(), 0
    for lo in range(0, n, settings.batch_size):
        index = np.arange(lo, min(lo + settings.batch_size, n))
        rows = windows.starts[index, None] + offsets
        x = torch.from_numpy(features[rows]).to(device)
        positions = torch.from_numpy(midpoints[rows]).to(device)
        hidden_missing = (
            torch.from_numpy(missing[rows]).to(device)
            if missing is not None
            else torch.zeros(x.shape[:2], dtype=torch.bool, device=device)
        )
        result_mean = torch.empty_like(x)
        result_std = torch.empty_like(x)
        for pass_mask in (first, second):
            mask = pass_mask.to(device).expand(len(index), -1) | hidden_missing
            pass_mean, pass_std = diffusion.sample(
                model,
                x,
                mask,
                method=settings.method,
                steps=settings.steps,
                eta=settings.eta,
                num_samples=settings.num_samples,
                generator=generator,
                positions=positions,
                target=what,
                cell_type=None if label is None else label.expand(len(index)),
            )
            own = pass_mask.to(device).view(1, -1, 1)
            result_mean = torch.where(own, pass_mean, result_mean)
            result_std = torch.where(own, pass_std, result_std)
        mean[index] = result_mean.float().cpu().numpy()
        std[index] = result_std.float().cpu().numpy()
        done += len(index)
        if done == n or (lo // settings.batch_size) % 20 == 0:
            rate = done / max(time.monotonic() - started, 1e-9)
            log.info("imputed %d/%d windows (%.1f windows/s)", done, n, rate)
    return mean, std, first.cpu().numpy()


def region_rows(windows: WindowSet) -> tuple[np.ndarray, np.ndarray]:
    """(window, position) of each scored row, first scoring occurrence of each region only.

    Validation/test tiles score each region once; overlapping train windows score a region in
    several windows, and the first one is kept.
    """
    window, position = np.nonzero(windows.scored)
    rows = windows.starts[window] + position
    _, first = np.unique(rows, return_index=True)
    return window[first], position[first]
