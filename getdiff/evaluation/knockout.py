"""What interpretation reads from a model: accessibility predicted with motifs knocked out.

:class:`GroupModel` loads a model group (the accessibility task only: the knocked-out motifs
must be inputs of the predicted regions); its :class:`Predictor` for one cell type's windows
predicts batches of variants of a window, each region read from the one of evaluate's two
complementary masks that hides it, every variant from the same noise, so a difference between
variants is the knock-out's alone. Effects are reported in :data:`UNITS`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from getdiff.errors import ConfigError, InputError
from getdiff.evaluation.inference import LoadedModel, cell_type_index, check_compatible
from getdiff.modeling.diffusion import GaussianDiffusion, complementary_masks
from getdiff.modeling.task import target
from getdiff.tensors import ACCESSIBILITY, WindowSet, region_midpoints

log = logging.getLogger(__name__)

UNITS = "log10(CPM + 1) of predicted accessibility"


@dataclass(frozen=True)
class InterpretSettings:
    """The ``interpret`` section (defaults in the config schema) plus evaluate's mask seed."""

    split: str
    context_bp: int
    distance_bands: tuple[tuple[int, int], ...]
    designs: int
    propagate: bool
    bootstrap: int
    level: float
    seed: int
    batch_size: int
    mask_seed: int

    @classmethod
    def from_config(cls, config: dict) -> InterpretSettings:
        section = config["interpret"]
        bands = tuple((int(lo), int(hi)) for lo, hi in section["distance_bands"])
        return cls(
            split=section["split"],
            context_bp=int(section["context_bp"]),
            distance_bands=bands,
            designs=int(section["designs"]),
            propagate=bool(section["propagate"]),
            bootstrap=int(section["bootstrap"]),
            level=float(section["level"]),
            seed=int(section["seed"]),
            batch_size=int(section["batch_size"]),
            mask_seed=int(config["evaluate"]["seed"]),
        )

    def band_names(self) -> list[str]:
        return [f"{lo // 1000}-{hi // 1000}kb" for lo, hi in self.distance_bands]


@dataclass
class Predictor:
    """One cell type's windows under the model: accessibility predicted for batches of variants
    of one window, each region read from the evaluate mask that hides it, common noise."""

    model: torch.nn.Module
    diffusion: GaussianDiffusion
    windows: WindowSet
    masks: tuple[torch.Tensor, torch.Tensor]
    cell_type: int | None
    task: dict[str, str]
    device: torch.device
    batch_size: int
    seed: int

    def __post_init__(self) -> None:
        names = list(self.windows.meta["feature_names"])
        self.what = target(self.task, names)
        self.column = names.index(ACCESSIBILITY)
        self.midpoints = region_midpoints(self.windows.regions)

    def noise(self, window: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + window)
        shape = (self.windows.window_size, self.windows.features.shape[1])
        return torch.randn(shape, generator=generator).to(self.device)

    def predict(self, window: int, variants: np.ndarray, passes: np.ndarray) -> np.ndarray:
        """(V, R) predicted accessibility of ``variants`` (V, R, F) of window ``window``, variant
        v read under mask ``passes[v]`` (0: evaluate's first, 1: its second) at every row."""
        rows = self.windows.rows([window])[0]
        positions = torch.from_numpy(self.midpoints[rows]).to(self.device)
        noise = self.noise(window)
        out = np.empty(variants.shape[:2], dtype=np.float32)
        for lo in range(0, len(variants), self.batch_size):
            part = slice(lo, lo + self.batch_size)
            x = torch.from_numpy(variants[part]).to(self.device)
            which = torch.from_numpy(passes[part]).to(self.device)
            mask = torch.where(which[:, None] == 0, self.masks[0], self.masks[1])
            label = None
            if self.cell_type is not None:
                label = torch.full((len(x),), self.cell_type, device=self.device)
            with torch.inference_mode():
                mean, _ = self.diffusion.sample(
                    self.model,
                    x,
                    mask.to(self.device),
                    positions=positions.expand(len(x), -1),
                    target=self.what,
                    cell_type=label,
                    noise=noise,
                )
            out[part] = mean[..., self.column].float().cpu().numpy()
        return out

    def baseline(self, window: int) -> np.ndarray:
        """(R,) every row predicted from the pass that hides it (evaluate's prediction)."""
        return self.read(window, self.windows.windows([window])[0][None])[0]

    def read(
        self, window: int, variants: np.ndarray, passes: tuple[int, ...] = (0, 1)
    ) -> np.ndarray:
        """(V, R) predicted accessibility of every row of ``variants`` (V, R, F), each row read
        under the one of the two masks that hides it; only the masks in ``passes`` are run, and
        the rows they do not hide come back NaN."""
        out = np.full(variants.shape[:2], np.nan, dtype=np.float32)
        for p in passes:
            hidden = self.masks[p].cpu().numpy()
            read = self.predict(window, variants, np.full(len(variants), p))
            out[:, hidden] = read[:, hidden]
        return out


def accessibility_units(windows: WindowSet, path: str | Path) -> float:
    """The factor from the model's accessibility units to log10(CPM + 1)."""
    scaling = windows.meta["scaling"][ACCESSIBILITY]
    if scaling.get("constant"):
        raise InputError(
            path, "has constant accessibility (no counts were given): there is nothing to explain"
        )
    return float(scaling["max_log10_cpm"])


def check_task(task: dict[str, str], model_path: str | Path) -> None:
    if task["predict"] != ACCESSIBILITY:
        raise ConfigError(
            f"{model_path} was trained with task.predict: {task['predict']}, which hides the motif "
            "features of the predicted regions: interpretation needs them as inputs; train with "
            f"task.predict: {ACCESSIBILITY} (config/accessibility.yaml)"
        )


@dataclass
class GroupModel(LoadedModel):
    """A trained model group ready for knock-outs (the accessibility task only)."""

    @classmethod
    def load(cls, path: str | Path, config: dict, device: torch.device) -> GroupModel:
        loaded = super().load(path, config, device)
        check_task(loaded.task, path)
        return loaded

    def predictor(self, windows: WindowSet, path: Path, settings: InterpretSettings) -> Predictor:
        check_compatible(self.model, self.meta, windows, path)
        masks = complementary_masks(self.model.config.num_regions, seed=settings.mask_seed)
        label = cell_type_index(self.model, self.meta, windows, path, self.unseen)
        return Predictor(
            self.model,
            self.diffusion,
            windows,
            masks,
            label,
            self.task,
            self.device,
            settings.batch_size,
            settings.seed,
        )
