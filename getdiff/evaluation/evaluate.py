"""Masked-prediction metrics of a trained model on held-out chromosomes, beside four baselines.

Every window of the evaluation split is sampled twice with complementary masks
(getdiff.evaluation.impute.impute_windows), so each region is predicted once without seeing its own
features, and each region is scored once (the ``scored`` flags of the tiling). Only the task's
predicted features are scored (``task.predict``: all features, or accessibility alone).

Scores (getdiff.evaluation.metrics), per cell type first, then pooled across cell types (labelled
so): Pearson with a 95% interval, MSE, R^2, and the within-window Pearson (both sides centred on
their window's mean, so a predictor that only gets each window's level right scores 0). Also per
feature. The baselines (getdiff.evaluation.baselines) see the same masks: ``train_mean``,
``neighbour_mean``, ``window_mean`` and ``ridge`` (fitted per cell type on its training split).

Outputs: ``metrics.json`` (``per_cell_type`` then ``pooled_across_cell_types``),
``metrics_per_feature.tsv`` (one row per cell type (and "pooled") x feature x predictor) and
``plots/`` (PNG; see getdiff.evaluation.plots).
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

from getdiff.config import (
    add_config_arguments,
    add_model_arguments,
    config_from_args,
    group_members,
)
from getdiff.defaults import DEFAULTS
from getdiff.devices import resolve_device
from getdiff.errors import ConfigError, GetdiffError, InputError
from getdiff.evaluation.baselines import Ridge, neighbour_mean_prediction, window_mean_prediction
from getdiff.evaluation.conformal import (
    CALIBRATION_SPLIT,
    CalibrationSet,
    context_scale,
    interval_scores,
    read_calibration,
)
from getdiff.evaluation.inference import (
    LoadedModel,
    SamplerSettings,
    cell_type_index,
    check_compatible,
    impute_windows,
    is_seen,
    region_rows,
)
from getdiff.evaluation.metrics import (
    ScoredRegions,
    centre_by_group,
    metrics_per_column,
    pool,
    score,
)
from getdiff.io import exclusive, make_directory, output_set
from getdiff.modeling.diffusion import complementary_masks
from getdiff.modeling.task import predicted_features
from getdiff.paths import EVALUATE_DIRECTORIES, EVALUATE_FILES, in_folder
from getdiff.tensors import ACCESSIBILITY, WindowSet, load_window_set, windows_path

log = logging.getLogger(__name__)

PREDICTORS = ("model", "train_mean", "neighbour_mean", "window_mean", "ridge")


def _both_passes(predict, windows: np.ndarray, first_mask: np.ndarray) -> np.ndarray:
    """A baseline's (n, R, F) prediction, each row from the pass that masked it."""
    return np.where(
        first_mask[None, :, None],
        predict(windows, first_mask),
        predict(windows, ~first_mask),
    )


def score_regions(
    windows: WindowSet,
    model_mean: np.ndarray,
    first_mask: np.ndarray,
    train_mean: np.ndarray,
    ridge: Ridge,
    features: list[str],
) -> ScoredRegions:
    """Observed and every predictor's values for the scored regions of one cell type."""
    names = list(windows.meta["feature_names"])
    columns = [names.index(f) for f in features]
    window, position = region_rows(windows)
    full = windows.windows()
    predicted = {
        "model": model_mean,
        "train_mean": np.broadcast_to(train_mean, full.shape),
        "neighbour_mean": _both_passes(neighbour_mean_prediction, full, first_mask),
        "window_mean": _both_passes(window_mean_prediction, full, first_mask),
        "ridge": _both_passes(ridge.predict, full, first_mask),
    }
    return ScoredRegions(
        features=features,
        observed=full[window, position][:, columns],
        predictions={p: v[window, position][:, columns] for p, v in predicted.items()},
        window=window,
        scale=context_scale(full[..., columns], first_mask)[window, position],
    )


def part_columns(features: list[str]) -> dict[str, list[int]]:
    """Scored parts -> columns of ``features``: accessibility, and motifs/all when predicted."""
    parts = {}
    if ACCESSIBILITY in features:
        parts[ACCESSIBILITY] = [features.index(ACCESSIBILITY)]
    motifs = [j for j, f in enumerate(features) if f != ACCESSIBILITY]
    if motifs:
        parts["motifs"] = motifs
        parts["all_features"] = list(range(len(features)))
    return parts


def summarise(scored: ScoredRegions) -> dict:
    """{part: {predictor: score}} for accessibility, and motifs/all features when predicted."""
    return {
        part: {
            name: score(scored.observed[:, cols], pred[:, cols], scored.window)
            for name, pred in scored.predictions.items()
        }
        for part, cols in part_columns(scored.features).items()
    }


