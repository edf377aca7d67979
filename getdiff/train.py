"""``getdiff train``: fine-tune GETRegionDiffusion on the window tensors of one group of cell types.

Inputs: ``{prepared_dir}/{cell_type}/windows_{train,validation}.parquet`` for every cell type of
the group (read with :func:`getdiff.tensors.load_window_set`). The cell types' regions are stacked
into one (N, F) float32 tensor kept on the training device; a batch is gathered by index
(``starts[b, None] + arange(W)``), so no per-sample Python work runs on the hot path.

Each step: B windows (epochs are seeded permutations of the windows), exactly
``round(W * mask_ratio)`` masked regions per window, one t per window and the noise, all drawn on
the device from one seeded generator; loss = masked MSE of the x0 prediction over the task's
hidden values (:class:`getdiff.diffusion.GaussianDiffusion`, :mod:`getdiff.task`), with each
region's genomic midpoint passed on for ``model.positions: rotary``. AdamW (weight decay on
matrices only), linear warm-up then cosine decay to ``MIN_LR_RATIO * lr``, gradient clipping,
bf16 autocast on CUDA (and on CPU with ``train.precision: bf16``).

Scale-out (:mod:`getdiff.distributed`): under torchrun (``train.devices`` x ``train.nodes``
processes) every rank draws the masks, t and noise of the whole global batch from the same
generator and trains on its own disjoint shard of it (DDP averages the gradients), so a sample
gets the same mask, t and noise whatever the number of processes, and 1 process x batch 8
trains like 2 x 4 up to floating-point reduction order. ``train.grad_accumulation`` splits each
rank's shard into micro-batches whose losses are weighted by their share of it (every window
hides the same number of values, so this is the loss of the whole batch);
``train.activation_checkpointing`` recomputes each DiT block in the backward pass;
``train.compile`` runs the network through ``torch.compile``. With ``model.dropout`` > 0 the
dropout draws depend on the layout (rank, micro-batch), so such runs agree in distribution only.
Only rank 0 validates, logs and writes; the progress line's rates are those of all ranks
together (steps/s of global batches, tokens/s and GFLOP/s over every process).

Validation every ``eval_every`` steps and at the end, on ``val_windows`` validation windows taken
in turn from each cell type, with masks, t and noise fixed by the seed (same every pass and every
run). Each pass
scores the masked MSE, the masked Pearson over the predicted values, and the masked
accessibility Pearson: per cell type over its validation windows' masked regions, then the mean
over the cell types (pooled, the cell types' levels would dominate it). The weights of the pass
that ``train.select_by`` ranks first are the result (:func:`selection_key`): the highest
accessibility Pearson (default, either task), or the lowest loss; ties, and passes whose
Pearson is undefined (constant accessibility), are ranked by the loss.

Outputs in ``outdir`` (written atomically, only once training has finished):

- ``model.safetensors``: best weights (of the EMA when ``train.ema_decay`` > 0) with LoRA merged
  (:func:`getdiff.model.save_model`);
  metadata: cell_types, feature_names, train_feature_mean (per feature, over all train-split
  regions of the group), window_size, task (getdiff.task), diffusion settings, select_by,
  best_step, and the chosen pass's best_val_loss and best_val_accessibility_pearson (without
  validation windows: select_by null, the last step).
- ``adapter/``: the peft adapters of the best weights (or a README when ``use_lora`` is false).
- ``history.tsv``: one row per log or validation step (columns ``HISTORY_COLUMNS``); ``best``
  is 1 on the row of the exported step, 0 on the other validation rows.
- ``config.yaml``: the resolved configuration.

Resuming: ``outdir/checkpoints/last.pt`` (model, optimizer, scheduler, RNG states, step, history,
the best pass so far) is written every ``checkpoint_every`` steps, and ``best-<step>.pt`` (the
weights validation scored) at each new best. The best file that ``last.pt`` names is deleted only
once a later ``last.pt`` names another, so a run killed after a new best resumes with its own
best file (the later one, of a lost future, is deleted on resume). A rerun
with the same settings and inputs continues from ``last.pt`` and reaches the same weights as an
uninterrupted run (under DDP too: every rank's RNG state is saved); if the settings or inputs
differ it starts afresh (``RESUME_NEUTRAL_KEYS`` may differ: e.g. a run may resume on another
number of GPUs). Delete ``outdir/checkpoints`` to force a fresh start.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from getdiff import __version__, distributed
from getdiff.config import (
    add_config_arguments,
    config_from_args,
    load_cell_types,
    train_groups,
)
from getdiff.devices import resolve_device
from getdiff.diffusion import (
    GaussianDiffusion,
    Target,
    hidden_values,
    random_masks,
    random_timesteps,
)
from getdiff.distributed import Ranks
from getdiff.errors import ConfigError, GetdiffError, InputError
from getdiff.io import atomic_dir, atomic_path, exclusive, output_set
from getdiff.lora import apply_lora, merge_lora, save_adapters, unwrap
from getdiff.model import build_model, count_parameters, save_model, train_step_flops
from getdiff.paths import (
    CHECKPOINTS_DIR,
    LAST_CHECKPOINT,
    TRAIN_DIRECTORIES,
    TRAIN_FILES,
    in_folder,
)
from getdiff.task import target as task_target
from getdiff.tensors import ACCESSIBILITY, load_window_set, region_midpoints, windows_path

log = logging.getLogger(__name__)

MIN_LR_RATIO = 0.1  # cosine decay ends at this fraction of the peak learning rate (as nanoGPT)
HISTORY_COLUMNS = (
    "step",
    "lr",
    "loss",
    "val_loss",
    "masked_pearson",
    "val_masked_pearson",
    "val_accessibility_pearson",
    "best",
    "grad_norm",
    "steps_per_s",
    "tokens_per_s",
    "gflops",
)
# train.* keys that do not change the trajectory: a checkpoint written under other values resumes.
RESUME_NEUTRAL_KEYS = ("log_every", "checkpoint_every", "device", "gpu_model", "groups")
# Speed and memory knobs: the trajectory is the same up to rounding (and dropout draws).
RESUME_NEUTRAL_KEYS += ("devices", "nodes", "grad_accumulation", "activation_checkpointing")
RESUME_NEUTRAL_KEYS += ("compile",)


# --- data --------------------------------------------------------------------------------------


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


# --- pieces of the loop ------------------------------------------------------------------------


def configure_optimizer(
    model: torch.nn.Module, lr: float, weight_decay: float, device: torch.device
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; weight decay on matrices, not biases/norms/tokens."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim < 2 or name.endswith("_token"):
            no_decay.append(param)
        else:
            decay.append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if device.type == "cuda":
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    return torch.optim.AdamW(groups, lr=lr, foreach=True)


def lr_factor(warmup_steps: int, max_steps: int) -> Callable[[int], float]:
    """Multiplier of the peak lr at step s: linear warm-up, then cosine to ``MIN_LR_RATIO``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        return MIN_LR_RATIO + (1.0 - MIN_LR_RATIO) * cosine

    return factor


