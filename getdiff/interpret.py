"""Which motifs open chromatin in which cell type, in the region and from its neighbours.

``getdiff interpret`` knocks motifs out of the windows of ``interpret.split`` (default: test) and
reads the change in the model's predicted accessibility, for every cell type of a model group
and every motif feature (the accessibility task only: the knocked-out motifs must be inputs of
the predicted regions). Each region is predicted as evaluate predicts it: hidden by the one of
evaluate's two complementary masks that hides it, from the one-step sampler's x0 prediction.
Every variant of a window starts from the same noise, so a difference is the knock-out's alone.

Designs (``interpret.designs``): in each, every region carrying the motif (feature > 0) loses it
(feature set to 0) with probability 1/2, independently; each design is read out under one of the
two masks in turn. Per motif and cell type, a least-squares fit over the regions x designs of

    drop of region i = a + cis x [i lost the motif] + sum_b per_instance_b x (instances lost
                       at a distance in band b of i) + far x (instances lost beyond the bands)

separates the region's own motif from its neighbours' (random designs make the two terms
independent). An effect is the prediction with the motif minus the prediction without it
(positive: the motif opens chromatin), in log10(CPM + 1) units of predicted accessibility (the
model's [0, 1] accessibility times the cell type's max log10 CPM, so comparable across cell
types):

- ``cis_effect``: the mean effect on a region carrying the motif of its own instance (the
  motif removed from that region alone), over the ``n_regions`` carriers;
- ``context_effect``: the mean effect on a region of the motif in every other region of its
  window within ``interpret.context_bp`` (removed there, the region's own features untouched):
  sum over the bands of per_instance_b x the region's instances in band b, averaged over the
  ``n_context`` regions with at least one instance within reach (it grows with the motif's
  frequency; ``context_per_instance``, the same per instance within reach, does not);
- per band (``context_by_distance.tsv``): the same restricted to the band (``effect``) and the
  change per instance (``per_instance``), a decay curve;
- ``differential_*``: a cell type's effect minus the mean over the group's cell types;
- ``*_low``/``*_high``: the central ``interpret.level`` bootstrap interval over regions
  (``interpret.bootstrap`` resamples, seeded), the fit redone on each resample.

``--regions FILE.bed --motifs A,B [--where cis|context]`` instead predicts each listed region
per cell type with the motifs (``predicted``) and without them (``perturbed``: removed from the
region itself, or from every other region of its window within context_bp), ``effect`` the
difference, with the calibrated intervals of impute when ``--calibration`` is given.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from getdiff.config import add_config_arguments, config_from_args, load_cell_types, train_groups
from getdiff.conformal import context_scale, read_calibration
from getdiff.defaults import DEFAULTS
from getdiff.devices import resolve_device
from getdiff.diffusion import GaussianDiffusion, complementary_masks
from getdiff.errors import ConfigError, GetdiffError, InputError
from getdiff.inference import cell_type_index, check_compatible, region_rows
from getdiff.intervals import overlap_rows
from getdiff.io import atomic_path, make_directory, output_set
from getdiff.model import load_model, model_metadata
from getdiff.peaks import read_bed_regions
from getdiff.task import recorded_settings, target
from getdiff.tensors import (
    ACCESSIBILITY,
    WindowSet,
    load_window_set,
    region_midpoints,
    windows_path,
)

log = logging.getLogger(__name__)

EFFECTS_FILE = "motif_effects.tsv"
DISTANCE_FILE = "context_by_distance.tsv"
UNITS = "log10(CPM + 1) of predicted accessibility"


@dataclass(frozen=True)
class InterpretSettings:
    """The ``interpret`` section (defaults in the config schema) plus evaluate's mask seed."""

    split: str
    context_bp: int
    distance_bands: tuple[tuple[int, int], ...]
    designs: int
    bootstrap: int
    level: float
    seed: int
    batch_size: int
    mask_seed: int

    @classmethod
    def from_config(cls, config: dict) -> InterpretSettings:
        section = config["interpret"]
        bands = tuple((int(lo), int(hi)) for lo, hi in section["distance_bands"])
        return cls(
            split=section["split"],
            context_bp=int(section["context_bp"]),
            distance_bands=bands,
            designs=int(section["designs"]),
            bootstrap=int(section["bootstrap"]),
            level=float(section["level"]),
            seed=int(section["seed"]),
            batch_size=int(section["batch_size"]),
            mask_seed=int(config["evaluate"]["seed"]),
        )

    def band_names(self) -> list[str]:
        return [f"{lo // 1000}-{hi // 1000}kb" for lo, hi in self.distance_bands]


