"""Which motifs open chromatin in which cell type, in the region and from its neighbours.

``getdiff interpret`` knocks motifs out of the windows of ``interpret.split`` (default: test) and
reads the change in the model's predicted accessibility, for every cell type of a model group
and every motif feature (the accessibility task only: the knocked-out motifs must be inputs of
the predicted regions). Each region is predicted as evaluate predicts it: hidden by the one of
evaluate's two complementary masks that hides it, from the one-step sampler's x0 prediction.
Every variant of a window starts from the same noise, so a difference is the knock-out's alone.

Designs (``interpret.designs``): in each, every region carrying the motif (feature > 0) loses it
(feature set to 0) with probability 1/2, independently, and every region is read out under the
mask that hides it. With ``interpret.propagate`` (default) the knock-out also reaches the
accessibility the model reads from the visible regions: a region that lost the motif has its
input accessibility lowered by the motif's cis effect from a first read without propagation, and
the designs are read again. Otherwise the model explains the observed accessibility of a region
that lost the motif anew (a stronger domain around it, for a motif that opens its own region),
which reads as a context effect of the opposite sign to the cis effect. Per motif and cell
type, a least-squares fit over the regions x designs of

    drop of region i = a + cis x [i lost the motif] + sum_b band_b x (instances lost at a
                       distance in band b of i) + beyond x (instances lost beyond the bands)

separates the region's own motif from its neighbours' (random designs make the two terms
independent). An instance beyond the bands still shifts a region: through the window's
accessibility scaling (``task.scaling: window``) and the model reading the motif's frequency as
evidence of the window's domain, alike at any distance. That window-wide shift (``beyond``,
reported as ``beyond_per_instance``) is no action on the neighbours, so a band's effect per
instance is counted above it: ``per_instance_b = band_b - beyond``. An effect is the prediction
with the motif minus the prediction without it (positive: the motif opens chromatin), in
log10(CPM + 1) units of predicted accessibility (the model's [0, 1] accessibility times the cell
type's max log10 CPM, so comparable across cell types):

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

Beside them, ``ridge_cis_effect`` and ``ridge_context_effect``: the same two effects read from a
ridge of the training regions' accessibility on motif presence (own, per band, domain), the
simple baseline an interpretation has to beat (:mod:`getdiff.evaluation.motif_regression`).

``--regions FILE.bed --motifs A,B [--where cis|context]`` instead predicts each listed region
per cell type with the motifs (``predicted``) and without them (``perturbed``: removed from the
region itself, or from every other region of its window within context_bp), ``effect`` the
difference, with the calibrated intervals of impute when ``--calibration`` is given.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
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
from getdiff.devices import resolve_device
from getdiff.errors import GetdiffError
from getdiff.evaluation.knockout import (
    UNITS,
    GroupModel,
    InterpretSettings,
    Predictor,
    accessibility_units,
)
from getdiff.evaluation.motif_regression import ridge_effects
from getdiff.evaluation.perturb import perturb_regions
from getdiff.io import make_directory, output_set
from getdiff.paths import INTERPRET_DIRECTORIES, INTERPRET_FILES, in_folder
from getdiff.tensors import ACCESSIBILITY, WindowSet, load_window_set, windows_path

log = logging.getLogger(__name__)


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


def _lost_sets(
    predictor: Predictor, motifs: np.ndarray, settings: InterpretSettings
) -> list[np.ndarray]:
    """Per window, (designs, R, M) bool: the carriers that lose the motif in each design (each
    with probability 1/2), seeded."""
    rng = np.random.default_rng(settings.seed)
    sets = []
    for window in range(len(predictor.windows)):
        carriers = predictor.windows.windows([window])[0][:, motifs] > 0
        draws = rng.random((settings.designs, *carriers.shape)) < 0.5
        sets.append(carriers[None] & draws)
    return sets


def _window_design(
    predictor: Predictor,
    window: int,
    motifs: np.ndarray,
    settings: InterpretSettings,
    lost_sets: np.ndarray,
    lowered: np.ndarray,
    passes: tuple[int, ...] = (0, 1),
) -> Design:
    """The knock-out designs ``lost_sets`` (designs, R, M) of one window: predict them, and
    return the fit's statistics of the window's scored regions that the masks ``passes`` hide.
    A region that loses motif m also has its accessibility input lowered by ``lowered[m]``
    (propagation)."""
    x = predictor.windows.windows([window])[0]
    size, n_motifs = x.shape[0], len(motifs)
    carriers = x[:, motifs] > 0  # (R, M)
    bands = _band_matrices(predictor.midpoints[predictor.windows.rows([window])[0]], settings)
    base = predictor.baseline(window)
    n_terms = 2 + len(bands)  # intercept, cis, bands..., far
    xtx = np.zeros((size, n_motifs, n_terms, n_terms))
    xty = np.zeros((size, n_motifs, n_terms))
    for lost in lost_sets:  # (R, M)
        variants = np.repeat(x[None], n_motifs, axis=0)
        m_index, r_index = np.nonzero(lost.T)
        variants[m_index, r_index, motifs[m_index]] = 0.0
        variants[m_index, r_index, predictor.column] -= lowered[m_index]
        # the motif's contribution: the prediction with it minus the one without it
        read = predictor.read(window, variants, passes)
        change = np.nan_to_num(base[None, :] - read)  # (M, R); rows not read: dropped below
        around = np.einsum("brj,jm->rmb", bands, lost.astype(np.float32))  # (R, M, B+1)
        terms = np.concatenate(
            [np.ones((size, n_motifs, 1)), lost[..., None], around], axis=2
        )  # (R, M, P)
        xtx += terms[..., :, None] * terms[..., None, :]
        xty += terms * change.T[..., None]
    read_rows = np.any([predictor.masks[p].cpu().numpy() for p in passes], axis=0)
    scored = predictor.windows.scored[window] & read_rows
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
    # an instance beyond the bands shifts a region only window-wide (scaling, the domain read
    # from the motif's frequency): a neighbour's action is what a band adds above that
    beyond = beta[..., -1]  # (S, M)
    per_instance = beta[..., 2:-1] - beyond[..., None]  # (S, M, B)
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
        "beyond": beyond,
    }


def _interval(values: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    tail = (1 - level) / 2 * 100
    return np.nanpercentile(values, tail, axis=0), np.nanpercentile(values, 100 - tail, axis=0)


def _all_windows(
    predictor: Predictor,
    motifs: np.ndarray,
    settings: InterpretSettings,
    lost_sets: dict[int, np.ndarray],
    lowered: np.ndarray,
    passes: tuple[int, ...] = (0, 1),
) -> Design:
    """The fit's statistics of the designs ``lost_sets`` (window: designs) of the windows it
    names (see :func:`_window_design`)."""
    parts, started = [], time.monotonic()
    what = "propagated knock-outs" if lowered.any() else "knock-outs"
    for n, (w, lost) in enumerate(lost_sets.items()):
        parts.append(_window_design(predictor, w, motifs, settings, lost, lowered, passes))
        log.info(
            "%s: window %d/%d, %s of %d motifs x %d designs (%.0f s)",
            predictor.windows.meta["cell_type"],
            n + 1,
            len(lost_sets),
            what,
            len(motifs),
            len(lost),
            time.monotonic() - started,
        )
    return Design(*(np.concatenate([getattr(p, f) for p in parts]) for f in Design.__annotations__))


def interpret_cell_type(
    predictor: Predictor, motif_names: list[str], settings: InterpretSettings, units: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Motif effects and context-by-distance rows of one cell type (effects times ``units``)."""
    windows = predictor.windows
    names = list(windows.meta["feature_names"])
    motifs = np.array([names.index(m) for m in motif_names])
    lost_sets = dict(enumerate(_lost_sets(predictor, motifs, settings)))
    lowered = np.zeros(len(motifs), dtype=np.float32)
    if settings.propagate:
        # a region that lost the motif has the accessibility the model reads lowered by the
        # motif's cis effect, from a first read of every window's first design under the first
        # mask: half the regions of every window (cis effects hardly move with propagation; a
        # share of the windows would do, but their scaling differs and biases the lowering)
        first = {w: lost[:1] for w, lost in lost_sets.items()}
        design = _all_windows(predictor, motifs, settings, first, lowered, passes=(0,))
        cis = _effects(design, np.ones((1, len(design.carriers))))["cis"][0]
        lowered = np.nan_to_num(cis).astype(np.float32)
    design = _all_windows(predictor, motifs, settings, lost_sets, lowered)
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
            table["beyond_per_instance"] = effects["beyond"][0]
    frame = pd.DataFrame(table)
    # nothing to measure without an instance: NaN, not a zero that reads as "no effect"
    frame.loc[frame["n_regions"] == 0, ["cis_effect", "cis_low", "cis_high"]] = np.nan
    no_context = [
        "context_effect",
        "context_low",
        "context_high",
        "context_per_instance",
        "beyond_per_instance",
    ]
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