def masked_pearson(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    columns: torch.Tensor | None = None,
) -> float:
    """Pearson correlation over the hidden values (NaN if either side is constant)."""
    hidden = hidden_values(mask, columns).expand_as(target)
    p = pred[hidden].double()
    y = target[hidden].double()
    p, y = p - p.mean(), y - y.mean()
    denominator = (p.square().sum() * y.square().sum()).sqrt()
    return float((p * y).sum() / denominator) if denominator > 0 else float("nan")


@torch.no_grad()
def validate(
    model: torch.nn.Module,
    diffusion: GaussianDiffusion,
    val: ValidationSet,
    batch_size: int,
    autocast: torch.autocast,
    target: Target,
    accessibility: torch.Tensor | None = None,
) -> dict[str, float]:
    """The history's validation columns over the whole fixed validation set, in eval mode:
    ``val_loss`` (masked MSE), ``val_masked_pearson`` (over the predicted values) and
    ``val_accessibility_pearson`` (:func:`accessibility_pearson` of the (F,) bool column mask
    ``accessibility``; NaN without one)."""
    model.eval()
    squared, count = 0.0, 0
    preds = []
    for i in range(0, val.x0.shape[0], batch_size):
        part = slice(i, i + batch_size)
        with autocast:
            loss, pred = diffusion.training_loss(
                model,
                val.x0[part],
                val.mask[part],
                val.t[part],
                val.noise[part],
                positions=val.positions[part],
                target=target,
                cell_type=val.cell_type[part],
            )
        values = int(hidden_values(val.mask[part], target.columns).expand_as(val.x0[part]).sum())
        squared += float(loss) * values
        count += values
        preds.append(pred.float())
    model.train()
    pred = torch.cat(preds)
    return {
        "val_loss": squared / count,
        "val_masked_pearson": masked_pearson(pred, val.x0, val.mask, target.columns),
        "val_accessibility_pearson": accessibility_pearson(pred, val, accessibility),
    }


def accessibility_pearson(
    pred: torch.Tensor, val: ValidationSet, accessibility: torch.Tensor | None
) -> float:
    """Mean over the validation set's cell types of each one's masked accessibility Pearson
    (cell types whose Pearson is undefined left out; NaN if none is defined or no column)."""
    if accessibility is None:
        return math.nan
    scores = []
    for cell_type in val.cell_type.unique().tolist():
        rows = val.cell_type == cell_type
        scores.append(masked_pearson(pred[rows], val.x0[rows], val.mask[rows], accessibility))
    defined = [score for score in scores if math.isfinite(score)]
    return sum(defined) / len(defined) if defined else math.nan


def selection_key(row: dict[str, float], select_by: str) -> tuple[float, ...]:
    """How ``train.select_by`` ranks a validation pass (larger is better): the accessibility
    Pearson, then the lower loss; or the loss alone. An undefined value ranks last."""

    def defined(value: float) -> float:
        return value if math.isfinite(value) else -math.inf

    loss = defined(-row["val_loss"])
    if select_by == "val_loss":
        return (loss,)
    return (defined(row["val_accessibility_pearson"]), loss)