@dataclass
class Predictor:
    """One cell type's windows under the model: accessibility predicted for batches of variants
    of one window, each region read from the evaluate mask that hides it, common noise."""

    model: torch.nn.Module
    diffusion: GaussianDiffusion
    windows: WindowSet
    masks: tuple[torch.Tensor, torch.Tensor]
    cell_type: int | None
    task: dict[str, str]
    device: torch.device
    batch_size: int
    seed: int

    def __post_init__(self) -> None:
        names = list(self.windows.meta["feature_names"])
        self.what = target(self.task, names)
        self.column = names.index(ACCESSIBILITY)
        self.midpoints = region_midpoints(self.windows.regions)

    def noise(self, window: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + window)
        shape = (self.windows.window_size, self.windows.features.shape[1])
        return torch.randn(shape, generator=generator).to(self.device)

    def predict(self, window: int, variants: np.ndarray, passes: np.ndarray) -> np.ndarray:
        """(V, R) predicted accessibility of ``variants`` (V, R, F) of window ``window``, variant
        v read under mask ``passes[v]`` (0: evaluate's first, 1: its second) at every row."""
        rows = self.windows.rows([window])[0]
        positions = torch.from_numpy(self.midpoints[rows]).to(self.device)
        noise = self.noise(window)
        out = np.empty(variants.shape[:2], dtype=np.float32)
        for lo in range(0, len(variants), self.batch_size):
            part = slice(lo, lo + self.batch_size)
            x = torch.from_numpy(variants[part]).to(self.device)
            which = torch.from_numpy(passes[part]).to(self.device)
            mask = torch.where(which[:, None] == 0, self.masks[0], self.masks[1])
            label = None
            if self.cell_type is not None:
                label = torch.full((len(x),), self.cell_type, device=self.device)
            with torch.inference_mode():
                mean, _ = self.diffusion.sample(
                    self.model,
                    x,
                    mask.to(self.device),
                    positions=positions.expand(len(x), -1),
                    target=self.what,
                    cell_type=label,
                    noise=noise,
                )
            out[part] = mean[..., self.column].float().cpu().numpy()
        return out

    def baseline(self, window: int) -> np.ndarray:
        """(R,) every row predicted from the pass that hides it (evaluate's prediction)."""
        x = self.windows.windows([window])[0]
        both = self.predict(window, np.stack([x, x]), np.array([0, 1]))
        return np.where(self.masks[0].cpu().numpy(), both[0], both[1])

    def hidden(self, passes: np.ndarray) -> np.ndarray:
        """(V, R) bool: the rows predicted (hidden) under each variant's mask."""
        first = self.masks[0].cpu().numpy()
        return np.where(np.asarray(passes)[:, None] == 0, first[None, :], ~first[None, :])


def _band_matrices(midpoints: np.ndarray, settings: InterpretSettings) -> np.ndarray:
    """(B + 1, R, R) float32: 1 where region j lies in band b of region i (j != i); the last
    matrix is every other region beyond the bands."""
    distance = np.abs(midpoints[:, None] - midpoints[None, :])
    other = ~np.eye(len(midpoints), dtype=bool)
    bands = [(distance >= lo) & (distance < hi) & other for lo, hi in settings.distance_bands]
    bands.append((distance >= settings.distance_bands[-1][1]) & other)
    return np.stack(bands).astype(np.float32)


