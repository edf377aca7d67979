"""``getdiff train``: fine-tune GETRegionDiffusion on the window tensors of one group of cell types.

Inputs: ``{prepared_dir}/{cell_type}/windows_{train,validation}.parquet`` for every cell type of
the group (read with :func:`getdiff.tensors.load_window_set`). The cell types' regions are stacked
into one (N, F) float32 tensor kept on the training device; a batch is gathered by index
(``starts[b, None] + arange(W)``), so no per-sample Python work runs on the hot path.

Each step: B windows (epochs are seeded permutations of the windows), exactly
``round(W * mask_ratio)`` masked regions per window, one t per window and the noise, all drawn on
the device from one seeded generator; loss = masked MSE of the x0 prediction over the task's
hidden values (:class:`getdiff.modeling.diffusion.GaussianDiffusion`,
:mod:`getdiff.modeling.task`), with each region's genomic midpoint passed on for ``model.positions:
rotary``. AdamW (weight decay on matrices only), linear warm-up then cosine decay to ``MIN_LR_RATIO
* lr``, gradient clipping, bf16 autocast on CUDA (and on CPU with ``train.precision: bf16``).

Scale-out (:mod:`getdiff.training.distributed`): under torchrun (``train.devices`` x ``train.nodes``
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
that ``train.select_by`` ranks first are the result
(:func:`getdiff.training.validation.selection_key`): the highest
accessibility Pearson (default, either task), or the lowest loss; ties, and passes whose
Pearson is undefined (constant accessibility), are ranked by the loss.

Outputs in ``outdir`` (written atomically, only once training has finished):

- ``model.safetensors``: best weights (of the EMA when ``train.ema_decay`` > 0) with LoRA merged
  (:func:`getdiff.modeling.model.save_model`);
  metadata: cell_types, feature_names, train_feature_mean (per feature, over all train-split
  regions of the group), window_size, task (getdiff.modeling.task), diffusion settings, select_by,
  best_step, and the chosen pass's best_val_loss and best_val_accessibility_pearson (without
  validation windows: select_by null, the last step).
- ``adapter/``: the peft adapters of the best weights (or a README when ``use_lora`` is false).
- ``history.tsv``: one row per log or validation step (columns
  :data:`getdiff.training.model_files.HISTORY_COLUMNS`); ``best`` is 1 on the row of the
  exported step, 0 on the other validation rows.
- ``config.yaml``: the resolved configuration.

Resuming: ``outdir/checkpoints/last.pt`` (model, optimizer, scheduler, RNG states, step, history,
the best pass so far) is written every ``checkpoint_every`` steps, and ``best-<step>.pt`` (the
weights validation scored) at each new best. The best file that ``last.pt`` names is deleted only
once a later ``last.pt`` names another, so a run killed after a new best resumes with its own
best file (the later one, of a lost future, is deleted on resume). A rerun
with the same settings and inputs continues from ``last.pt`` and reaches the same weights as an
uninterrupted run (under DDP too: every rank's RNG state is saved); if the settings or inputs
differ it starts afresh (:data:`getdiff.training.settings.RESUME_NEUTRAL_KEYS` may differ: e.g. a
run may resume on another number of GPUs). Delete ``outdir/checkpoints`` to force a fresh start.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from getdiff.config import add_config_arguments, config_from_args, group_members
from getdiff.errors import ConfigError
from getdiff.io import exclusive
from getdiff.modeling.diffusion import random_masks, random_timesteps
from getdiff.modeling.lora import apply_lora, unwrap
from getdiff.modeling.model import build_model, train_step_flops
from getdiff.tensors import ACCESSIBILITY
from getdiff.training import distributed
from getdiff.training.distributed import Ranks
from getdiff.training.model_files import export
from getdiff.training.progress import Throughput, log_model, log_row, report
from getdiff.training.run import Run, prepare_run
from getdiff.training.state import (
    TrainState,
    averaged_weights,
    ema_start,
    ema_update,
    resume,
    save_checkpoint,
    save_torch,
    seed_rank,
)
from getdiff.training.validation import selection_key, validate
from getdiff.training.windows import EpochSampler

log = logging.getLogger(__name__)

MIN_LR_RATIO = 0.1  # cosine decay ends at this fraction of the peak learning rate (as nanoGPT)


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
        from getdiff.modeling.checkpoint import load_get_checkpoint

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


def training_network(
    model: torch.nn.Module, run: Run
) -> tuple[torch.nn.Module, DistributedDataParallel | None]:
    """What a step calls: ``model`` with activation checkpointing as configured, in DDP across
    ranks, compiled if asked; and the DDP wrapper (None in one process)."""
    settings = run.settings
    unwrap(model).encoder.activation_checkpointing = settings.activation_checkpointing
    ddp = None
    network = model
    if run.ranks.distributed:
        device_ids = [run.device] if run.device.type == "cuda" else None
        # Every trainable parameter (LoRA, modules_to_save, mask_token) is used in each forward.
        ddp = network = DistributedDataParallel(model, device_ids=device_ids)
    if settings.compile:
        network = torch.compile(network)
    return network, ddp


def fresh_state(run: Run) -> TrainState:
    """Seeded model (GET import and LoRA as configured), optimizer, schedule and generator."""
    settings = run.settings
    torch.manual_seed(settings.seed)  # model initialisation (and LoRA's) is seeded too
    data = run.train_data
    model = build_training_model(
        run.config, len(data.feature_names), data.window_size, len(run.cell_types)
    )
    model = model.to(run.device).train()
    seed_rank(settings.seed, run.ranks)
    network, ddp = training_network(model, run)
    optimizer = configure_optimizer(model, settings.lr, settings.weight_decay, run.device)
    schedule = lr_factor(settings.warmup_steps, settings.max_steps)
    return TrainState(
        model=model,
        network=network,
        ddp=ddp,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, schedule),
        generator=torch.Generator(device=run.device).manual_seed(settings.seed),
        loss_sum=torch.zeros((), device=run.device),
        trainable=[p for p in model.parameters() if p.requires_grad],
        flops_per_step=train_step_flops(
            unwrap(model).config, settings.batch_size, data.window_size
        ),
        ema=ema_start(model) if settings.ema_decay > 0 else None,
    )


def draw_batch(state: TrainState, run: Run, sampler: EpochSampler) -> dict[str, torch.Tensor]:
    """This rank's shard of the step's global batch, with its masks, t and noise.

    Masks, t and noise are drawn for the whole global batch on every rank (one seeded stream),
    so each sample gets the same ones whatever the number of processes.
    """
    data, settings = run.train_data, run.settings
    batch_size, device = settings.batch_size, run.device
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
    parts = micro_batches(batch, run.settings.grad_accumulation)
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
    grad_norm = torch.nn.utils.clip_grad_norm_(state.trainable, run.settings.grad_clip or math.inf)
    state.optimizer.step()
    if state.ema is not None:
        ema_update(state.ema, state.model, run.settings.ema_decay, state.step)
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
    select_by = run.settings.select_by
    with averaged_weights(state):
        scores = validate(
            state.model,
            run.diffusion,
            run.val,
            run.settings.batch_size,
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
            save_torch(
                {"step": state.step, "model": state.model.state_dict()}, run.best_path(state.step)
            )
    return scores


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
    as one rank (see :mod:`getdiff.training.distributed`); only rank 0 takes the output lock and
    writes.
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
    state = fresh_state(run)
    log_model(state, run)
    resume(state, run)
    max_steps = run.settings.max_steps
    sampler = EpochSampler(
        len(run.train_data), run.settings.batch_size, run.settings.seed, run.device
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
    final = step == settings.max_steps
    row: dict[str, float] = {}
    if step % settings.log_every == 0 or final:
        row = log_row(state, run, last, speed.rate())
        if main:
            report(row, settings.max_steps, bar, run.ranks.world_size)
    if main and (step % settings.eval_every == 0 or final):
        row.update(step=step, **validation_step(state, run))
    if row:
        state.history.append(row)
    if step % settings.checkpoint_every == 0 or final:
        save_checkpoint(state, run)
    if row or step % settings.checkpoint_every == 0:
        speed.reset()  # rates exclude evaluation and saving


# --- command line ------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> None:
    config = config_from_args(args)
    _, members = group_members(config, args.group)
    train(config, members, args.prepared_dir, args.outdir, threads=args.threads)


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