def _config_fingerprint(config: dict[str, Any], cell_types: list[str], inputs: list[Path]) -> str:
    """What a checkpoint must agree on to be resumed: settings that shape training, and inputs."""
    train = {k: v for k, v in config["train"].items() if k not in RESUME_NEUTRAL_KEYS}
    stats = [[p.parent.name, p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in inputs]
    return json.dumps(
        {
            "task": config["task"],
            "model": config["model"],
            "diffusion": config["diffusion"],
            "train": train,
            "cell_types": cell_types,
            "inputs": stats,
        },
        sort_keys=True,
    )


# --- model construction ------------------------------------------------------------------------


def build_training_model(
    config: dict[str, Any], num_motif: int, window_size: int, num_cell_types: int
):
    """The network from preset + overrides, GET weights imported if configured, LoRA if enabled."""
    settings = config["model"]
    overrides = dict(settings["overrides"])
    if "mask_ratio" in overrides:  # no ModelConfig field: the masks are training's, not the net's
        raise ConfigError(
            "key 'model.overrides.mask_ratio': the share of masked regions is "
            "diffusion.mask_ratio; set only that"
        )
    overrides["window_conditioning"] = config["task"]["scaling"] == "window"
    overrides["num_cell_types"] = num_cell_types if settings["cell_type_embedding"] else 0
    overrides["unknown_cell_type"] = bool(overrides["num_cell_types"]) and (
        settings["cell_type_dropout"] > 0
    )
    if overrides.setdefault("positions", settings["positions"]) != settings["positions"]:
        raise ConfigError(
            "key 'model.overrides.positions' differs from 'model.positions'; "
            "set only model.positions"
        )
    model = build_model(
        settings["preset"], **{**overrides, "num_motif": num_motif, "num_regions": window_size}
    )
    if settings["pretrained_checkpoint"]:
        from getdiff.checkpoint import load_get_checkpoint

        report = load_get_checkpoint(
            model,
            settings["pretrained_checkpoint"],
            allow_extra=settings["allow_extra_checkpoint_keys"],
        )
        log.info(
            "imported GET checkpoint %s: %d tensors copied, %d norm tensors folded into adaLN, "
            "%d extra keys ignored %s, freshly initialised: %s",
            report["path"],
            len(report["loaded"]),
            len(report["folded"]),
            len(report["ignored"]),
            report["ignored"],
            report["initialised"],
        )
    if settings["use_lora"]:
        if not settings["pretrained_checkpoint"]:
            log.warning(
                "model.use_lora is true but no model.pretrained_checkpoint is set: LoRA will adapt "
                "randomly initialised, frozen base weights (set use_lora: false to train them all)"
            )
        lora = settings["lora"]
        model = apply_lora(
            model, r=lora["r"], alpha=lora["alpha"], dropout=lora["dropout"], adaln=lora["adaln"]
        )
    return model


def _export(
    model: torch.nn.Module,
    use_lora: bool,
    adapter: Path,
    model_path: Path,
    metadata: dict[str, Any],
) -> None:
    """Write the adapter directory and the model (LoRA merged) from the current weights."""
    if use_lora:
        save_adapters(model, adapter)
        model = merge_lora(model)
    else:
        with atomic_dir(adapter) as tmp:
            (tmp / "README.md").write_text(
                "No adapters: this model was trained without LoRA (model.use_lora: false);\n"
                "its full weights are in ../model.safetensors.\n",
                encoding="utf-8",
            )
    save_model(model, model_path, extra_metadata=metadata)


def _write_history(rows: list[dict[str, float]], path: Path, exported_step: int) -> None:
    """The history as TSV, ``best`` = 1 on the validation row of ``exported_step`` (0 on the
    other validation rows; the last row when training had no validation windows)."""
    rows = [
        {**row, "best": int(row["step"] == exported_step)} if "val_loss" in row else row
        for row in rows
    ]

    def cell(value: float) -> str:
        return (
            ""
            if value is None or (isinstance(value, float) and math.isnan(value))
            else f"{value:.6g}"
        )

    lines = ["\t".join(HISTORY_COLUMNS)]
    lines += ["\t".join(cell(row.get(c)) for c in HISTORY_COLUMNS) for row in rows]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _save(state: dict[str, Any], path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _rng_states(generator: torch.Generator, ranks: Ranks) -> dict[str, Any]:
    """RNG states: the data generator's (the same on every rank), and torch's global generator
    (dropout) of rank 0 and, under DDP, of every rank in ``ranks``."""
    states = {"torch": torch.get_rng_state(), "data": generator.get_state()}
    if ranks.device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(ranks.device)
    if ranks.distributed:
        states["ranks"] = ranks.gather_objects(_global_rng_state(ranks.device))
    return states


def _global_rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_states(
    states: dict[str, Any], generator: torch.Generator, ranks: Ranks, seed: int
) -> None:
    """Restore :func:`_rng_states` on this rank.

    A checkpoint written by another number of processes gives rank 0 its saved state and the
    other ranks a fresh dropout stream.
    """
    generator.set_state(states["data"])
    per_rank = states.get("ranks")
    if per_rank is not None and len(per_rank) == ranks.world_size:
        state = per_rank[ranks.rank]
    elif ranks.rank == 0:
        state = states  # rank 0's state is also the top-level one
    else:
        _seed_rank(seed, ranks)
        return
    torch.set_rng_state(state["torch"])
    if ranks.device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], ranks.device)