def add_interval_scores(
    summary: dict, scored: ScoredRegions, calibrations: CalibrationSet, cell_type: str
) -> None:
    """Add each part x predictor score of one cell type's ``summary`` its ``intervals``: the
    coverage of the calibrated intervals (getdiff.evaluation.conformal.interval_scores)."""
    for part, columns in part_columns(scored.features).items():
        for predictor, predicted in scored.predictions.items():
            fit = calibrations.of(cell_type, predictor)
            chosen = fit.select([fit.features.index(scored.features[j]) for j in columns])
            summary[part][predictor]["intervals"] = interval_scores(
                scored.observed[:, columns], predicted[:, columns], scored.scale[:, columns], chosen
            )


def per_feature_rows(label: str, scored: ScoredRegions) -> list[dict]:
    """One row per feature x predictor: Pearson, within-window Pearson, MSE, R^2."""
    observed_centred = centre_by_group(scored.observed, scored.window)
    rows = []
    for predictor, predicted in scored.predictions.items():
        stats = metrics_per_column(scored.observed, predicted)
        within = metrics_per_column(observed_centred, centre_by_group(predicted, scored.window))
        for j, name in enumerate(scored.features):
            rows.append(
                {
                    "cell_type": label,
                    "feature": name,
                    "predictor": predictor,
                    "n": len(scored.observed),
                    "pearson": stats["pearson"][j],
                    "within_window_pearson": within["pearson"][j],
                    "mse": stats["mse"][j],
                    "r2": stats["r2"][j],
                }
            )
    return rows


def _json_safe(value):
    """NaN -> null so metrics.json is valid JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _log_cell_type(cell_type: str, n: int, summary: dict) -> None:
    acc = summary[ACCESSIBILITY]
    log.info(
        "%s: %d regions; masked accessibility Pearson (within-window) | %s",
        cell_type,
        n,
        " | ".join(
            f"{p} {acc[p]['pearson']:.3f} ({acc[p]['within_window_pearson']:.3f})"
            for p in PREDICTORS
        ),
    )
    model = acc["model"]["intervals"]
    log.info(
        "%s: model's intervals cover %.3f (50%%) and %.3f (90%%) of observed accessibility; "
        "90%% mean width %.3f (a constant width covering as much: %.3f)",
        cell_type,
        model["0.5"]["coverage"],
        model["0.9"]["coverage"],
        model["0.9"]["mean_width"],
        model["0.9"]["constant_width_same_coverage"],
    )


def predict_split(
    loaded: LoadedModel,
    window_paths: dict[str, Path],
    train_paths: dict[str, Path],
    settings: SamplerSettings,
    split: str,
) -> dict[str, ScoredRegions]:
    """Every predictor's values for the scored regions of each cell type's ``split`` windows.

    ``train_paths`` are the cell types' training windows, on which the ridge baseline is fitted
    (for a cell type the model never saw too: the ridge then saw data the model did not).
    Cell types without windows in the split are skipped (with a warning); one the model never
    saw is served as ``loaded.unseen`` says (see getdiff.evaluation.inference.cell_type_index).
    """
    model, meta, task, model_path = loaded.model, loaded.meta, loaded.task, loaded.path
    if "train_feature_mean" not in meta:
        raise InputError(model_path, "no 'train_feature_mean' metadata: not written by train")
    train_mean = np.asarray(meta["train_feature_mean"], dtype=np.float32)
    masks = complementary_masks(model.config.num_regions, seed=settings.seed)
    first_mask = masks[0].numpy()
    scored = {}
    for cell_type, path in window_paths.items():
        windows = load_window_set(path)
        check_compatible(model, meta, windows, path)
        if len(windows.starts) == 0:
            log.warning("%s: no %s windows for %s; skipped", path, split, cell_type)
            continue
        names = list(windows.meta["feature_names"])
        features = predicted_features(task["predict"], names)
        training = load_window_set(train_paths[cell_type])
        check_compatible(model, meta, training, train_paths[cell_type])
        targets = np.array([names.index(f) for f in features])
        own_motifs = task["predict"] == ACCESSIBILITY
        ridge = Ridge(targets, own_motifs=own_motifs).fit(training, first_mask)
        mean, _, _ = impute_windows(
            model,
            loaded.diffusion,
            windows,
            settings,
            loaded.device,
            masks=masks,
            task=task,
            cell_type=cell_type_index(model, meta, windows, path, loaded.unseen),
        )
        scored[cell_type] = score_regions(windows, mean, first_mask, train_mean, ridge, features)
    if not scored:
        raise GetdiffError(
            f"no {split} windows in any of {sorted(map(str, window_paths.values()))}"
        )
    return scored


def evaluate_group(
    loaded: LoadedModel,
    window_paths: dict[str, Path],
    train_paths: dict[str, Path],
    outdir: str | Path,
    settings: SamplerSettings,
    calibration: str | Path,
    history: str | Path | None = None,
    split: str = DEFAULTS["evaluate"]["split"],
) -> dict:
    """Score the model on each cell type's windows; write metrics and plots to outdir.

    ``calibration`` is the group's calibration.parquet (getdiff calibrate): the intervals whose
    coverage is scored are built from it, as impute builds them.
    """
    model_path, meta, task = loaded.path, loaded.meta, loaded.task
    calibrations = read_calibration(calibration)
    differences = calibrations.sampler_differences(settings.__dict__)
    if differences:
        raise InputError(
            calibration,
            "was calibrated with other sampler settings than evaluate's ("
            + "; ".join(differences)
            + "): its intervals belong to another point prediction; rerun getdiff calibrate",
        )
    scored = predict_split(loaded, window_paths, train_paths, settings, split)
    per_cell_type = {}
    for cell_type, regions in scored.items():
        per_cell_type[cell_type] = summarise(regions)
        add_interval_scores(per_cell_type[cell_type], regions, calibrations, cell_type)
        _log_cell_type(cell_type, len(regions.observed), per_cell_type[cell_type])
    if split == CALIBRATION_SPLIT:
        log.warning(
            "evaluate.split is %s, the split the intervals were calibrated on: their coverage "
            "here is in-sample, not a test of them",
            split,
        )
    pooled = pool(list(scored.values()))
    result = {
        "model": str(model_path),
        "split": split,
        "task": task,
        "sampler": settings.__dict__,
        "intervals": {"calibration": str(calibration), "calibration_split": CALIBRATION_SPLIT},
        "cell_types": list(per_cell_type),
        "n_regions": {ct: int(len(s.observed)) for ct, s in scored.items()},
        # false: a cell type the model was not trained on (leave-cell-type-out evaluation)
        "seen": {ct: is_seen(meta, ct) for ct in scored},
        "per_cell_type": per_cell_type,
        "pooled_across_cell_types": summarise(pooled),
    }
    rows = [row for ct, s in scored.items() for row in per_feature_rows(ct, s)]
    if len(scored) > 1:
        rows += per_feature_rows("pooled", pooled)
    _write_outputs(Path(outdir), result, rows, scored, history)
    return result


def _write_outputs(
    outdir: Path, result: dict, rows: list[dict], scored: dict, history: str | Path | None
) -> None:
    """Write every output aside first, then rename them in, metrics.json (the marker) last."""
    from getdiff.evaluation.plots import write_evaluation_plots

    with exclusive(outdir, "evaluate"):
        paths = in_folder(outdir, EVALUATE_FILES)
        with output_set(paths, directories=EVALUATE_DIRECTORIES) as tmp:
            intervals = {
                cell_type: {p: v["intervals"] for p, v in summary[ACCESSIBILITY].items()}
                for cell_type, summary in result["per_cell_type"].items()
            }
            write_evaluation_plots(tmp["plots"], scored, history, intervals)
            table = pd.DataFrame(rows)
            table.to_csv(tmp["per_feature"], sep="\t", index=False, float_format="%.6g")
            tmp["metrics"].write_text(json.dumps(_json_safe(result), indent=2) + "\n")


def evaluated_cell_types(
    config: dict, group_members: list[str], sheet_cell_types: list[str]
) -> list[str]:
    """evaluate.cell_types (any cell types of the sheet), or the group's when it is null."""
    chosen = config["evaluate"]["cell_types"]
    if chosen is None:
        return list(group_members)
    unknown = [ct for ct in chosen if ct not in sheet_cell_types]
    if unknown:
        raise ConfigError(
            f"key 'evaluate.cell_types': {unknown[0]!r} is not in the cell-type sheet "
            f"({', '.join(sheet_cell_types)})"
        )
    return list(dict.fromkeys(chosen))


