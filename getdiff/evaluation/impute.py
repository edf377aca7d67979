"""Per-region imputation with a trained model: every region of a split, masked once, sampled.

Contract. :func:`getdiff.evaluation.inference.impute_windows` runs the diffusion sampler over all
windows of a WindowSet with two complementary masks (every window position hidden in exactly one
pass), so each row gets a prediction made without seeing its own features. Rows a user marks as
missing are hidden in both passes (they are never context). ``getdiff impute`` writes, per cell
type, one Parquet with one row per region of the configured splits (each once, from its scoring
window):

    chrom, start, end, name, region_id, split, missing,
    observed.<feature>, imputed.<feature>,
    imputed_lower.<feature>, imputed_upper.<feature>               (normalised, [0, 1] scale)
    observed_raw.<feature>, imputed_raw.<feature>,
    imputed_lower_raw.<feature>, imputed_upper_raw.<feature>       (raw units: summed motif
                                                                     scores, peak counts)

``imputed*`` columns exist for the model's predicted features only: every feature for the
``all`` task, ``accessibility`` alone for the ``accessibility`` task (motif features are then
inputs, not predictions).

``imputed_lower``/``imputed_upper`` bound the central predictive interval at
``impute.interval_level``: with that probability it holds the observed value of a held-out
region, measurement noise included. The bounds come from the model group's calibration on the
validation chromosomes (getdiff calibrate; evaluate scores their coverage on the test ones), and
the level and calibration are recorded in the file's metadata. No column reports the spread of
the sampler's draws: it is not an uncertainty (the one-step sampler's draws barely differ). Raw
units come from the scaling constants stored by the prepare stage, through the same monotone map
as the values, so a raw interval covers as its normalised one does.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from getdiff import __version__
from getdiff.config import add_config_arguments, add_model_arguments, config_from_args
from getdiff.defaults import DEFAULTS
from getdiff.devices import resolve_device
from getdiff.errors import GetdiffError, InputError
from getdiff.evaluation.conformal import (
    Calibration,
    CalibrationSet,
    context_scale,
    read_calibration,
)
from getdiff.evaluation.inference import (
    SamplerSettings,
    cell_type_index,
    check_compatible,
    impute_windows,
    is_seen,
    region_rows,
)
from getdiff.genomics.intervals import check_match_rate, overlapping
from getdiff.genomics.peaks import harmonise_chrom, read_bed_regions
from getdiff.io import atomic_path, make_directory
from getdiff.modeling.diffusion import GaussianDiffusion
from getdiff.modeling.model import load_model, model_metadata
from getdiff.modeling.task import SPEC_TASK, predicted_features, recorded_settings
from getdiff.tensors import WindowSet, load_window_set, to_raw_units, windows_file

log = logging.getLogger(__name__)


def missing_mask(
    windows: WindowSet, bed: str | Path | None, path: str | Path, chrom_naming: str = "strict"
) -> np.ndarray | None:
    """(n_regions,) bool: rows of the WindowSet (read from ``path``) overlapping any interval of
    ``bed``. Chromosome names follow ``chrom_naming`` as the motif scan's do ("1" <-> "chr1"
    renamed under "harmonise", an error under "strict"); the match rate is checked."""
    if bed is None:
        return None
    intervals = read_bed_regions(bed)
    region_chroms = set(windows.regions["chrom"])
    other = {c: harmonise_chrom(c) for c in set(intervals["chrom"]) - region_chroms}
    renamed = {c: h for c, h in other.items() if h in region_chroms}
    if renamed and chrom_naming != "harmonise":
        first = sorted(renamed)[0]
        raise InputError(
            bed,
            f"chromosome naming mismatch: {first!r} here, {renamed[first]!r} in {path}; expected "
            "the same naming (or set prepare.chrom_naming: harmonise)",
        )
    intervals = intervals.assign(chrom=intervals["chrom"].replace(renamed))
    used = overlapping(intervals, windows.regions)
    check_match_rate(int(used.sum()), len(intervals), "missing regions on windows", bed, path)
    return overlapping(windows.regions, intervals)


def imputation_table(
    windows: WindowSet,
    mean: np.ndarray,
    split: str,
    missing: np.ndarray | None,
    predicted: list[str],
    interval: tuple[Calibration, float, np.ndarray] | None = None,
) -> pd.DataFrame:
    """One row per region (see the module docstring); imputed columns for ``predicted`` only,
    with interval columns when ``interval``: the cell type's model calibration, the level, and
    the (R,) mask of the first pass (which sets each prediction's context)."""
    window, position = region_rows(windows)
    rows = windows.starts[window] + position
    names = list(windows.meta["feature_names"])
    observed = windows.features[rows]
    imputed = mean[window, position]
    regions = windows.regions.iloc[rows].reset_index(drop=True)
    columns = {
        "chrom": regions["chrom"].to_numpy(),
        "start": regions["start"].to_numpy(),
        "end": regions["end"].to_numpy(),
        "name": regions["name"].to_numpy(),
        "region_id": regions["region_id"].to_numpy(),
        "split": np.full(len(rows), split),
        "missing": missing[rows] if missing is not None else np.zeros(len(rows), dtype=bool),
    }
    blocks = {"observed": observed, "imputed": imputed}
    if interval is not None:
        fit, level, first_mask = interval
        columns_of = [names.index(f) for f in predicted]
        offsets = np.arange(windows.meta["window_size"])
        absent = None if missing is None else missing[windows.starts[:, None] + offsets]
        scale = context_scale(windows.windows()[..., columns_of], first_mask, absent)
        chosen = fit.select([fit.features.index(f) for f in predicted])
        low, high = chosen.interval(imputed[:, columns_of], scale[window, position], level)
        blocks["imputed_lower"], blocks["imputed_upper"] = imputed.copy(), imputed.copy()
        blocks["imputed_lower"][:, columns_of], blocks["imputed_upper"][:, columns_of] = low, high
    for prefix, values in list(blocks.items()):
        blocks[f"{prefix}_raw"] = to_raw_units(values, windows.meta)
    for prefix, values in blocks.items():
        shown = names if prefix.startswith("observed") else predicted
        columns.update({f"{prefix}.{name}": values[:, names.index(name)] for name in shown})
    return pd.DataFrame(columns)


def impute_cell_type(
    model_path: str | Path,
    window_paths: dict[str, Path],
    output: str | Path,
    settings: SamplerSettings,
    diffusion: GaussianDiffusion,
    device: torch.device,
    missing_regions: str | Path | None = None,
    task: dict[str, str] = SPEC_TASK,
    chrom_naming: str = "strict",
    calibration: str | Path | None = None,
    level: float = 0.9,
    unseen: str = DEFAULTS["model"]["unseen_cell_types"],
) -> pd.DataFrame:
    """Impute every region of the given splits ({split: windows parquet}) and write ``output``,
    with the intervals of ``calibration`` (getdiff calibrate) at ``level`` when given."""
    model = load_model(model_path, device=device)
    metadata = model_metadata(model_path)
    calibrations = None if calibration is None else read_calibration(calibration)
    interval_info = _interval_info(calibrations, settings, level)
    tables = []
    meta = {}
    for split, path in window_paths.items():
        windows = load_window_set(path)
        check_compatible(model, metadata, windows, path)
        if len(windows.starts) == 0:
            log.warning("%s: no windows in split %s; nothing to impute there", path, split)
            continue
        missing = missing_mask(windows, missing_regions, path, chrom_naming)
        mean, _, first_mask = impute_windows(
            model,
            diffusion,
            windows,
            settings,
            device,
            missing=missing,
            task=task,
            cell_type=cell_type_index(model, metadata, windows, path, unseen),
        )
        predicted = predicted_features(task["predict"], list(windows.meta["feature_names"]))
        interval = None
        if calibrations is not None:
            fit = calibrations.of(windows.meta["cell_type"])
            _check_calibrated(fit, predicted, level, calibrations.path)
            interval = (fit, level, first_mask)
        table = imputation_table(windows, mean, split, missing, predicted, interval)
        uncovered = len(windows.regions) - len(table)
        if uncovered:
            log.warning("%s: %d regions lie in no window and are not imputed", path, uncovered)
        log.info("%s: imputed %d regions of split %s", path, len(table), split)
        tables.append(table)
        meta = {k: windows.meta[k] for k in ("cell_type", "genome", "feature_names", "scaling")}
    if not tables:
        raise GetdiffError(f"no windows to impute in {sorted(map(str, window_paths.values()))}")
    result = pd.concat(tables, ignore_index=True)
    table = pa.Table.from_pandas(result, preserve_index=False)
    info = {
        **meta,
        "model": str(model_path),
        "task": task,
        "sampler": settings.__dict__,
        "intervals": interval_info,
        "cell_type_seen": is_seen(metadata, meta.get("cell_type", "")),
        "getdiff_version": __version__,
    }
    table = table.replace_schema_metadata({**table.schema.metadata, b"getdiff": json.dumps(info)})
    with atomic_path(output) as tmp:
        pq.write_table(table, tmp)
    return result


def _interval_info(
    calibrations: CalibrationSet | None, settings: SamplerSettings, level: float
) -> dict | None:
    """What the output's metadata says of its intervals; a sampler other than the calibrated
    one is logged (the intervals were measured around another point prediction)."""
    if calibrations is None:
        log.warning("no calibration given: no interval columns are written")
        return None
    differences = calibrations.sampler_differences(settings.__dict__)
    if differences:
        log.warning(
            "%s: intervals were calibrated with evaluate's sampler, impute's differs (%s); "
            "their coverage was measured around evaluate's predictions",
            calibrations.path,
            "; ".join(differences),
        )
    return {
        "level": level,
        "calibration": str(calibrations.path),
        "calibration_split": calibrations.meta["split"],
        "bins": calibrations.meta["bins"],
        "calibrated_sampler": calibrations.meta["sampler"],
        "sampler_differences": differences,
    }


def _check_calibrated(fit: Calibration, predicted: list[str], level: float, path: Path) -> None:
    missing = [f for f in predicted if f not in fit.features]
    if missing:
        raise InputError(
            path, f"has no calibration of feature {missing[0]!r}; rerun getdiff calibrate"
        )
    try:
        fit.level_index(level)
    except KeyError:
        raise InputError(
            path,
            f"has no interval level {level:g} (calibrated: {fit.level_names()}); rerun getdiff "
            "calibrate with --level "
            f"{level:g}",
        ) from None


def run(args: argparse.Namespace) -> None:
    config = config_from_args(args)
    torch.set_num_threads(args.threads)
    section = config["impute"]
    # An unusable output location fails now, not after the model ran.
    if Path(args.output).is_dir():
        raise InputError(args.output, "is a directory; expected the path of a file to write")
    make_directory(Path(args.output).parent)
    prepared = Path(args.prepared_dir) / args.cell_type
    paths = {split: prepared / windows_file(split) for split in section["splits"]}
    diffusion = GaussianDiffusion.from_config(config["diffusion"])
    impute_cell_type(
        args.model,
        paths,
        args.output,
        SamplerSettings.from_config(section),
        diffusion,
        resolve_device(section["device"], "impute.device"),
        missing_regions=section["missing_regions"],
        chrom_naming=config["prepare"]["chrom_naming"],
        task=recorded_settings(model_metadata(args.model), config, args.model),
        calibration=args.calibration,
        level=section["interval_level"],
        unseen=config["model"]["unseen_cell_types"],
    )
    log.info("wrote %s", args.output)


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "impute",
        help="impute every region of a cell type's splits with a trained model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(parser)
    add_model_arguments(parser, group=False)
    parser.add_argument("--cell-type", required=True)
    parser.add_argument("--output", required=True, help="Parquet file to write")
    parser.add_argument(
        "--calibration",
        help="calibration.parquet from getdiff calibrate (without it, no interval columns)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.set_defaults(func=run)