def _seed_rank(seed: int, ranks: Ranks) -> None:
    """Give ranks other than 0 their own dropout stream (rank 0 keeps the single-process one)."""
    if ranks.rank > 0:
        torch.manual_seed(int(np.random.SeedSequence([seed, ranks.rank]).generate_state(1)[0]))


# --- the loop ----------------------------------------------------------------------------------


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

    @property
    def settings(self) -> dict[str, Any]:
        return self.config["train"]

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
    settings = config["train"]
    ranks = ranks or Ranks(device=resolve_device(settings["device"]))
    device = ranks.device
    ranks.shard(settings["batch_size"])  # a batch that does not split evenly: ConfigError
    if settings["batch_size"] // ranks.world_size < settings["grad_accumulation"]:
        raise ConfigError(
            f"key 'train.grad_accumulation': {settings['grad_accumulation']} micro-batches need at "
            f"least as many windows per process; train.batch_size is {settings['batch_size']} "
            f"over {ranks.world_size} process(es)"
        )
    # bf16 autocast: always on CUDA; on CPU only when asked (it pays off on CPUs with native
    # bf16 matmul, e.g. avx512_bf16/AMX: 1.5x at the mid preset in benchmarks/RESULTS.md).
    precision = settings["precision"]
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
        settings["val_windows"],
        config["diffusion"]["mask_ratio"],
        diffusion.num_timesteps,
        settings["seed"] + 1,
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
        fingerprint=_config_fingerprint(config, cell_types, inputs),
    )


def training_network(
    model: torch.nn.Module, run: Run
) -> tuple[torch.nn.Module, DistributedDataParallel | None]:
    """What a step calls: ``model`` with activation checkpointing as configured, in DDP across
    ranks, compiled if asked; and the DDP wrapper (None in one process)."""
    settings = run.settings
    unwrap(model).encoder.activation_checkpointing = settings["activation_checkpointing"]
    ddp = None
    network = model
    if run.ranks.distributed:
        device_ids = [run.device] if run.device.type == "cuda" else None
        # Every trainable parameter (LoRA, modules_to_save, mask_token) is used in each forward.
        ddp = network = DistributedDataParallel(model, device_ids=device_ids)
    if settings["compile"]:
        network = torch.compile(network)
    return network, ddp


@dataclass
class TrainState:
    """Everything a step changes; saved to and restored from ``checkpoints/last.pt``."""

    model: torch.nn.Module  # the network's weights (plain or peft), as saved and exported
    network: torch.nn.Module  # not saved: what a step calls (model, or DDP / compiled around it)
    ddp: DistributedDataParallel | None  # not saved: the DDP wrapper when there are several ranks
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    generator: torch.Generator  # masks, t and noise (the same stream on every rank)
    loss_sum: torch.Tensor  # training loss summed since the last log line (on the device)
    trainable: list[torch.nn.Parameter]  # not saved: derived from the model
    flops_per_step: float  # model FLOPs of one step (getdiff.model.train_step_flops)
    step: int = 0
    interval_steps: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float] | None = None  # the validation row of the best pass so far
    ema: dict[str, torch.Tensor] | None = None  # train.ema_decay > 0: the averaged weights

    @classmethod
    def fresh(cls, run: Run) -> TrainState:
        """Seeded model (GET import and LoRA as configured), optimizer, schedule and generator."""
        settings = run.settings
        torch.manual_seed(settings["seed"])  # model initialisation (and LoRA's) is seeded too
        data = run.train_data
        model = build_training_model(
            run.config, len(data.feature_names), data.window_size, len(run.cell_types)
        )
        model = model.to(run.device).train()
        _seed_rank(settings["seed"], run.ranks)
        network, ddp = training_network(model, run)
        optimizer = configure_optimizer(model, settings["lr"], settings["weight_decay"], run.device)
        schedule = lr_factor(settings["warmup_steps"], settings["max_steps"])
        return cls(
            model=model,
            network=network,
            ddp=ddp,
            optimizer=optimizer,
            scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, schedule),
            generator=torch.Generator(device=run.device).manual_seed(settings["seed"]),
            loss_sum=torch.zeros((), device=run.device),
            trainable=[p for p in model.parameters() if p.requires_grad],
            flops_per_step=train_step_flops(
                unwrap(model).config, settings["batch_size"], data.window_size
            ),
            ema=ema_start(model) if settings["ema_decay"] > 0 else None,
        )

    @property
    def best_step(self) -> int:
        """The step of the best validation pass so far (-1 before the first)."""
        return -1 if self.best is None else int(self.best["step"])

    def to_checkpoint(self, fingerprint: str, ranks: Ranks) -> dict[str, Any]:
        """The checkpoint dict; a collective under DDP (every rank must call it)."""
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": _rng_states(self.generator, ranks),
            "history": self.history,
            "best": self.best,
            "loss_sum": float(ranks.mean_(self.loss_sum)),
            "interval_steps": self.interval_steps,
            "fingerprint": fingerprint,
            "ema": self.ema,
        }

    def restore(self, checkpoint: dict[str, Any], ranks: Ranks, seed: int) -> None:
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        _set_rng_states(checkpoint["rng"], self.generator, ranks, seed)
        self.step, self.history = checkpoint["step"], checkpoint["history"]
        self.best = checkpoint["best"]
        self.loss_sum.fill_(checkpoint["loss_sum"])  # the mean over ranks, on every rank
        self.interval_steps = checkpoint["interval_steps"]
        if self.ema is not None:
            for name, value in checkpoint["ema"].items():
                self.ema[name].copy_(value)


