"""The torch device of a stage, from its config key (``train.device``, ``evaluate.device``,
``impute.device``): ``auto`` = CUDA when present, else CPU; or ``cpu``, ``cuda``, ``cuda:N``.

Each stage has its own key, so choosing where to run inference never changes the train rule's
parameters (and never makes Snakemake retrain).
"""

from __future__ import annotations

import torch

from getdiff.errors import ConfigError


def resolve_device(name: str, key: str = "train.device") -> torch.device:
    """The device named by config key ``key``; an unusable name is a ConfigError naming the key."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"key '{key}': {name!r} is not a device name") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"key '{key}': {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"key '{key}': {name!r} requested but CUDA is not available")
    if device.type == "cuda" and device.index is not None:
        if device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"key '{key}': {name!r} requested but only {torch.cuda.device_count()} "
                "CUDA device(s) are visible"
            )
    return device
