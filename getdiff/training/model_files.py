"""The run's outputs, written once training has finished: ``model.safetensors`` (best weights,
LoRA merged), ``adapter/``, ``history.tsv`` and ``config.yaml``, as one atomic set."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
import yaml

from getdiff import __version__
from getdiff.errors import InputError
from getdiff.io import atomic_dir, atomic_path, output_set
from getdiff.modeling.lora import merge_lora, save_adapters
from getdiff.modeling.model import save_model
from getdiff.paths import TRAIN_DIRECTORIES, TRAIN_FILES, in_folder
from getdiff.training.run import Run
from getdiff.training.state import TrainState

log = logging.getLogger(__name__)

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
            run.settings.select_by,
            best["val_loss"],
            best["val_accessibility_pearson"],
        )
    elif state.ema is not None:
        state.model.load_state_dict({**state.model.state_dict(), **state.ema})
    settings, model_settings = run.settings, run.config["model"]
    data = run.train_data
    exported_step = state.best_step if best is not None else settings.max_steps
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
        "steps": settings.max_steps,
        "select_by": settings.select_by if best is not None else None,
        "best_step": exported_step,
        "best_val_loss": _finite_or_none(best, "val_loss"),
        "best_val_accessibility_pearson": _finite_or_none(best, "val_accessibility_pearson"),
        "ema_decay": settings.ema_decay,
    }
    state.model.eval()
    # One set: the model (what the workflow waits for) is renamed in last.
    paths = in_folder(run.outdir, TRAIN_FILES)
    with output_set(paths, directories=TRAIN_DIRECTORIES) as tmp:
        _export(state.model, model_settings["use_lora"], tmp["adapter"], tmp["model"], metadata)
        write_history(state.history, tmp["history"], exported_step)
        tmp["config"].write_text(yaml.safe_dump(run.config, sort_keys=False), encoding="utf-8")
    log.info("wrote %s", run.outdir)


def _finite_or_none(row: dict[str, float] | None, key: str) -> float | None:
    value = None if row is None else row[key]
    return value if value is not None and math.isfinite(value) else None


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


def write_history(rows: list[dict[str, float]], path: Path, exported_step: int) -> None:
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
