"""What a training step changes (:class:`TrainState`), its checkpoint (every rank's RNG states
included, for exact resume), the moving average of the weights, and the best files."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from getdiff.errors import InputError
from getdiff.io import atomic_path
from getdiff.paths import CHECKPOINTS_DIR
from getdiff.training.distributed import Ranks
from getdiff.training.run import Run

log = logging.getLogger(__name__)


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
    flops_per_step: float  # model FLOPs of one step (getdiff.modeling.model.train_step_flops)
    step: int = 0
    interval_steps: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float] | None = None  # the validation row of the best pass so far
    ema: dict[str, torch.Tensor] | None = None  # train.ema_decay > 0: the averaged weights

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
            "rng": rng_states(self.generator, ranks),
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
        set_rng_states(checkpoint["rng"], self.generator, ranks, seed)
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
            state.restore(checkpoint, run.ranks, run.settings.seed)
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


def save_checkpoint(state: TrainState, run: Run) -> None:
    """Write ``last.pt``, then drop the best files it no longer names (rank 0; every rank takes
    part in gathering the RNG states)."""
    checkpoint = state.to_checkpoint(run.fingerprint, run.ranks)
    if run.ranks.is_main:
        save_torch(checkpoint, run.last_path)
        prune_best(state, run)


def save_torch(state: dict[str, Any], path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def rng_states(generator: torch.Generator, ranks: Ranks) -> dict[str, Any]:
    """RNG states: the data generator's (the same on every rank), and torch's global generator
    (dropout) of rank 0 and, under DDP, of every rank in ``ranks``."""
    states = {"torch": torch.get_rng_state(), "data": generator.get_state()}
    if ranks.device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(ranks.device)
    if ranks.distributed:
        states["ranks"] = ranks.gather_objects(global_rng_state(ranks.device))
    return states


def global_rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_states(
    states: dict[str, Any], generator: torch.Generator, ranks: Ranks, seed: int
) -> None:
    """Restore :func:`rng_states` on this rank.

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
        seed_rank(seed, ranks)
        return
    torch.set_rng_state(state["torch"])
    if ranks.device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], ranks.device)


def seed_rank(seed: int, ranks: Ranks) -> None:
    """Give ranks other than 0 their own dropout stream (rank 0 keeps the single-process one)."""
    if ranks.rank > 0:
        torch.manual_seed(int(np.random.SeedSequence([seed, ranks.rank]).generate_state(1)[0]))
