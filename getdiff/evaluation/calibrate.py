"""Calibrate a model group's predictive intervals on the validation chromosomes.

Every predictor evaluate scores (the model with evaluate's sampler, and each baseline) predicts
the validation regions of each cell type the group's model is scored on (evaluate.cell_types) or
imputes (the group's and those whose sheet column impute_with names it), each region masked once
as in evaluate; their residuals give, per cell type, predictor and predicted feature, the binned
split-conformal bounds of getdiff.evaluation.conformal at each level of ``--level`` and of the
reliability grid. The test
chromosomes are never read. Evaluate scores the coverage of these intervals on its split, and
impute writes the model's around each imputed value, so the intervals a user reads are the ones
whose coverage was measured.

Output: ``calibration.parquet``, one row per cell type x predictor x feature x level x bin
(``predicted_low``/``predicted_high``: the bin's range of predicted values; ``residual_low``/
``residual_high``: added to a prediction in the bin for the interval's bounds; ``n``: validation
regions in the bin; ``constant_half_width``: the constant-width reference), normalised units;
the sampler, bins, levels and model in its ``getdiff`` metadata.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from getdiff.config import (
    add_config_arguments,
    add_model_arguments,
    config_from_args,
    group_members,
    imputed_cell_types,
)
from getdiff.devices import resolve_device
from getdiff.errors import GetdiffError
from getdiff.evaluation.conformal import (
    CALIBRATION_SPLIT,
    RELIABILITY_LEVELS,
    Calibration,
    write_calibration,
)
from getdiff.evaluation.evaluate import evaluated_cell_types, predict_split
from getdiff.evaluation.inference import LoadedModel, SamplerSettings
from getdiff.io import make_directory
from getdiff.tensors import ACCESSIBILITY, windows_path

log = logging.getLogger(__name__)


def calibrate_group(
    loaded: LoadedModel,
    window_paths: dict[str, Path],
    train_paths: dict[str, Path],
    output: str | Path,
    settings: SamplerSettings,
    levels: list[float],
    bins: int,
) -> dict[str, dict[str, Calibration]]:
    """Fit every predictor's intervals on each cell type's validation windows; write ``output``."""
    scored = predict_split(loaded, window_paths, train_paths, settings, CALIBRATION_SPLIT)
    levels = sorted({*levels, *RELIABILITY_LEVELS})
    fits = {
        cell_type: {
            predictor: Calibration.fit(
                regions.observed, predicted, regions.scale, regions.features, levels, bins
            )
            for predictor, predicted in regions.predictions.items()
        }
        for cell_type, regions in scored.items()
    }
    for cell_type, by_predictor in fits.items():
        fit = by_predictor["model"]
        j = fit.features.index(ACCESSIBILITY)
        i = fit.level_index(0.9)
        log.info(
            "%s: calibrated on %d %s regions; model's 90%% accessibility interval spans "
            "%.2f to %.2f context scales (by bin), constant width +/- %.3f",
            cell_type,
            len(scored[cell_type].observed),
            CALIBRATION_SPLIT,
            fit.lower[i, :, j].min(),
            fit.upper[i, :, j].max(),
            fit.half_width[i, j],
        )
    info = {
        "model": str(loaded.path),
        "split": CALIBRATION_SPLIT,
        "sampler": settings.__dict__,
        "task": loaded.task,
        "bins": bins,
        "levels": levels,
    }
    write_calibration(output, fits, info)
    return fits


def run(args: argparse.Namespace) -> None:
    config = config_from_args(args)
    level = config["impute"]["interval_level"] if args.level is None else args.level
    if not 0 < level < 1:
        raise GetdiffError(f"--level must lie between 0 and 1, got {level}")
    torch.set_num_threads(args.threads)
    sheet, members = group_members(config, args.group)
    cell_types = list(sheet.index)
    make_directory(Path(args.output).parent)
    prepared = Path(args.prepared_dir)
    # The cell types evaluate scores and those impute serves (the sheet's impute_with too).
    scored = evaluated_cell_types(config, members, cell_types)
    group = list(dict.fromkeys([*scored, *imputed_cell_types(config, sheet)[args.group]]))
    device = resolve_device(config["evaluate"]["device"], "evaluate.device")
    calibrate_group(
        LoadedModel.load(args.model, config, device),
        {ct: windows_path(prepared, ct, CALIBRATION_SPLIT) for ct in group},
        {ct: windows_path(prepared, ct, "train") for ct in group},
        args.output,
        SamplerSettings.from_config(config["evaluate"]),
        levels=[level],
        bins=config["calibrate"]["bins"],
    )
    log.info("wrote %s", args.output)


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="calibrate a model group's predictive intervals on the validation chromosomes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(parser)
    add_model_arguments(parser)
    parser.add_argument("--output", required=True, help="calibration.parquet to write")
    parser.add_argument(
        "--level",
        type=float,
        help="central interval level impute writes (default: impute.interval_level)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.set_defaults(func=run)