def ema_start(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's floating-point weights: the exponential moving average's start."""
    return {
        name: value.detach().clone()
        for name, value in model.state_dict().items()
        if value.is_floating_point()
    }


@torch.no_grad()
def ema_update(
    ema: dict[str, torch.Tensor], model: torch.nn.Module, decay: float, step: int
) -> None:
    """ema <- d ema + (1 - d) weights, d = min(decay, (1 + step) / (10 + step)): the warm-up
    keeps a short run's average from being held at its initial weights."""
    d = min(decay, (1 + step) / (10 + step))
    weights = model.state_dict()
    for name, average in ema.items():
        average.lerp_(weights[name], 1.0 - d)


@contextmanager
def averaged_weights(state: TrainState) -> Iterator[None]:
    """The model holds the EMA weights inside the block (when there is an EMA), its own after."""
    if state.ema is None:
        yield
        return
    raw = {name: value.detach().clone() for name, value in state.model.state_dict().items()}
    state.model.load_state_dict({**raw, **state.ema})
    try:
        yield
    finally:
        state.model.load_state_dict(raw)


def resume(state: TrainState, run: Run) -> None:
    """Continue from ``last.pt`` when it was written with the same settings and inputs.

    Every rank reads the file (the same one: the same settings and inputs give every rank the
    same decision).
    """
    path = run.last_path
    if path.exists():
        # On the CPU: RNG states must be CPU tensors; load_state_dict moves the rest.
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # truncated or foreign file: torch raises several types
            raise InputError(
                path,
                f"unreadable checkpoint ({str(error).splitlines()[0]}); expected one written by "
                "getdiff train (delete it to start afresh)",
            ) from error
        if checkpoint.get("fingerprint") == run.fingerprint:
            state.restore(checkpoint, run.ranks, run.settings["seed"])
            log.info("resuming from %s at step %d", path, state.step)
        else:
            log.warning("%s was written with other settings or inputs: starting afresh", path)
    if run.ranks.is_main:
        # A best file of another run, or of this run's future lost with the kill, is stale.
        (run.outdir / CHECKPOINTS_DIR / "best.pt").unlink(missing_ok=True)  # older getdiff's name
        prune_best(state, run)


def prune_best(state: TrainState, run: Run) -> None:
    """Delete every ``best-<step>.pt`` but the one of the state's best pass (rank 0)."""
    for step, path in run.best_files().items():
        if step != state.best_step:
            path.unlink(missing_ok=True)


def draw_batch(state: TrainState, run: Run, sampler: EpochSampler) -> dict[str, torch.Tensor]:
    """This rank's shard of the step's global batch, with its masks, t and noise.

    Masks, t and noise are drawn for the whole global batch on every rank (one seeded stream),
    so each sample gets the same ones whatever the number of processes.
    """
    data, settings = run.train_data, run.settings
    batch_size, device = settings["batch_size"], run.device
    shard = run.ranks.shard(batch_size)
    x0, positions, cell_type = data.batch(sampler.indices(state.step)[shard])
    mask = random_masks(
        batch_size, data.window_size, run.config["diffusion"]["mask_ratio"], state.generator, device
    )
    t = random_timesteps(batch_size, run.diffusion.num_timesteps, state.generator, device)
    noise = torch.randn((batch_size, *x0.shape[1:]), generator=state.generator, device=device)
    dropout = run.config["model"]["cell_type_dropout"]
    if dropout > 0 and unwrap(state.model).config.unknown_cell_type:
        # Label dropout (DiT's null class): drawn after the rest, so dropout 0 keeps the stream.
        dropped = torch.rand(batch_size, generator=state.generator, device=device) < dropout
        unknown = torch.full_like(cell_type, unwrap(state.model).config.num_cell_types)
        cell_type = torch.where(dropped[shard], unknown, cell_type)
    return {
        "x0": x0,
        "positions": positions,
        "cell_type": cell_type,
        "mask": mask[shard],
        "t": t[shard],
        "noise": noise[shard],
    }


def micro_batches(batch: dict[str, torch.Tensor], count: int) -> list[dict[str, torch.Tensor]]:
    """``batch`` split along dim 0 into ``count`` parts (sizes differ by at most one)."""
    splits = {key: torch.tensor_split(value, count) for key, value in batch.items()}
    return [{key: parts[i] for key, parts in splits.items()} for i in range(count)]


def _gradient_sync(state: TrainState, last: bool) -> AbstractContextManager:
    """DDP averages gradients over ranks in the last micro-batch's backward only."""
    return state.ddp.no_sync() if state.ddp is not None and not last else nullcontext()


def _loss(
    state: TrainState, run: Run, part: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked MSE, x0 prediction) of the network on one (micro-)batch."""
    with run.autocast:
        return run.diffusion.training_loss(
            state.network,
            part["x0"],
            part["mask"],
            part["t"],
            part["noise"],
            positions=part["positions"],
            target=run.target,
            cell_type=part["cell_type"],
        )


def train_step(state: TrainState, run: Run, sampler: EpochSampler) -> dict[str, Any]:
    """One optimizer step on the step's batch (this rank's shard, in micro-batches); returns
    what the log line reports."""
    batch = draw_batch(state, run, sampler)
    parts = micro_batches(batch, run.settings["grad_accumulation"])
    state.optimizer.zero_grad(set_to_none=True)
    step_loss, preds = torch.zeros((), device=run.device), []
    for i, part in enumerate(parts):
        with _gradient_sync(state, last=i == len(parts) - 1):
            loss, pred = _loss(state, run, part)
            if len(parts) > 1:
                # Every window hides as many values: the shard's loss is the size-weighted mean.
                loss = loss * (part["x0"].shape[0] / batch["x0"].shape[0])
            loss.backward()
        step_loss += loss.detach()
        preds.append(pred.detach())
    # max_norm inf (grad_clip 0) still measures the norm for the log, without clipping.
    grad_norm = torch.nn.utils.clip_grad_norm_(
        state.trainable, run.settings["grad_clip"] or math.inf
    )
    state.optimizer.step()
    if state.ema is not None:
        ema_update(state.ema, state.model, run.settings["ema_decay"], state.step)
    lr = state.scheduler.get_last_lr()[0]
    state.scheduler.step()
    state.step += 1
    state.loss_sum += step_loss
    state.interval_steps += 1
    return {
        "pred": torch.cat(preds),
        "x0": batch["x0"],
        "mask": batch["mask"],
        "grad_norm": grad_norm,
        "lr": lr,
    }


class Throughput:
    """Steps per second since the last reset (evaluation and saving are left out)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.start, self.steps = time.perf_counter(), 0

    def rate(self) -> float:
        return self.steps / max(time.perf_counter() - self.start, 1e-9)