def _with_ridge(
    table: pd.DataFrame,
    train_path: Path,
    windows: WindowSet,
    units: float,
    settings: InterpretSettings,
) -> pd.DataFrame:
    """The table plus the ridge baseline's ``ridge_cis_effect`` and ``ridge_context_effect``
    (NaN where the model's effect is, or with no training regions)."""
    train = load_window_set(train_path)
    names = list(windows.meta["feature_names"])
    if list(train.meta["feature_names"]) != names:
        raise GetdiffError(f"{train_path}: its features differ from those of the interpreted split")
    if len(train.features) == 0:
        log.warning("%s: no training regions; the ridge baseline is NaN", train_path)
        ridge = {key: np.full(len(table), np.nan) for key in ("cis", "context")}
    else:
        motifs = np.array([names.index(m) for m in table["motif"]])
        ridge = ridge_effects(train, windows, motifs, settings)
    for key in ("cis", "context"):
        value = ridge[key] * units
        table[f"ridge_{key}_effect"] = np.where(table[f"{key}_effect"].isna(), np.nan, value)
    return table


def interpret_group(
    group: GroupModel,
    window_paths: dict[str, Path],
    settings: InterpretSettings,
    outdir: Path,
    train_paths: dict[str, Path],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Motif effects of every cell type, beside the ridge baseline fitted on ``train_paths``;
    writes the tables and plots into ``outdir`` as one set."""
    effects, distances = [], []
    started = time.monotonic()
    for cell_type, path in window_paths.items():
        windows = load_window_set(path)
        if len(windows) == 0:
            log.warning("%s: no %s windows for %s; skipped", path, settings.split, cell_type)
            continue
        names = [n for n in windows.meta["feature_names"] if n != ACCESSIBILITY]
        units = accessibility_units(windows, path)
        table, by_distance = interpret_cell_type(
            group.predictor(windows, path, settings), names, settings, units
        )
        table = _with_ridge(table, train_paths[cell_type], windows, units, settings)
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
    from getdiff.evaluation.plots import write_interpretation_plots

    paths = in_folder(outdir, INTERPRET_FILES)
    with output_set(paths, directories=INTERPRET_DIRECTORIES) as tmp:
        table.to_csv(tmp["effects"], sep="\t", index=False, float_format="%.6g")
        by_distance.to_csv(tmp["distance"], sep="\t", index=False, float_format="%.6g")
        write_interpretation_plots(table, by_distance, tmp["plots"], UNITS)


# --------------------------------------------------------------------------- CLI


def run(args: argparse.Namespace) -> None:
    config = config_from_args(args)
    torch.set_num_threads(args.threads)
    settings = InterpretSettings.from_config(config)
    _, members = group_members(config, args.group)
    device = resolve_device(config["evaluate"]["device"], "evaluate.device")
    group = GroupModel.load(args.model, config, device)
    prepared = Path(args.prepared_dir)
    if args.regions is None:
        if args.outdir is None:
            raise GetdiffError("--outdir is required (or --regions with --output)")
        make_directory(args.outdir)
        paths = {ct: windows_path(prepared, ct, settings.split) for ct in members}
        train = {ct: windows_path(prepared, ct, "train") for ct in members}
        interpret_group(group, paths, settings, Path(args.outdir), train)
        log.info("wrote %s", args.outdir)
        return
    if not args.motifs or args.output is None:
        raise GetdiffError("--regions needs --motifs NAME[,NAME...] and --output FILE.tsv")
    order = [settings.split] + [s for s in ("validation", "test", "train") if s != settings.split]
    paths = {ct: [windows_path(prepared, ct, s) for s in order] for ct in members}
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
    add_model_arguments(parser)
    parser.add_argument("--outdir", help=f"folder for {', '.join(INTERPRET_FILES.values())}")
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
