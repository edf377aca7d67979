"""What a model predicts: the ``task.predict`` setting, shared by train, evaluate and impute.

- ``all`` (the spec's task, default): a masked region hides every feature; the model predicts
  all of them and every feature is scored.
- ``accessibility``: a masked region hides only its accessibility. Its motif features, which
  come from DNA sequence and are known for every peak, stay clean inputs. Only accessibility is
  noised, predicted, put in the loss and scored (GET's premise: accessibility from motifs in
  context).

``task.scaling``: ``none`` (the spec's) feeds values as they are; ``window`` standardises the
accessibility column of each window by its unmasked rows' mean and standard deviation (see
getdiff.modeling.diffusion.Target), so a cell type with low or narrow accessibility weighs as much
as any other, and the model predicts each region relative to its window. Motif columns are never
scaled: they are sparse, and a window's standard deviation of a rare motif is near 0.

The model file records its task and diffusion sections (metadata keys ``task``, ``diffusion``);
calibrate, evaluate and impute follow them and refuse a config that asks for others
(:func:`recorded_settings`, the one check every command that loads a model runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from getdiff.defaults import DEFAULTS
from getdiff.errors import ConfigError
from getdiff.modeling.diffusion import Target
from getdiff.tensors import ACCESSIBILITY

TASKS = ("all", "accessibility")
# The spec's task is the schema's default task: section; a model file that records no task
# (written by hand, or by getdiff before it recorded one) is served as it.
SPEC_TASK = dict(DEFAULTS["task"])


def predicted_features(task: str, feature_names: list[str]) -> list[str]:
    """The features a model of this task predicts and is scored on, in feature order."""
    if task not in TASKS:
        raise ConfigError(f"key 'task.predict': {task!r} is unknown; choose one of {TASKS}")
    if task == "all":
        return list(feature_names)
    if ACCESSIBILITY not in feature_names:
        raise ConfigError(
            f"task.predict is 'accessibility' but the features have no {ACCESSIBILITY!r} column"
        )
    return [ACCESSIBILITY]


def predicted_columns(task: str, feature_names: list[str]) -> torch.Tensor | None:
    """(F,) bool mask of predicted columns for the diffusion module; None = all (no masking)."""
    if task == "all":
        return None
    predicted = set(predicted_features(task, feature_names))
    return torch.tensor([name in predicted for name in feature_names])


def target(task: dict[str, str], feature_names: list[str]) -> Target:
    """The diffusion module's view of a task section: predicted columns and scaling."""
    scaled = None
    if task["scaling"] == "window":
        if ACCESSIBILITY not in feature_names:
            raise ConfigError(
                f"task.scaling is 'window' but the features have no {ACCESSIBILITY!r} column"
            )
        scaled = torch.tensor([name == ACCESSIBILITY for name in feature_names])
    return Target(columns=predicted_columns(task["predict"], feature_names), scaled=scaled)


def model_task(
    metadata: dict[str, Any], config: dict[str, Any], model_path: str | Path
) -> dict[str, str]:
    """The model's task section; a config asking for another one is an error naming both."""
    task = {**SPEC_TASK, **metadata.get("task", {})}
    for key, value in task.items():
        wanted = config["task"][key]
        if wanted != value:
            raise ConfigError(
                f"key 'task.{key}' is {wanted!r} but {model_path} was trained with "
                f"task.{key}: {value}; set task.{key}: {value} (or retrain)"
            )
    return task


# The diffusion keys a model's predictions depend on (mask_ratio is the training masks' share).
RECORDED_DIFFUSION_KEYS = ("num_timesteps", "beta_start", "beta_end")


def recorded_settings(
    metadata: dict[str, Any], config: dict[str, Any], model_path: str | Path
) -> dict[str, str]:
    """Check a config against what the model recorded at training: its task (see
    :func:`model_task`) and its diffusion schedule. Returns the model's task section; a
    difference is an error naming the key, both values and the fix."""
    task = model_task(metadata, config, model_path)
    trained = metadata.get("diffusion", {})  # getdiff train records it; hand-made files may not
    for key in RECORDED_DIFFUSION_KEYS:
        wanted = config["diffusion"][key]
        if key in trained and wanted != trained[key]:
            raise ConfigError(
                f"key 'diffusion.{key}' is {wanted!r} but {model_path} was trained with "
                f"diffusion.{key}: {trained[key]}; set diffusion.{key}: {trained[key]} (or retrain)"
            )
    return task