def log_row(state: TrainState, run: Run, last: dict[str, Any], rate: float) -> dict[str, float]:
    """The history row of a log step (mean loss since the last one, Pearson, speed).

    A collective under DDP: loss and Pearson are over the global batch, on every rank.
    """
    ranks = run.ranks
    mean_loss = float(ranks.mean_(state.loss_sum)) / state.interval_steps  # syncs the device
    state.loss_sum.zero_()
    state.interval_steps = 0
    if not math.isfinite(mean_loss) and all(
        math.isfinite(r.get("loss", 0.0)) for r in state.history
    ):
        log.warning(
            "training loss is %s at step %d: training has diverged; lower train.lr or set "
            "train.grad_clip",
            mean_loss,
            state.step,
        )
    tokens_per_step = run.settings["batch_size"] * run.train_data.window_size  # global batch
    pred, x0, mask = (ranks.gather(last[k]) for k in ("pred", "x0", "mask"))
    pearson = masked_pearson(pred.float(), x0, mask, run.target.columns)
    return {
        "step": state.step,
        "lr": last["lr"],
        "loss": mean_loss,
        "masked_pearson": pearson,
        "grad_norm": float(last["grad_norm"]),
        "steps_per_s": rate,
        "tokens_per_s": rate * tokens_per_step,
        "gflops": rate * state.flops_per_step / 1e9,
    }


def report(row: dict[str, float], max_steps: int, bar: tqdm, processes: int = 1) -> None:
    """The log line of a history row: a progress-bar postfix on a terminal, else a log record.

    Rates are of the whole run: with several processes, tokens/s and GFLOP/s are their sum.
    """
    message = (
        f"loss {row['loss']:.5f} pearson {row['masked_pearson']:.3f} lr {row['lr']:.2e} "
        f"{row['steps_per_s']:.2f} steps/s {row['tokens_per_s']:,.0f} tokens/s "
        f"{row['gflops']:.1f} GFLOP/s"
    )
    if processes > 1:
        message += f" (all {processes} processes)"
    if not bar.disable:
        bar.set_postfix_str(message)
        return
    eta = round((max_steps - row["step"]) / max(row["steps_per_s"], 1e-9))
    log.info(
        "step %d/%d %s ETA %d:%02d:%02d",
        row["step"],
        max_steps,
        message,
        eta // 3600,
        eta // 60 % 60,
        eta % 60,
    )


