"""Masked-prediction metrics of a trained model on held-out chromosomes, beside two baselines.

Every window of the evaluation split is sampled twice with complementary masks
(getdiff.impute.impute_windows), so each region is predicted once without seeing its own
features, and each region is scored once (the ``scored`` flags of the tiling). Metrics, as the
spec names them, are computed over all masked values (regions x features): Pearson correlation,
MSE and R^2 = 1 - SS_res / SS_tot (SS_tot around the observed mean). Also per feature (each motif
cluster, and accessibility on its own) and per cell type.

Baselines on the same masks: ``train_mean`` predicts each feature's mean over the training
regions; ``neighbour_mean`` predicts the mean of the nearest unmasked region on each side within
the window (one side at the window's edges).

Outputs: ``metrics.json`` (headline numbers), ``metrics_per_feature.tsv`` (one row per cell type
(and "all") x feature x predictor), ``plots/`` (PNG: predicted vs observed density for
accessibility and for all motifs, per-feature Pearson ranked, training curves).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from getdiff.config import add_config_arguments, config_from_args, load_cell_types, train_groups
from getdiff.diffusion import GaussianDiffusion, complementary_masks
from getdiff.errors import GetdiffError, InputError
from getdiff.impute import (
    SamplerSettings,
    check_compatible,
    impute_windows,
    region_rows,
)
from getdiff.io import atomic_dir, atomic_path
from getdiff.model import load_model, model_metadata
from getdiff.tensors import WindowSet, load_window_set
from getdiff.train import resolve_device

log = logging.getLogger(__name__)

PREDICTORS = ("model", "train_mean", "neighbour_mean")
ACCESSIBILITY = "accessibility"


def metrics(observed: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Pearson, MSE and R^2 over all values of two equally shaped arrays (float64 sums)."""
    obs = np.asarray(observed, dtype=np.float64).ravel()
    pred = np.asarray(predicted, dtype=np.float64).ravel()
    if obs.size == 0:
        return {"pearson": math.nan, "mse": math.nan, "r2": math.nan, "n": 0}
    residual = np.sum((obs - pred) ** 2)
    total = np.sum((obs - obs.mean()) ** 2)
    obs_c, pred_c = obs - obs.mean(), pred - pred.mean()
    denom = math.sqrt(np.sum(obs_c**2) * np.sum(pred_c**2))
    return {
        "pearson": float(np.sum(obs_c * pred_c) / denom) if denom > 0 else math.nan,
        "mse": float(residual / obs.size),
        "r2": float(1.0 - residual / total) if total > 0 else math.nan,
        "n": int(obs.size),
    }