@dataclass
class Design:
    """Per motif, the sufficient statistics of the knock-out fit, per scored region."""

    xtx: np.ndarray  # (n_regions, M, P, P)
    xty: np.ndarray  # (n_regions, M, P)
    carriers: np.ndarray  # (n_regions, M) bool: the region has the motif
    instances: np.ndarray  # (n_regions, M, B) the motif's instances in each band of the region


def _window_design(
    predictor: Predictor,
    window: int,
    motifs: np.ndarray,
    settings: InterpretSettings,
    rng: np.random.Generator,
) -> Design:
    """Knock-out designs of one window: predict them, and return the fit's statistics of the
    window's scored regions."""
    x = predictor.windows.windows([window])[0]
    size, n_motifs = x.shape[0], len(motifs)
    carriers = x[:, motifs] > 0  # (R, M)
    bands = _band_matrices(predictor.midpoints[predictor.windows.rows([window])[0]], settings)
    base = predictor.baseline(window)
    n_terms = 2 + len(bands)  # intercept, cis, bands..., far
    xtx = np.zeros((size, n_motifs, n_terms, n_terms))
    xty = np.zeros((size, n_motifs, n_terms))
    for d in range(settings.designs):
        lost = carriers & (rng.random((size, n_motifs)) < 0.5)  # (R, M)
        variants = np.repeat(x[None], n_motifs, axis=0)
        m_index, r_index = np.nonzero(lost.T)
        variants[m_index, r_index, motifs[m_index]] = 0.0
        passes = np.full(n_motifs, d % 2)
        # the motif's contribution: the prediction with it minus the one without it
        change = base[None, :] - predictor.predict(window, variants, passes)  # (M, R)
        hidden = predictor.hidden(passes)  # (M, R)
        around = np.einsum("brj,jm->rmb", bands, lost.astype(np.float32))  # (R, M, B+1)
        terms = np.concatenate(
            [np.ones((size, n_motifs, 1)), lost[..., None], around], axis=2
        )  # (R, M, P)
        terms *= hidden.T[..., None]  # rows not predicted under this mask carry no observation
        xtx += terms[..., :, None] * terms[..., None, :]
        xty += terms * change.T[..., None]
    scored = predictor.windows.scored[window]
    instances = np.einsum("brj,jm->rmb", bands[:-1], carriers.astype(np.float32))
    return Design(xtx[scored], xty[scored], carriers[scored], instances[scored])


def _solve(xtx: np.ndarray, xty: np.ndarray) -> np.ndarray:
    """Least squares per leading index, a small ridge for terms with no variation (a motif
    never lost within a band): their coefficients come back 0, not arbitrary."""
    diagonal = np.diagonal(xtx, axis1=-2, axis2=-1)
    ridge = 1e-9 * np.maximum(diagonal, 1.0)
    return np.linalg.solve(xtx + ridge[..., None] * np.eye(xtx.shape[-1]), xty[..., None])[..., 0]