def validation_step(state: TrainState, run: Run) -> dict[str, float]:
    """Score the fixed validation set (the history's validation columns); at a new best by
    ``train.select_by``, keep its weights in ``best-<step>.pt`` (rank 0)."""
    if run.val is None:
        return dict.fromkeys(
            ("val_loss", "val_masked_pearson", "val_accessibility_pearson"), math.nan
        )
    names = run.train_data.feature_names
    accessibility = (
        torch.tensor([name == ACCESSIBILITY for name in names], device=run.device)
        if ACCESSIBILITY in names
        else None
    )
    select_by = run.settings["select_by"]
    with averaged_weights(state):
        scores = validate(
            state.model,
            run.diffusion,
            run.val,
            run.settings["batch_size"],
            run.autocast,
            run.target,
            accessibility,
        )
        new_best = state.best is None or selection_key(scores, select_by) > selection_key(
            state.best, select_by
        )
        log.info(
            "step %d validation%s: loss %.5f, masked Pearson %.4f, accessibility Pearson %.4f%s",
            state.step,
            " (EMA weights)" if state.ema is not None else "",
            scores["val_loss"],
            scores["val_masked_pearson"],
            scores["val_accessibility_pearson"],
            f" (best by {select_by} so far)" if new_best else "",
        )
        if new_best:
            state.best = {"step": state.step, **scores}
            _save(
                {"step": state.step, "model": state.model.state_dict()}, run.best_path(state.step)
            )
    return scores


def save_checkpoint(state: TrainState, run: Run) -> None:
    """Write ``last.pt``, then drop the best files it no longer names (rank 0; every rank takes
    part in gathering the RNG states)."""
    checkpoint = state.to_checkpoint(run.fingerprint, run.ranks)
    if run.ranks.is_main:
        _save(checkpoint, run.last_path)
        prune_best(state, run)


def export(state: TrainState, run: Run) -> None:
    """Load the best weights and write model, adapter, history and config (each atomically)."""
    best = state.best if run.val is not None else None
    if best is not None:
        path = run.best_path(state.best_step)
        if not path.exists():
            raise InputError(
                path,
                "missing: the weights of the best validation pass, which checkpoints/last.pt "
                "names (delete checkpoints/ to train afresh)",
            )
        weights = torch.load(path, map_location="cpu", weights_only=True)
        state.model.load_state_dict(weights["model"])
        log.info(
            "exporting the weights of step %d, best by %s: validation loss %.5f, accessibility "
            "Pearson %.4f",
            state.best_step,
            run.settings["select_by"],
            best["val_loss"],
            best["val_accessibility_pearson"],
        )
    elif state.ema is not None:
        state.model.load_state_dict({**state.model.state_dict(), **state.ema})
    settings, model_settings = run.settings, run.config["model"]
    data = run.train_data
    exported_step = state.best_step if best is not None else settings["max_steps"]
    metadata = {
        "getdiff_version": __version__,
        "cell_types": run.cell_types,
        "feature_names": data.feature_names,
        "train_feature_mean": data.features.double().mean(dim=0).tolist(),
        "window_size": data.window_size,
        "task": run.config["task"],
        "diffusion": run.config["diffusion"],
        "preset": model_settings["preset"],
        "use_lora": model_settings["use_lora"],
        "steps": settings["max_steps"],
        "select_by": settings["select_by"] if best is not None else None,
        "best_step": exported_step,
        "best_val_loss": _finite_or_none(best, "val_loss"),
        "best_val_accessibility_pearson": _finite_or_none(best, "val_accessibility_pearson"),
        "ema_decay": settings["ema_decay"],
    }
    state.model.eval()
    # One set: the model (what the workflow waits for) is renamed in last.
    paths = in_folder(run.outdir, TRAIN_FILES)
    with output_set(paths, directories=TRAIN_DIRECTORIES) as tmp:
        _export(state.model, model_settings["use_lora"], tmp["adapter"], tmp["model"], metadata)
        _write_history(state.history, tmp["history"], exported_step)
        tmp["config"].write_text(yaml.safe_dump(run.config, sort_keys=False), encoding="utf-8")
    log.info("wrote %s", run.outdir)


def _finite_or_none(row: dict[str, float] | None, key: str) -> float | None:
    value = None if row is None else row[key]
    return value if value is not None and math.isfinite(value) else None


def _log_model(state: TrainState, run: Run) -> None:
    trainable, total = count_parameters(state.model)
    data, ranks, settings = run.train_data, run.ranks, run.settings
    knobs = [
        f"{settings['grad_accumulation']} micro-batches"
        if settings["grad_accumulation"] > 1
        else "",
        "activation checkpointing" if settings["activation_checkpointing"] else "",
        "torch.compile" if settings["compile"] else "",
        f"{ranks.world_size} processes ({ranks.backend} DDP)" if ranks.distributed else "",
    ]
    log.info(
        "model %s: %s trainable of %s parameters; device %s%s%s; %d train windows x %d regions x "
        "%d features",
        run.config["model"]["preset"],
        f"{trainable:,}",
        f"{total:,}",
        run.device,
        " (bf16 autocast)" if run.bf16 else f" ({torch.get_num_threads()} threads)",
        "".join(f"; {knob}" for knob in knobs if knob),
        len(data),
        data.window_size,
        len(data.feature_names),
    )
    log.info(  # what a scheduler gave the job (tests/test_slurm.py checks it)
        "visible GPUs: CUDA_VISIBLE_DEVICES=%s SLURM_JOB_GPUS=%s",
        os.environ.get("CUDA_VISIBLE_DEVICES", "unset"),
        os.environ.get("SLURM_JOB_GPUS", "unset"),
    )
    asked = settings["devices"] * settings["nodes"]
    if asked != ranks.world_size:
        log.warning(
            "train.devices x train.nodes is %d but %d process(es) run: the workflow's train rule "
            "starts torchrun; to run getdiff train by hand on %d, use `torchrun --nproc-per-node "
            "N -m getdiff train ...`",
            asked,
            ranks.world_size,
            asked,
        )


