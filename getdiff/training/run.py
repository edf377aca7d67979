"""What a training run reads and never changes (:class:`Run`): settings, data, validation set,
ranks, the diffusion process, and where its checkpoints go."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from getdiff.devices import resolve_device
from getdiff.errors import ConfigError, InputError
from getdiff.modeling.diffusion import GaussianDiffusion, Target
from getdiff.modeling.task import target as task_target
from getdiff.paths import CHECKPOINTS_DIR, LAST_CHECKPOINT
from getdiff.tensors import windows_path
from getdiff.training.distributed import Ranks
from getdiff.training.settings import TrainSettings, config_fingerprint
from getdiff.training.windows import (
    ValidationSet,
    WindowData,
    load_split_windows,
    make_validation_set,
)

log = logging.getLogger(__name__)


@dataclass
class Run:
    """What a training run reads and never changes: settings, data, validation set, ranks."""

    config: dict[str, Any]
    cell_types: list[str]
    outdir: Path
    ranks: Ranks  # this process's rank and device (rank 0 of 1 without torchrun)
    bf16: bool  # autocast to bfloat16
    train_data: WindowData
    val: ValidationSet | None
    target: Target
    diffusion: GaussianDiffusion
    fingerprint: str

    @property
    def device(self) -> torch.device:
        return self.ranks.device

    @cached_property
    def settings(self) -> TrainSettings:
        return TrainSettings.from_config(self.config)

    @property
    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    @property
    def last_path(self) -> Path:
        return self.outdir / CHECKPOINTS_DIR / LAST_CHECKPOINT

    def best_path(self, step: int) -> Path:
        """The weights of the validation pass at ``step``, kept while it is the best."""
        return self.outdir / CHECKPOINTS_DIR / f"best-{step}.pt"

    def best_files(self) -> dict[int, Path]:
        """Step -> ``best-<step>.pt`` of every best file in ``checkpoints/``."""
        found = {}
        for path in (self.outdir / CHECKPOINTS_DIR).glob("best-*.pt"):
            step = path.stem.removeprefix("best-")
            if step.isdigit():
                found[int(step)] = path
        return found


def prepare_run(
    config: dict[str, Any],
    cell_types: list[str],
    prepared_dir: str | Path,
    outdir: str | Path,
    ranks: Ranks | None = None,
) -> Run:
    """Precision, the group's windows, the fixed validation set and the fingerprint.

    ``ranks`` (default: a single process on ``train.device``) gives the device.
    """
    settings = TrainSettings.from_config(config)
    ranks = ranks or Ranks(device=resolve_device(settings.device))
    device = ranks.device
    ranks.shard(settings.batch_size)  # a batch that does not split evenly: ConfigError
    if settings.batch_size // ranks.world_size < settings.grad_accumulation:
        raise ConfigError(
            f"key 'train.grad_accumulation': {settings.grad_accumulation} micro-batches need at "
            f"least as many windows per process; train.batch_size is {settings.batch_size} "
            f"over {ranks.world_size} process(es)"
        )
    # bf16 autocast: always on CUDA; on CPU only when asked (it pays off on CPUs with native
    # bf16 matmul, e.g. avx512_bf16/AMX: 1.5x at the mid preset in benchmarks/RESULTS.md).
    precision = settings.precision
    use_autocast = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    train_data = load_split_windows(prepared_dir, cell_types, "train", device)
    val_data = load_split_windows(prepared_dir, cell_types, "validation", device)
    if len(train_data) == 0:
        raise InputError(prepared_dir, f"no training windows for cell types {cell_types}")
    if val_data.feature_names != train_data.feature_names:
        raise InputError(prepared_dir, "train and validation windows have different features")
    diffusion = GaussianDiffusion.from_config(config["diffusion"])
    val = make_validation_set(
        val_data,
        settings.val_windows,
        config["diffusion"]["mask_ratio"],
        diffusion.num_timesteps,
        settings.seed + 1,
    )
    if val is None:
        log.warning("no validation windows: the final weights are kept (no best-model selection)")
    splits = ("train", "validation")
    inputs = [windows_path(prepared_dir, ct, split) for ct in cell_types for split in splits]
    return Run(
        config=config,
        cell_types=cell_types,
        outdir=Path(outdir),
        ranks=ranks,
        bf16=use_autocast,
        train_data=train_data,
        val=val,
        target=task_target(config["task"], train_data.feature_names),
        diffusion=diffusion,
        fingerprint=config_fingerprint(config, cell_types, inputs),
    )
