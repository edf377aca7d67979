"""What a run says while it trains: the log rows of the history (loss, Pearson, speed), the
progress line, and the model and devices it runs on."""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import torch
from tqdm import tqdm

from getdiff.modeling.model import count_parameters
from getdiff.training.run import Run
from getdiff.training.state import TrainState
from getdiff.training.validation import masked_pearson

log = logging.getLogger(__name__)


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
    tokens_per_step = run.settings.batch_size * run.train_data.window_size  # global batch
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


def log_model(state: TrainState, run: Run) -> None:
    trainable, total = count_parameters(state.model)
    data, ranks, settings = run.train_data, run.ranks, run.settings
    knobs = [
        f"{settings.grad_accumulation} micro-batches" if settings.grad_accumulation > 1 else "",
        "activation checkpointing" if settings.activation_checkpointing else "",
        "torch.compile" if settings.compile else "",
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
    asked = settings.devices * settings.nodes
    if asked != ranks.world_size:
        log.warning(
            "train.devices x train.nodes is %d but %d process(es) run: the workflow's train rule "
            "starts torchrun; to run getdiff train by hand on %d, use `torchrun --nproc-per-node "
            "N -m getdiff train ...`",
            asked,
            ranks.world_size,
            asked,
        )