def train(
    config: dict[str, Any],
    cell_types: list[str],
    prepared_dir: str | Path,
    outdir: str | Path,
    threads: int | None = None,
    stop_after: int | None = None,
) -> Path | None:
    """Train on ``cell_types``' windows with the validated ``config``; return ``outdir``.

    ``threads`` sets torch's CPU threads (under torchrun: shared among a node's processes).
    ``stop_after`` ends the run after that many steps as if killed (no final outputs; the last
    periodic checkpoint stays), and returns None. Started by torchrun, each process runs this
    as one rank (see :mod:`getdiff.distributed`); only rank 0 takes the output lock and writes.
    """
    ranks = distributed.start(config["train"]["device"])
    try:
        if threads:
            torch.set_num_threads(max(1, threads // ranks.local_world_size))
        if not ranks.is_main:
            logging.getLogger("getdiff").setLevel(logging.ERROR)  # rank 0 speaks for all
        with exclusive(outdir, "train") if ranks.is_main else nullcontext():
            result = _train(config, cell_types, prepared_dir, outdir, stop_after, ranks)
        ranks.barrier()  # every rank returns once the outputs are written
        return result
    finally:
        distributed.stop(ranks)


def _train(
    config: dict[str, Any],
    cell_types: list[str],
    prepared_dir: str | Path,
    outdir: str | Path,
    stop_after: int | None,
    ranks: Ranks,
) -> Path | None:
    run = prepare_run(config, cell_types, prepared_dir, outdir, ranks)
    state = TrainState.fresh(run)
    _log_model(state, run)
    resume(state, run)
    max_steps = run.settings["max_steps"]
    sampler = EpochSampler(
        len(run.train_data), run.settings["batch_size"], run.settings["seed"], run.device
    )
    speed = Throughput()
    with (
        logging_redirect_tqdm(),
        tqdm(
            total=max_steps,
            initial=state.step,
            disable=not (sys.stderr.isatty() and ranks.is_main),
            unit="step",
            dynamic_ncols=True,
        ) as bar,
    ):
        while state.step < max_steps:
            last = train_step(state, run, sampler)
            speed.steps += 1
            bar.update(1)
            after_step(state, run, last, speed, bar)
            if stop_after is not None and stop_after <= state.step < max_steps:
                log.info("stopping after step %d as asked (outputs not written)", state.step)
                return None
    if ranks.is_main:
        export(state, run)
    return run.outdir


def after_step(
    state: TrainState, run: Run, last: dict[str, Any], speed: Throughput, bar: tqdm
) -> None:
    """Log, validate and checkpoint when the step is due (every rank calls this)."""
    settings, step, main = run.settings, state.step, run.ranks.is_main
    final = step == settings["max_steps"]
    row: dict[str, float] = {}
    if step % settings["log_every"] == 0 or final:
        row = log_row(state, run, last, speed.rate())
        if main:
            report(row, settings["max_steps"], bar, run.ranks.world_size)
    if main and (step % settings["eval_every"] == 0 or final):
        row.update(step=step, **validation_step(state, run))
    if row:
        state.history.append(row)
    if step % settings["checkpoint_every"] == 0 or final:
        save_checkpoint(state, run)
    if row or step % settings["checkpoint_every"] == 0:
        speed.reset()  # rates exclude evaluation and saving


# --- command line ------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> None:
    config = config_from_args(args)
    sheet = load_cell_types(config["cell_types"])
    groups = train_groups(config, list(sheet.index))
    if args.group not in groups:
        raise ConfigError(f"model group {args.group!r} is not configured; groups: {sorted(groups)}")
    if args.threads is not None and args.threads < 1:
        raise GetdiffError(f"--threads must be >= 1, got {args.threads}")
    train(config, groups[args.group], args.prepared_dir, args.outdir, threads=args.threads)


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="fine-tune GETRegionDiffusion on the prepared windows of one group of cell types",
        description=__doc__.split("\n\n")[0],
    )
    add_config_arguments(parser)
    parser.add_argument("--group", required=True, help="model group (train.groups; default 'all')")
    parser.add_argument(
        "--prepared-dir",
        required=True,
        type=Path,
        help="directory with {cell_type}/windows_{train,validation}.parquet",
    )
    parser.add_argument("--outdir", required=True, type=Path, help="output directory")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.set_defaults(func=run)