def _effects(design: Design, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Effects of every motif under region weights (S, n) (row 0: the data, the rest bootstrap
    resamples): cis (S, M), context (S, M), band effects and per-instance effects (S, M, B)."""
    n, m, p = design.xty.shape
    xtx = (weights @ design.xtx.reshape(n, -1)).reshape(len(weights), m, p, p)
    xty = (weights @ design.xty.reshape(n, -1)).reshape(len(weights), m, p)
    beta = _solve(xtx, xty)
    per_instance = beta[..., 2:-1]  # (S, M, B)
    within = design.instances.sum(axis=2) > 0  # (n, M): an instance within context_bp
    count = weights @ within.astype(np.float64)  # (S, M)
    mean_instances = np.einsum("sn,nmb->smb", weights, design.instances * within[..., None])
    context = (per_instance * mean_instances).sum(axis=2) / np.maximum(count, 1e-12)
    # per instance within reach: comparable between common and rare motifs
    context_per_instance = (per_instance * mean_instances).sum(axis=2) / np.maximum(
        mean_instances.sum(axis=2), 1e-12
    )
    in_band = design.instances > 0
    band_count = np.einsum("sn,nmb->smb", weights, in_band.astype(np.float64))
    band_instances = np.einsum("sn,nmb->smb", weights, design.instances)
    band = per_instance * band_instances / np.maximum(band_count, 1e-12)
    return {
        "cis": beta[..., 1],
        "context": context,
        "context_per_instance": context_per_instance,
        "band": band,
        "per_instance": per_instance,
    }


def _interval(values: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    tail = (1 - level) / 2 * 100
    return np.nanpercentile(values, tail, axis=0), np.nanpercentile(values, 100 - tail, axis=0)


def interpret_cell_type(
    predictor: Predictor, motif_names: list[str], settings: InterpretSettings, units: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Motif effects and context-by-distance rows of one cell type (effects times ``units``)."""
    windows = predictor.windows
    names = list(windows.meta["feature_names"])
    motifs = np.array([names.index(m) for m in motif_names])
    rng = np.random.default_rng(settings.seed)
    parts, started = [], time.monotonic()
    for w in range(len(windows)):
        parts.append(_window_design(predictor, w, motifs, settings, rng))
        log.info(
            "%s: window %d/%d knocked out (%d motifs x %d designs, %.0f s)",
            windows.meta["cell_type"],
            w + 1,
            len(windows),
            len(motifs),
            settings.designs,
            time.monotonic() - started,
        )
    design = Design(
        *(np.concatenate([getattr(p, f) for p in parts]) for f in Design.__annotations__)
    )
    n = len(design.carriers)
    draws = np.random.default_rng([settings.seed, 1]).multinomial(
        n, np.full(n, 1 / n), size=settings.bootstrap
    )
    weights = np.vstack([np.ones(n), draws]).astype(np.float64)
    effects = {key: value * units for key, value in _effects(design, weights).items()}
    within = design.instances.sum(axis=2) > 0
    table = {"motif": motif_names, "n_regions": design.carriers.sum(axis=0)}
    for key in ("cis", "context"):
        low, high = _interval(effects[key][1:], settings.level)
        table[f"{key}_effect"], table[f"{key}_low"], table[f"{key}_high"] = (
            effects[key][0],
            low,
            high,
        )
        if key == "context":
            table["n_context"] = within.sum(axis=0)
            table["context_per_instance"] = effects["context_per_instance"][0]
    frame = pd.DataFrame(table)
    # nothing to measure without an instance: NaN, not a zero that reads as "no effect"
    frame.loc[frame["n_regions"] == 0, ["cis_effect", "cis_low", "cis_high"]] = np.nan
    no_context = ["context_effect", "context_low", "context_high", "context_per_instance"]
    frame.loc[frame["n_context"] == 0, no_context] = np.nan
    by_distance = []
    for b, band in enumerate(settings.band_names()):
        low, high = _interval(effects["band"][1:, :, b], settings.level)
        pi_low, pi_high = _interval(effects["per_instance"][1:, :, b], settings.level)
        by_distance.append(
            pd.DataFrame(
                {
                    "motif": motif_names,
                    "band": band,
                    "band_start_bp": settings.distance_bands[b][0],
                    "band_end_bp": settings.distance_bands[b][1],
                    "n_regions": (design.instances[:, :, b] > 0).sum(axis=0),
                    "n_instances": design.instances[:, :, b].sum(axis=0).astype(np.int64),
                    "effect": effects["band"][0, :, b],
                    "low": low,
                    "high": high,
                    "per_instance": effects["per_instance"][0, :, b],
                    "per_instance_low": pi_low,
                    "per_instance_high": pi_high,
                }
            )
        )
    by_distance = pd.concat(by_distance, ignore_index=True)
    empty = by_distance["n_regions"] == 0
    by_distance.loc[empty, ["effect", "low", "high"]] = np.nan
    by_distance.loc[empty, ["per_instance", "per_instance_low", "per_instance_high"]] = np.nan
    return frame, by_distance


def _differential(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Each cell type's effect minus the mean over the group's cell types, per motif."""
    for column in columns:
        mean = table.groupby("motif")[f"{column}_effect"].transform("mean")
        table[f"differential_{column}"] = table[f"{column}_effect"] - mean
    return table


def accessibility_units(windows: WindowSet, path: str | Path) -> float:
    """The factor from the model's accessibility units to log10(CPM + 1)."""
    scaling = windows.meta["scaling"][ACCESSIBILITY]
    if scaling.get("constant"):
        raise InputError(
            path, "has constant accessibility (no counts were given): there is nothing to explain"
        )
    return float(scaling["max_log10_cpm"])


def _check_task(task: dict[str, str], model_path: str | Path) -> None:
    if task["predict"] != ACCESSIBILITY:
        raise ConfigError(
            f"{model_path} was trained with task.predict: {task['predict']}, which hides the motif "
            "features of the predicted regions: interpretation needs them as inputs; train with "
            f"task.predict: {ACCESSIBILITY} (config/accessibility.yaml)"
        )


@dataclass
class GroupModel:
    """A trained model group ready for knock-outs."""

    path: Path
    model: torch.nn.Module
    meta: dict
    diffusion: GaussianDiffusion
    task: dict[str, str]
    device: torch.device
    unseen: str

    @classmethod
    def load(cls, path: str | Path, config: dict, device: torch.device) -> GroupModel:
        meta = model_metadata(path)
        task = recorded_settings(meta, config, path)
        _check_task(task, path)
        model = load_model(path, device=device).eval()
        diffusion = GaussianDiffusion.from_config(config["diffusion"])
        unseen = config["model"]["unseen_cell_types"]
        return cls(Path(path), model, meta, diffusion, task, device, unseen)

    def predictor(self, windows: WindowSet, path: Path, settings: InterpretSettings) -> Predictor:
        check_compatible(self.model, self.meta, windows, path)
        masks = complementary_masks(self.model.config.num_regions, seed=settings.mask_seed)
        label = cell_type_index(self.model, self.meta, windows, path, self.unseen)
        return Predictor(
            self.model,
            self.diffusion,
            windows,
            masks,
            label,
            self.task,
            self.device,
            settings.batch_size,
            settings.seed,
        )


def interpret_group(
    group: GroupModel, window_paths: dict[str, Path], settings: InterpretSettings, outdir: Path
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Motif effects of every cell type; writes the tables and plots into ``outdir`` as one set."""
    effects, distances = [], []
    started = time.monotonic()
    for cell_type, path in window_paths.items():
        windows = load_window_set(path)
        if len(windows) == 0:
            log.warning("%s: no %s windows for %s; skipped", path, settings.split, cell_type)
            continue
        names = [n for n in windows.meta["feature_names"] if n != ACCESSIBILITY]
        table, by_distance = interpret_cell_type(
            group.predictor(windows, path, settings),
            names,
            settings,
            accessibility_units(windows, path),
        )
        effects.append(table.assign(cell_type=cell_type))
        distances.append(by_distance.assign(cell_type=cell_type))
    if not effects:
        raise GetdiffError(
            f"no {settings.split} windows in any of {sorted(map(str, window_paths.values()))}"
        )
    table = _differential(pd.concat(effects, ignore_index=True), ["cis", "context"])
    first = ["cell_type", "motif", "n_regions"]
    table = table[first + [c for c in table.columns if c not in first]]
    by_distance = pd.concat(distances, ignore_index=True)
    by_distance = by_distance[["cell_type"] + [c for c in by_distance.columns if c != "cell_type"]]
    _write_outputs(outdir, table, by_distance, settings)
    log.info(
        "interpreted %d cell types x %d motifs in %.0f s (effects in %s)",
        len(effects),
        table["motif"].nunique(),
        time.monotonic() - started,
        UNITS,
    )
    return table, by_distance


def _write_outputs(
    outdir: Path, table: pd.DataFrame, by_distance: pd.DataFrame, settings: InterpretSettings
) -> None:
    from getdiff.plots import write_interpretation_plots

    names = {"effects": EFFECTS_FILE, "distance": DISTANCE_FILE, "plots": "plots"}
    paths = {key: outdir / name for key, name in names.items()}
    with output_set(paths, directories=("plots",)) as tmp:
        table.to_csv(tmp["effects"], sep="\t", index=False, float_format="%.6g")
        by_distance.to_csv(tmp["distance"], sep="\t", index=False, float_format="%.6g")
        write_interpretation_plots(table, by_distance, tmp["plots"], UNITS)


# --------------------------------------------------------------------------- named regions


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


# --------------------------------------------------------------------------- CLI


def run(args: argparse.Namespace) -> None:
    config = config_from_args(args)
    if args.threads < 1:
        raise GetdiffError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    settings = InterpretSettings.from_config(config)
    cell_types = list(load_cell_types(config["cell_types"]).index)
    members = train_groups(config, cell_types)
    if args.group not in members:
        raise GetdiffError(f"unknown group {args.group!r}; configured: {sorted(members)}")
    device = resolve_device(config["evaluate"]["device"], "evaluate.device")
    group = GroupModel.load(args.model, config, device)
    prepared = Path(args.prepared_dir)
    if args.regions is None:
        if args.outdir is None:
            raise GetdiffError("--outdir is required (or --regions with --output)")
        make_directory(args.outdir)
        paths = {ct: windows_path(prepared, ct, settings.split) for ct in members[args.group]}
        interpret_group(group, paths, settings, Path(args.outdir))
        log.info("wrote %s", args.outdir)
        return
    if not args.motifs or args.output is None:
        raise GetdiffError("--regions needs --motifs NAME[,NAME...] and --output FILE.tsv")
    order = [settings.split] + [s for s in ("validation", "test", "train") if s != settings.split]
    paths = {ct: [windows_path(prepared, ct, s) for s in order] for ct in members[args.group]}
    motifs = [m for m in args.motifs.split(",") if m]
    perturb_regions(
        group,
        args.regions,
        motifs,
        args.where,
        paths,
        settings,
        args.calibration,
        args.output,
        config["impute"]["interval_level"],
    )
    log.info("wrote %s", args.output)


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "interpret",
        help="motif knock-outs: which motifs open chromatin in which cell type, and from how far",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(parser)
    parser.add_argument("--group", required=True, help="model group (train.groups)")
    parser.add_argument("--model", required=True, help="model.safetensors from getdiff train")
    parser.add_argument("--prepared-dir", required=True, help="getdiff prepare output root")
    parser.add_argument("--outdir", help=f"folder for {EFFECTS_FILE}, {DISTANCE_FILE}, plots/")
    parser.add_argument("--regions", help="BED of regions to perturb (instead of every motif)")
    parser.add_argument("--motifs", help="with --regions: motif names, comma-separated")
    parser.add_argument(
        "--where",
        choices=("cis", "context"),
        default="cis",
        help="with --regions: remove the motifs in the region, or in its neighbours",
    )
    parser.add_argument("--calibration", help="with --regions: calibration.parquet for intervals")
    parser.add_argument("--output", help="with --regions: the table to write")
    parser.add_argument("--threads", type=int, default=1)
    parser.set_defaults(func=run)


__all__ = ["InterpretSettings", "interpret_group", "perturb_regions", "register_cli"]