def run(args: argparse.Namespace) -> None:
    config = config_from_args(args)
    torch.set_num_threads(args.threads)
    section = config["evaluate"]
    sheet, members = group_members(config, args.group)
    cell_types = list(sheet.index)
    split = section["split"]
    evaluated = evaluated_cell_types(config, members, cell_types)
    make_directory(args.outdir)  # an unusable output location fails now, not after the model ran
    if args.history is not None and Path(args.history).exists():
        from getdiff.evaluation.plots import (
            read_history,  # matplotlib: calibrate imports this module too
        )

        read_history(args.history)  # as does a history that cannot be plotted
    prepared = Path(args.prepared_dir)
    paths = {ct: windows_path(prepared, ct, split) for ct in evaluated}
    train_paths = {ct: windows_path(prepared, ct, "train") for ct in evaluated}
    device = resolve_device(section["device"], "evaluate.device")
    result = evaluate_group(
        LoadedModel.load(args.model, config, device),
        paths,
        train_paths,
        args.outdir,
        SamplerSettings.from_config(section),
        args.calibration,
        history=args.history,
        split=split,
    )
    acc = result["pooled_across_cell_types"][ACCESSIBILITY]
    log.info(
        "pooled across cell types (per-cell-type lines above are the result): masked "
        "accessibility Pearson %s",
        " | ".join(f"{p} {acc[p]['pearson']:.3f}" for p in PREDICTORS),
    )


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="masked-prediction metrics of a trained model (and baselines) on a split",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(parser)
    add_model_arguments(parser)
    parser.add_argument(
        "--calibration", required=True, help="calibration.parquet from getdiff calibrate"
    )
    parser.add_argument("--history", help="history.tsv from getdiff train (training curves)")
    parser.add_argument("--outdir", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.set_defaults(func=run)
