"""The ``train`` section as settings, and what a checkpoint must agree on to be resumed."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

# train.* keys that do not change the trajectory: a checkpoint written under other values resumes.
RESUME_NEUTRAL_KEYS = ("log_every", "checkpoint_every", "device", "gpu_model", "groups")
# Speed and memory knobs: the trajectory is the same up to rounding (and dropout draws).
RESUME_NEUTRAL_KEYS += ("devices", "nodes", "grad_accumulation", "activation_checkpointing")
RESUME_NEUTRAL_KEYS += ("compile",)


@dataclass(frozen=True)
class TrainSettings:
    """The validated ``train`` section (defaults and meanings: the config schema). ``groups``
    and ``gpu_model`` are the workflow's, not training's."""

    batch_size: int
    lr: float
    weight_decay: float
    warmup_steps: int
    max_steps: int
    grad_clip: float
    seed: int
    device: str
    precision: str
    log_every: int
    eval_every: int
    checkpoint_every: int
    val_windows: int
    select_by: str
    ema_decay: float
    devices: int
    nodes: int
    grad_accumulation: int
    activation_checkpointing: bool
    compile: bool

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TrainSettings:
        section = config["train"]
        return cls(**{field.name: section[field.name] for field in fields(cls)})


def config_fingerprint(config: dict[str, Any], cell_types: list[str], inputs: list[Path]) -> str:
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
