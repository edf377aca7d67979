"""Per-region imputation with a trained model: every region of a split, masked once, sampled.

Contract. ``impute_windows`` runs the diffusion sampler over all windows of a WindowSet with two
complementary masks (every window position hidden in exactly one pass), so each row gets a
prediction made without seeing its own features. Rows a user marks as missing are hidden in
both passes (they are never context). ``getdiff impute`` writes, per cell type, one Parquet with
one row per region of the configured splits (each region once, from its scoring window):

    chrom, start, end, name, region_id, split, missing,
    observed.<feature>, imputed.<feature>, imputed_std.<feature>   (normalised, [0, 1] scale)
    observed_raw.<feature>, imputed_raw.<feature>                   (raw units: summed motif
                                                                     scores, peak counts)

``imputed*`` columns exist for the model's predicted features only: every feature for the
``all`` task, ``accessibility`` alone for the ``accessibility`` task (motif features are then
inputs, not predictions).

``imputed_std`` is the standard deviation over ``num_samples`` draws (0 for one draw), in
normalised units. Raw units come from the scaling constants stored by the prepare stage.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from getdiff import __version__
from getdiff.config import add_config_arguments, config_from_args
from getdiff.devices import resolve_device
from getdiff.diffusion import GaussianDiffusion, complementary_masks
from getdiff.errors import GetdiffError, InputError
from getdiff.intervals import check_match_rate, overlapping
from getdiff.io import atomic_path
from getdiff.model import load_model, model_metadata
from getdiff.peaks import harmonise_chrom, read_bed_regions
from getdiff.task import SPEC_TASK, model_task, predicted_features, target
from getdiff.tensors import WindowSet, load_window_set, region_midpoints, to_raw_units

log = logging.getLogger(__name__)


@dataclass
class SamplerSettings:
    """How masked rows are drawn: ``one-step`` or ``ddim`` (``steps``, ``eta``), ``num_samples``."""

    method: str = "one-step"
    steps: int = 50
    eta: float = 0.0
    num_samples: int = 1
    seed: int = 0
    batch_size: int = 8

    @classmethod
    def from_config(cls, section: dict) -> SamplerSettings:
        return cls(
            method=section["sampler"],
            steps=section["ddim_steps"],
            eta=section["eta"],
            num_samples=section.get("num_samples", 1),
            seed=section["seed"],
            batch_size=section["batch_size"],
        )


def check_compatible(
    model: torch.nn.Module, metadata: dict, windows: WindowSet, path: str | Path
) -> None:
    """The model must have been trained on this window size and these features, in this order."""
    config = model.config
    names = list(windows.meta["feature_names"])
    if len(names) != config.num_motif:
        raise InputError(
            path, f"has {len(names)} features per region but the model expects {config.num_motif}"
        )
    trained = list(metadata.get("feature_names", names))
    if trained != names:
        j = next(j for j, (a, b) in enumerate(zip(trained, names, strict=True)) if a != b)
        raise InputError(
            path,
            f"feature {j + 1} is {names[j]!r} but the model was trained with {trained[j]!r} there; "
            "windows must have the model's features in the model's order",
        )
    if windows.meta["window_size"] != config.num_regions:
        raise InputError(
            path,
            f"has windows of {windows.meta['window_size']} regions but the model expects "
            f"{config.num_regions}",
        )


def impute_windows(
    model: torch.nn.Module,
    diffusion: GaussianDiffusion,
    windows: WindowSet,
    settings: SamplerSettings,
    device: torch.device,
    masks: tuple[torch.Tensor, torch.Tensor] | None = None,
    missing: np.ndarray | None = None,
    task: dict[str, str] = SPEC_TASK,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predict every window position from the pass that hid it.

    Returns (mean, std, hidden): mean/std (n_windows, R, F) float32, and the (R,) bool mask of
    the first pass (positions where it is False were predicted in the second pass). ``missing``
    is an optional (n_regions,) bool over the WindowSet's rows, hidden in both passes. With the
    ``accessibility`` task only that column is predicted; the others come back as observed.
    """
    what = target(task, list(windows.meta["feature_names"]))
    midpoints = region_midpoints(windows.regions)
    size = windows.meta["window_size"]
    first, second = masks if masks is not None else complementary_masks(size, 0.5, settings.seed)
    n = len(windows.starts)
    features = windows.features
    mean = np.empty((n, size, features.shape[1]), dtype=np.float32)
    std = np.empty_like(mean)
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    offsets = np.arange(size)
    started, done = time.monotonic(), 0
    for lo in range(0, n, settings.batch_size):
        index = np.arange(lo, min(lo + settings.batch_size, n))
        rows = windows.starts[index, None] + offsets
        x = torch.from_numpy(features[rows]).to(device)
        positions = torch.from_numpy(midpoints[rows]).to(device)
        hidden_missing = (
            torch.from_numpy(missing[rows]).to(device)
            if missing is not None
            else torch.zeros(x.shape[:2], dtype=torch.bool, device=device)
        )
        result_mean = torch.empty_like(x)
        result_std = torch.empty_like(x)
        for pass_mask in (first, second):
            mask = pass_mask.to(device).expand(len(index), -1) | hidden_missing
            pass_mean, pass_std = diffusion.sample(
                model,
                x,
                mask,
                method=settings.method,
                steps=settings.steps,
                eta=settings.eta,
                num_samples=settings.num_samples,
                generator=generator,
                positions=positions,
                target=what,
            )
            own = pass_mask.to(device).view(1, -1, 1)
            result_mean = torch.where(own, pass_mean, result_mean)
            result_std = torch.where(own, pass_std, result_std)
        mean[index] = result_mean.float().cpu().numpy()
        std[index] = result_std.float().cpu().numpy()
        done += len(index)
        if done == n or (lo // settings.batch_size) % 20 == 0:
            rate = done / max(time.monotonic() - started, 1e-9)
            log.info("imputed %d/%d windows (%.1f windows/s)", done, n, rate)
    return mean, std, first.cpu().numpy()


def region_rows(windows: WindowSet) -> tuple[np.ndarray, np.ndarray]:
    """(window, position) of each scored row, first scoring occurrence of each region only.

    Validation/test tiles score each region once; overlapping train windows score a region in
    several windows, and the first one is kept.
    """
    window, position = np.nonzero(windows.scored)
    rows = windows.starts[window] + position
    _, first = np.unique(rows, return_index=True)
    return window[first], position[first]


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
    std: np.ndarray,
    split: str,
    missing: np.ndarray | None,
    predicted: list[str],
) -> pd.DataFrame:
    """One row per region (see the module docstring); imputed columns for ``predicted`` only."""
    window, position = region_rows(windows)
    rows = windows.starts[window] + position
    names = list(windows.meta["feature_names"])
    observed = windows.features[rows]
    imputed = mean[window, position]
    spread = std[window, position]
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
    blocks = {
        "observed": observed,
        "imputed": imputed,
        "imputed_std": spread,
        "observed_raw": to_raw_units(observed, windows.meta),
        "imputed_raw": to_raw_units(imputed, windows.meta),
    }
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
) -> pd.DataFrame:
    """Impute every region of the given splits ({split: windows parquet}) and write ``output``."""
    model = load_model(model_path, device=device)
    metadata = model_metadata(model_path)
    tables = []
    meta = {}
    for split, path in window_paths.items():
        windows = load_window_set(path)
        check_compatible(model, metadata, windows, path)
        if len(windows.starts) == 0:
            log.warning("%s: no windows in split %s; nothing to impute there", path, split)
            continue
        missing = missing_mask(windows, missing_regions, path, chrom_naming)
        mean, std, _ = impute_windows(
            model, diffusion, windows, settings, device, missing=missing, task=task
        )
        predicted = predicted_features(task["predict"], list(windows.meta["feature_names"]))
        table = imputation_table(windows, mean, std, split, missing, predicted)
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
        "getdiff_version": __version__,
    }
    table = table.replace_schema_metadata({**table.schema.metadata, b"getdiff": json.dumps(info)})
    with atomic_path(output) as tmp:
        pq.write_table(table, tmp)
    return result


def run(args: argparse.Namespace) -> None:
    config = config_from_args(args)
    torch.set_num_threads(args.threads)
    section = config["impute"]
    prepared = Path(args.prepared_dir) / args.cell_type
    paths = {split: prepared / f"windows_{split}.parquet" for split in section["splits"]}
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
        task=model_task(model_metadata(args.model), config, args.model),
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
    parser.add_argument("--model", required=True, help="model.safetensors from getdiff train")
    parser.add_argument("--cell-type", required=True)
    parser.add_argument("--prepared-dir", required=True, help="getdiff prepare output root")
    parser.add_argument("--output", required=True, help="Parquet file to write")
    parser.add_argument("--threads", type=int, default=1)
    parser.set_defaults(func=run)
