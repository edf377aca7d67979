"""Data-parallel training over processes started by torchrun: ranks, devices, collectives.

Contract
--------
- ``start(device_name) -> Ranks``: this process's place among the training processes. Under
  ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) it joins the process group (NCCL on CUDA,
  gloo on the CPU) and takes device ``cuda:LOCAL_RANK`` (or the CPU); otherwise it is rank 0 of 1
  on ``resolve_device(device_name)`` and nothing is initialised. ``stop(ranks)`` leaves the group.
- ``Ranks.shard(batch_size)``: the slice of every global batch that this rank trains on: equal,
  disjoint parts in rank order (``batch_size`` must be divisible by the world size).
- ``Ranks.mean_``, ``Ranks.gather``, ``Ranks.gather_objects``, ``Ranks.barrier``: collectives that
  are no-ops (or one-element lists) in a single process, so callers need no branches.

How the processes are started (torchrun, srun) is :mod:`getdiff.training.launch`'s business.

Every rank reads the same files (windows, ``checkpoints/last.pt``), so on several nodes the
results folder must be on a shared file system, as Snakemake on a cluster needs anyway.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from getdiff.devices import resolve_device
from getdiff.errors import ConfigError

TIMEOUT = datetime.timedelta(minutes=30)  # how long a rank waits for the others in a collective


@dataclass(frozen=True)
class Ranks:
    """Rank and world size of this process, and its training device (one process: 0 of 1)."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only one that logs, validates and writes."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def backend(self) -> str | None:
        if not self.distributed:
            return None
        return "nccl" if self.device.type == "cuda" else "gloo"

    def shard(self, batch_size: int) -> slice:
        """This rank's rows of a global batch of ``batch_size`` rows."""
        if batch_size % self.world_size:
            raise ConfigError(
                f"key 'train.batch_size': {batch_size} is not divisible by the {self.world_size} "
                "training processes (train.devices x train.nodes); the batch is the global one"
            )
        size = batch_size // self.world_size
        return slice(self.rank * size, (self.rank + 1) * size)

    def mean_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Replace ``tensor`` on every rank by its mean over the ranks (in place)."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)  # gloo has no AVG
            tensor.div_(self.world_size)
        return tensor

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's ``tensor`` (same shape on each) concatenated along dim 0, in rank order."""
        if not self.distributed:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    def gather_objects(self, value: Any) -> list[Any]:
        """Every rank's picklable ``value``, in rank order."""
        if not self.distributed:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def start(device_name: str, key: str = "train.device") -> Ranks:
    """Join the process group when started by torchrun; otherwise a single process (see doc)."""
    world_size = _env_int("WORLD_SIZE", 1)
    device = resolve_device(device_name, key)
    if world_size == 1:
        return Ranks(device=device)
    local_rank = _env_int("LOCAL_RANK", 0)
    if device.type == "cuda":
        if device.index is not None:
            raise ConfigError(
                f"key '{key}': {device_name!r} pins every process to one GPU; with several "
                "processes use auto or cuda (process i of a node takes cuda:i)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    ranks = Ranks(
        device=device,
        rank=_env_int("RANK", 0),
        world_size=world_size,
        local_rank=local_rank,
        local_world_size=_env_int("LOCAL_WORLD_SIZE", 1),
    )
    dist.init_process_group(ranks.backend, timeout=TIMEOUT)
    return ranks


def stop(ranks: Ranks) -> None:
    """Leave the process group (a no-op in a single process)."""
    if ranks.distributed and dist.is_initialized():
        dist.destroy_process_group()