def metrics_per_column(observed: np.ndarray, predicted: np.ndarray) -> dict[str, np.ndarray]:
    """Pearson, MSE, R^2 of each column of (N, F) arrays, vectorised over columns."""
    obs = observed.astype(np.float64)
    pred = predicted.astype(np.float64)
    obs_c = obs - obs.mean(axis=0)
    pred_c = pred - pred.mean(axis=0)
    residual = ((obs - pred) ** 2).sum(axis=0)
    total = (obs_c**2).sum(axis=0)
    denom = np.sqrt(total * (pred_c**2).sum(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        pearson = np.where(denom > 0, (obs_c * pred_c).sum(axis=0) / denom, np.nan)
        r2 = np.where(total > 0, 1.0 - residual / total, np.nan)
    return {"pearson": pearson, "mse": residual / max(len(obs), 1), "r2": r2}


def neighbour_indices(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each position of an (R,) mask: index of the nearest unmasked position to the left
    and to the right (-1 where there is none)."""
    size = len(mask)
    positions = np.arange(size)
    left = np.maximum.accumulate(np.where(~mask, positions, -1))
    # Left neighbour must be strictly left of the position itself.
    left = np.concatenate([[-1], left[:-1]])
    right = np.minimum.accumulate(np.where(~mask, positions, size)[::-1])[::-1]
    right = np.concatenate([right[1:], [size]])
    right = np.where(right >= size, -1, right)
    return left, right


def neighbour_mean_prediction(windows: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(n, R, F) prediction: mean of the nearest unmasked neighbours on each side of each row."""
    left, right = neighbour_indices(mask)
    has_left, has_right = left >= 0, right >= 0
    left_values = windows[:, np.maximum(left, 0)] * has_left[None, :, None]
    right_values = windows[:, np.maximum(right, 0)] * has_right[None, :, None]
    count = np.maximum(has_left.astype(np.float32) + has_right, 1.0)[None, :, None]
    return ((left_values + right_values) / count).astype(np.float32)


def _scored_predictions(
    windows: WindowSet, model_mean: np.ndarray, first_mask: np.ndarray, train_mean: np.ndarray
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Observed (N, F) and each predictor's (N, F) values for the scored regions."""
    window, position = region_rows(windows)
    observed = windows.features[windows.starts[window] + position]
    full = windows.windows()
    neighbours = np.where(
        first_mask[None, :, None],
        neighbour_mean_prediction(full, first_mask),
        neighbour_mean_prediction(full, ~first_mask),
    )
    predictions = {
        "model": model_mean[window, position],
        "train_mean": np.broadcast_to(train_mean, observed.shape),
        "neighbour_mean": neighbours[window, position],
    }
    return observed, predictions


def _summary(observed: np.ndarray, predictions: dict, accessibility: int) -> dict:
    motif_columns = [j for j in range(observed.shape[1]) if j != accessibility]
    return {
        part: {
            name: metrics(observed[:, columns], pred[:, columns])
            for name, pred in predictions.items()
        }
        for part, columns in (
            ("all_features", slice(None)),
            ("accessibility", [accessibility]),
            ("motifs", motif_columns),
        )
    }


def _per_feature_rows(
    cell_type: str, names: list[str], observed: np.ndarray, predictions: dict
) -> list[dict]:
    rows = []
    for predictor, predicted in predictions.items():
        stats = metrics_per_column(observed, np.asarray(predicted))
        for j, name in enumerate(names):
            rows.append(
                {
                    "cell_type": cell_type,
                    "feature": name,
                    "predictor": predictor,
                    "n": len(observed),
                    "pearson": stats["pearson"][j],
                    "mse": stats["mse"][j],
                    "r2": stats["r2"][j],
                }
            )
    return rows


def _json_safe(value):
    """NaN -> null so metrics.json is valid JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def evaluate_group(
    model_path: str | Path,
    window_paths: dict[str, Path],
    outdir: str | Path,
    settings: SamplerSettings,
    diffusion: GaussianDiffusion,
    device,
    history: str | Path | None = None,
    split: str = "test",
) -> dict:
    """Score ``model_path`` on the given cell types' windows; write metrics and plots to outdir."""
    model = load_model(model_path, device=device)
    meta = model_metadata(model_path)
    if "train_feature_mean" not in meta:
        raise InputError(model_path, "no 'train_feature_mean' metadata: not written by train")
    train_mean = np.asarray(meta["train_feature_mean"], dtype=np.float32)
    size = model.config.num_regions
    masks = complementary_masks(size, 0.5, settings.seed)
    first_mask = masks[0].numpy()
    observed_all, predictions_all, per_feature, per_cell_type = [], [], [], {}
    names: list[str] = []
    for cell_type, path in window_paths.items():
        windows = load_window_set(path)
        check_compatible(model, windows, path)
        if len(windows.starts) == 0:
            log.warning("%s: no %s windows for %s; skipped", path, split, cell_type)
            continue
        names = list(windows.meta["feature_names"])
        mean, _, _ = impute_windows(model, diffusion, windows, settings, device, masks=masks)
        observed, predictions = _scored_predictions(windows, mean, first_mask, train_mean)
        accessibility = names.index(ACCESSIBILITY) if ACCESSIBILITY in names else len(names) - 1
        per_cell_type[cell_type] = _summary(observed, predictions, accessibility)
        per_feature += _per_feature_rows(cell_type, names, observed, predictions)
        observed_all.append(observed)
        predictions_all.append(predictions)
        log.info(
            "%s: %d regions scored; accessibility Pearson model %.3f, train mean %.3f, "
            "neighbours %.3f",
            cell_type,
            len(observed),
            *(per_cell_type[cell_type]["accessibility"][p]["pearson"] for p in PREDICTORS),
        )
    if not observed_all:
        raise GetdiffError(
            f"no {split} windows in any of {sorted(map(str, window_paths.values()))}"
        )
    observed = np.concatenate(observed_all)
    predictions = {
        p: np.concatenate([np.asarray(pred[p]) for pred in predictions_all]) for p in PREDICTORS
    }
    result = {
        "model": str(model_path),
        "split": split,
        "sampler": settings.__dict__,
        "cell_types": list(per_cell_type),
        "n_regions": int(len(observed)),
        **_summary(observed, predictions, accessibility),
        "per_cell_type": per_cell_type,
    }
    if len(per_cell_type) > 1:
        per_feature += _per_feature_rows("all", names, observed, predictions)
    outdir = Path(outdir)
    with atomic_path(outdir / "metrics_per_feature.tsv") as tmp:
        pd.DataFrame(per_feature).to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    with atomic_dir(outdir / "plots") as tmp:
        from getdiff.plots import write_evaluation_plots

        write_evaluation_plots(tmp, observed, predictions, names, accessibility, history)
    with atomic_path(outdir / "metrics.json") as tmp:
        tmp.write_text(json.dumps(_json_safe(result), indent=2) + "\n")
    return result


def run(args: argparse.Namespace) -> None:
    config = config_from_args(args)
    torch.set_num_threads(args.threads)
    section = config["evaluate"]
    cell_types = list(load_cell_types(config["cell_types"]).index)
    members = train_groups(config, cell_types)
    if args.group not in members:
        raise GetdiffError(f"unknown group {args.group!r}; configured: {sorted(members)}")
    split = section["split"]
    paths = {
        ct: Path(args.prepared_dir) / ct / f"windows_{split}.parquet" for ct in members[args.group]
    }
    diffusion = GaussianDiffusion.from_config(config["diffusion"])
    result = evaluate_group(
        args.model,
        paths,
        args.outdir,
        SamplerSettings.from_config(section),
        diffusion,
        resolve_device(config["train"]["device"]),
        history=args.history,
        split=split,
    )
    acc = result["accessibility"]
    log.info(
        "masked accessibility Pearson: model %.3f | train mean %.3f | neighbours %.3f",
        *(acc[p]["pearson"] for p in PREDICTORS),
    )


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="masked-prediction metrics of a trained model (and baselines) on a split",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(parser)
    parser.add_argument("--group", required=True, help="model group (train.groups)")
    parser.add_argument("--model", required=True, help="model.safetensors from getdiff train")
    parser.add_argument("--history", help="history.tsv from getdiff train (training curves)")
    parser.add_argument("--prepared-dir", required=True, help="getdiff prepare output root")
    parser.add_argument("--outdir", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.set_defaults(func=run)
