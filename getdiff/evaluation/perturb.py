"""Named regions perturbed (``getdiff interpret --regions FILE.bed --motifs A,B``): each listed
region's predicted accessibility per cell type with the motifs and without them (removed from
the region itself, or with ``--where context`` from every other region of its window within
``interpret.context_bp``), the difference, and impute's calibrated intervals when given."""

from __future__ import annotations

import difflib
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from getdiff.defaults import DEFAULTS
from getdiff.errors import ConfigError, InputError
from getdiff.evaluation.conformal import context_scale, read_calibration
from getdiff.evaluation.inference import region_rows
from getdiff.evaluation.knockout import (
    GroupModel,
    InterpretSettings,
    Predictor,
    accessibility_units,
)
from getdiff.genomics.intervals import overlap_rows
from getdiff.genomics.peaks import read_bed_regions
from getdiff.io import atomic_path
from getdiff.tensors import ACCESSIBILITY, WindowSet, load_window_set

log = logging.getLogger(__name__)


def _motif_columns(requested: list[str], names: list[str]) -> list[int]:
    unknown = [m for m in requested if m not in names]
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
            hints.append(f"{name!r} (did you mean {', '.join(close)}?)" if close else repr(name))
        raise ConfigError(
            f"--motifs: unknown motif(s) {', '.join(hints)}; the model's {len(names)} motif "
            "features are listed in its config.yaml (feature_names)"
        )
    return [names.index(m) for m in requested]


def _locate(windows: WindowSet, regions: pd.DataFrame) -> pd.DataFrame:
    """Each listed region's overlapping peak rows, with the window that scores each row."""
    query, peak = overlap_rows(regions, windows.regions)
    window, position = region_rows(windows)
    row_window = np.full(len(windows.regions), -1)
    row_position = np.full(len(windows.regions), -1)
    row_window[windows.starts[window] + position] = window
    row_position[windows.starts[window] + position] = position
    keep = row_window[peak] >= 0
    return pd.DataFrame(
        {
            "query": query[keep],
            "row": peak[keep],
            "window": row_window[peak[keep]],
            "position": row_position[peak[keep]],
        }
    )


def perturb_regions(
    group: GroupModel,
    regions_path: str | Path,
    motifs: list[str],
    where: str,
    window_paths: dict[str, list[Path]],
    settings: InterpretSettings,
    calibration: str | Path | None,
    output: str | Path,
    interval_level: float = DEFAULTS["impute"]["interval_level"],
) -> pd.DataFrame:
    """Predicted accessibility of each listed region, per cell type, with and without ``motifs``
    (``where``: ``cis``, in the region; ``context``, in every other region of its window within
    context_bp); calibrated intervals at impute's level when ``calibration`` is given."""
    regions = read_bed_regions(regions_path)
    calibrations = None if calibration is None else read_calibration(calibration)
    rows, matched = [], np.zeros(len(regions), dtype=bool)
    for cell_type, paths in window_paths.items():
        for path in paths:
            windows = load_window_set(path)
            if len(windows) == 0:
                continue
            names = list(windows.meta["feature_names"])
            columns = _motif_columns(motifs, [n for n in names if n != ACCESSIBILITY])
            columns = [names.index(names[c]) for c in columns]
            located = _locate(windows, regions)
            if located.empty:
                continue
            matched[located["query"].to_numpy()] = True
            predictor = group.predictor(windows, path, settings)
            units = accessibility_units(windows, path)
            fit = calibrations.of(cell_type) if calibrations is not None else None
            for w, at in located.groupby("window"):
                rows.append(
                    _perturb_window(
                        predictor,
                        int(w),
                        at,
                        columns,
                        where,
                        settings,
                        (fit, interval_level),
                        units,
                    ).assign(cell_type=cell_type, split=windows.meta["split"])
                )
            window_paths[cell_type] = [path]  # a region is read from the first split holding it
            break
    n = int(matched.sum())
    if n == 0:
        raise InputError(
            regions_path,
            f"none of its {len(regions)} regions overlaps a peak of the cell types' windows "
            f"({', '.join(window_paths)}); expected intervals on the peaks' chromosomes and build",
        )
    if n < len(regions):
        log.warning(
            "%s: %d of %d regions overlap a peak; the others are left out",
            regions_path,
            n,
            len(regions),
        )
    result = pd.concat(rows, ignore_index=True)
    label = (
        regions["chrom"].astype(str)
        + ":"
        + regions["start"].astype(str)
        + "-"
        + regions["end"].astype(str)
    )
    result.insert(0, "region", label.to_numpy()[result.pop("query").to_numpy()])
    with atomic_path(Path(output)) as tmp:
        result.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    return result


def _perturb_window(
    predictor: Predictor,
    window: int,
    at: pd.DataFrame,
    columns: list[int],
    where: str,
    settings: InterpretSettings,
    interval: tuple,
    units: float,
) -> pd.DataFrame:
    """One window's listed peaks predicted with and without the motifs (one variant each)."""
    fit, level = interval
    x = predictor.windows.windows([window])[0]
    rows = predictor.windows.rows([window])[0]
    mids = predictor.midpoints[rows]
    first = predictor.masks[0].cpu().numpy()
    positions = at["position"].to_numpy()
    variants = np.repeat(x[None], len(positions), axis=0)
    instances = np.zeros(len(positions), dtype=np.int64)
    for v, p in enumerate(positions):  # one variant per listed peak (a few, not every region)
        if where == "cis":
            near = np.arange(len(mids)) == p
        else:
            near = (np.abs(mids - mids[p]) < settings.context_bp) & (np.arange(len(mids)) != p)
        instances[v] = int((variants[v][np.ix_(near, columns)] > 0).sum())
        variants[v][np.ix_(near, columns)] = 0.0
    passes = np.where(first[positions], 0, 1)
    base = predictor.baseline(window)[positions]
    knocked = predictor.predict(window, variants, passes)[np.arange(len(positions)), positions]
    result = {
        "query": at["query"].to_numpy(),
        "peak": predictor.windows.regions["name"].to_numpy()[rows[positions]],
        "instances": instances,
        "observed": x[positions, predictor.column] * units,
        "predicted": base * units,
        "perturbed": knocked * units,
        "effect": (base - knocked) * units,
    }
    if fit is not None:
        scale = context_scale(x[None, :, [predictor.column]], first)[0, positions]
        for key, values in (("predicted", base), ("perturbed", knocked)):
            low, high = fit.select([fit.features.index(ACCESSIBILITY)]).interval(
                values[:, None], scale, level
            )
            result[f"{key}_low"], result[f"{key}_high"] = low[:, 0] * units, high[:, 0] * units
    return pd.DataFrame(result)
