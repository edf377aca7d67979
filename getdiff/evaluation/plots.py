"""Evaluation figures (PNG), per cell type: densities, Pearson by predictor, curves.

Headless (Agg backend). Each figure is one file in the given directory:

- ``accessibility_density.png``: observed vs predicted masked accessibility, one row per cell
  type, one column per predictor (log density; axes span each cell type's own range).
- ``pearson_by_cell_type.png``: Pearson and within-window Pearson of masked accessibility per
  cell type and predictor.
- ``accessibility_spread.png``: the distribution of observed and predicted accessibility per
  cell type (a flat predictor shows as a narrow box).
- ``per_feature_pearson.png`` (when motif features are predicted): per-feature Pearson ranked,
  pooled across cell types.
- ``interval_reliability.png`` (when intervals were scored): per cell type, the empirical
  coverage of each predictor's calibrated interval against its nominal level (top; on the
  diagonal is calibrated), and the model's 90% coverage within quintiles of interval width
  (bottom; flat at 0.9 is calibrated for narrow and wide intervals alike).
- ``training_curves.png`` when a training history is given.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from getdiff.errors import InputError  # noqa: E402
from getdiff.evaluation.metrics import (  # noqa: E402
    ScoredRegions,
    metrics_per_column,
    pearson,
    pool,
    within_window_pearson,
)
from getdiff.tensors import ACCESSIBILITY  # noqa: E402

LABELS = {
    "model": "GETRegionDiffusion",
    "train_mean": "training mean",
    "neighbour_mean": "neighbours",
    "window_mean": "window mean",
    "ridge": "ridge",
}


def _accessibility(scored: ScoredRegions) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    j = scored.features.index(ACCESSIBILITY)
    return scored.observed[:, j], {p: v[:, j] for p, v in scored.predictions.items()}


def _density_grid(path: Path, scored: dict[str, ScoredRegions]) -> None:
    predictors = list(next(iter(scored.values())).predictions)
    size = (3.2 * len(predictors), 3.0 * len(scored))
    fig, axes = plt.subplots(len(scored), len(predictors), figsize=size, squeeze=False)
    for row, (cell_type, regions) in zip(axes, scored.items(), strict=True):
        observed, predictions = _accessibility(regions)
        low, high = np.quantile(observed, [0.005, 0.995])
        extent = (low, high, low, high)
        for ax, name in zip(row, predictors, strict=True):
            ax.hexbin(observed, predictions[name], gridsize=40, bins="log", mincnt=1, extent=extent)
            ax.plot([low, high], [low, high], color="grey", lw=0.8, ls="--")
            ax.set_xlim(low, high)
            ax.set_ylim(low, high)
            r = pearson(observed, predictions[name])
            ax.set_title(f"{cell_type}: {LABELS.get(name, name)}\nr={r:.3f}", fontsize=9)
            ax.set_xlabel("observed", fontsize=8)
        row[0].set_ylabel("predicted")
    fig.suptitle("Masked accessibility per cell type: predicted vs observed (log density)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _pearson_bars(path: Path, scored: dict[str, ScoredRegions]) -> None:
    predictors = list(next(iter(scored.values())).predictions)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4), sharey=True)
    width = 0.8 / len(predictors)
    x = np.arange(len(scored))
    for k, name in enumerate(predictors):
        plain, within = [], []
        for regions in scored.values():
            observed, predictions = _accessibility(regions)
            plain.append(pearson(observed, predictions[name]))
            within.append(
                within_window_pearson(observed[:, None], predictions[name][:, None], regions.window)
            )
        for ax, values in zip(axes, (plain, within), strict=True):
            ax.bar(x + k * width, np.nan_to_num(values), width, label=LABELS.get(name, name))
    for ax, title in zip(axes, ("Pearson", "within-window Pearson"), strict=True):
        ax.set_xticks(x + 0.4 - width / 2, list(scored))
        ax.axhline(0, color="grey", lw=0.6)
        ax.set_title(f"Masked accessibility: {title}")
    axes[0].set_ylabel("r (held-out regions)")
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _spread(path: Path, scored: dict[str, ScoredRegions]) -> None:
    predictors = list(next(iter(scored.values())).predictions)
    fig, axes = plt.subplots(1, len(scored), figsize=(4.5 * len(scored), 4), squeeze=False)
    for ax, (cell_type, regions) in zip(axes[0], scored.items(), strict=True):
        observed, predictions = _accessibility(regions)
        values = [observed] + [predictions[p] for p in predictors]
        ax.boxplot(values, showfliers=False)
        ax.set_xticks(
            np.arange(1, len(values) + 1),
            ["observed"] + [LABELS.get(p, p) for p in predictors],
            rotation=45,
            ha="right",
            fontsize=8,
        )
        ax.set_title(cell_type)
    axes[0][0].set_ylabel("masked accessibility (normalised)")
    fig.suptitle("Spread of observed and predicted accessibility (boxes: quartiles, 1.5 IQR)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _per_feature_pearson(path: Path, pooled: ScoredRegions) -> None:
    pearsons = {
        p: metrics_per_column(pooled.observed, v)["pearson"] for p, v in pooled.predictions.items()
    }
    order = np.argsort(-np.nan_to_num(pearsons["model"], nan=-2.0))
    fig, ax = plt.subplots(figsize=(10, 4))
    for name, values in pearsons.items():
        ax.plot(np.arange(len(order)), values[order], label=LABELS.get(name, name), lw=1.2)
    top = [pooled.features[j] for j in order[:10]]
    ax.set_xlabel("features ranked by model Pearson (top 10: " + ", ".join(top) + ")")
    ax.set_ylabel("Pearson r (masked regions)")
    ax.axhline(0, color="grey", lw=0.6)
    ax.legend()
    ax.set_title("Per-feature masked Pearson, ranked (pooled across cell types)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _reliability(path: Path, intervals: dict[str, dict]) -> None:
    """``intervals``: cell type -> predictor -> the intervals entry of its accessibility score."""
    fig, axes = plt.subplots(2, len(intervals), figsize=(4.2 * len(intervals), 7.5), squeeze=False)
    for k, (cell_type, by_predictor) in enumerate(intervals.items()):
        top, bottom = axes[0][k], axes[1][k]
        top.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        for name, scores in by_predictor.items():
            curve = scores["reliability"]
            style = {"lw": 2.0} if name == "model" else {"lw": 1.0, "alpha": 0.8}
            top.plot(
                curve["levels"],
                curve["coverage"],
                "o-",
                ms=3,
                label=LABELS.get(name, name),
                **style,
            )
        top.set_title(f"{cell_type}: interval coverage")
        top.set_xlabel("nominal level")
        top.set_xlim(0, 1)
        top.set_ylim(0, 1)
        model = by_predictor["model"]["0.9"]
        quintiles = np.arange(1, len(model["coverage_by_width_quintile"]) + 1)
        bottom.bar(quintiles, model["coverage_by_width_quintile"], color="C0")
        bottom.axhline(0.9, color="grey", lw=0.8, ls="--")
        bottom.set_ylim(0, 1)
        bottom.set_xlabel("quintile of interval width (1 = narrowest)")
        bottom.set_title(
            f"model, 90%: coverage {model['coverage']:.2f}, mean width {model['mean_width']:.3f}\n"
            f"(constant width {model['constant_width']['mean_width']:.3f})",
            fontsize=9,
        )
    axes[0][0].set_ylabel("empirical coverage (held-out regions)")
    axes[1][0].set_ylabel("coverage of the model's 90% interval")
    axes[0][-1].legend(fontsize=8, loc="upper left")
    fig.suptitle(
        "Calibrated predictive intervals of masked accessibility (calibrated on validation)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def read_history(history: str | Path) -> pd.DataFrame:
    """getdiff train's history.tsv (step, loss, ...); an empty or foreign file is an InputError."""
    try:
        table = pd.read_csv(history, sep="\t")
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError):
        table = pd.DataFrame()
    missing = [c for c in ("step", "loss") if c not in table.columns]
    if missing or table.empty:
        raise InputError(
            history,
            "is not a training history: expected getdiff train's history.tsv with columns "
            f"step and loss and one row per logged step (missing: {', '.join(missing) or 'rows'})",
        )
    return table


def _training_curves(path: Path, history: str | Path) -> None:
    table = read_history(history)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(table["step"], table["loss"], label="training loss (batch)", lw=0.8, alpha=0.8)
    if "val_loss" in table:
        val = table.dropna(subset=["val_loss"])
        ax.plot(val["step"], val["val_loss"], "o-", label="validation loss", ms=3)
    if "best" in table:  # the step whose weights train exported (train.select_by)
        for step in table.loc[table["best"] == 1, "step"]:
            ax.axvline(step, color="grey", ls=":", label=f"exported weights (step {step:g})")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("masked MSE")
    ax.legend()
    ax.set_title("Training curves")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_evaluation_plots(
    directory: str | Path,
    scored: dict[str, ScoredRegions],
    history: str | Path | None = None,
    intervals: dict[str, dict] | None = None,
) -> list[Path]:
    """Write the evaluation figures of the cell types' scored regions (and of the accessibility
    intervals' scores, cell type -> predictor -> scores, when given); return their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    if ACCESSIBILITY in next(iter(scored.values())).features:
        for name, draw in (
            ("accessibility_density.png", _density_grid),
            ("pearson_by_cell_type.png", _pearson_bars),
            ("accessibility_spread.png", _spread),
        ):
            written.append(directory / name)
            draw(written[-1], scored)
    pooled = pool(list(scored.values()))
    if len(pooled.features) > 1:
        written.append(directory / "per_feature_pearson.png")
        _per_feature_pearson(written[-1], pooled)
    if intervals:
        written.append(directory / "interval_reliability.png")
        _reliability(written[-1], intervals)
    if history is not None and Path(history).exists():
        written.append(directory / "training_curves.png")
        _training_curves(written[-1], history)
    return written


TOP_MOTIFS = 20  # rows of the interpretation heatmaps
TOP_CONTEXT_MOTIFS = 6  # curves of the context-by-distance plot


def _top_motifs(table: pd.DataFrame, column: str, n: int) -> list[str]:
    """The n motifs of largest absolute effect in any cell type."""
    largest = table.assign(size=table[column].abs()).groupby("motif")["size"].max()
    return list(largest.sort_values(ascending=False, kind="stable").index[:n])


def _effect_heatmaps(path: Path, table: pd.DataFrame, units: str) -> None:
    """Top motifs x cell types, cis and context effects side by side (diverging colours)."""
    cell_types = list(dict.fromkeys(table["cell_type"]))
    fig, axes = plt.subplots(1, 2, figsize=(4 + 1.6 * len(cell_types), 0.32 * TOP_MOTIFS + 2))
    for ax, kind in zip(axes, ("cis", "context"), strict=True):
        column = f"{kind}_effect"
        motifs = _top_motifs(table, column, TOP_MOTIFS)
        grid = table.pivot(index="motif", columns="cell_type", values=column)
        grid = grid.loc[motifs, cell_types]
        limit = float(np.nanmax(np.abs(grid.to_numpy()))) or 1.0
        image = ax.imshow(grid.to_numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
        ax.set_xticks(range(len(cell_types)), cell_types, rotation=30, ha="right")
        ax.set_yticks(range(len(motifs)), motifs, fontsize=8)
        ax.set_title(f"{kind} effect (top {len(motifs)} motifs)")
        fig.colorbar(image, ax=ax, shrink=0.6, label=units)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def decay_motifs(by_distance: pd.DataFrame, n: int = TOP_CONTEXT_MOTIFS) -> list[str]:
    """The n motifs of largest per-instance effect in the nearest band in any cell type (not of
    largest context_effect, which grows with a motif's frequency)."""
    nearest = by_distance[by_distance["band_start_bp"] == by_distance["band_start_bp"].min()]
    return _top_motifs(nearest, "per_instance", n)


def _context_decay(path: Path, by_distance: pd.DataFrame, table: pd.DataFrame, units: str) -> None:
    """Per cell type, the change per motif instance against distance for the
    :func:`decay_motifs`, with the bootstrap intervals as bars."""
    cell_types = list(dict.fromkeys(table["cell_type"]))
    motifs = decay_motifs(by_distance)
    fig, axes = plt.subplots(
        1, len(cell_types), figsize=(4.2 * len(cell_types), 3.6), squeeze=False, sharey=True
    )
    for ax, cell_type in zip(axes[0], cell_types, strict=True):
        rows = by_distance[by_distance["cell_type"] == cell_type]
        for motif in motifs:
            curve = rows[rows["motif"] == motif]
            middle = (curve["band_start_bp"] + curve["band_end_bp"]) / 2e3
            ax.errorbar(
                middle,
                curve["per_instance"],
                yerr=[
                    curve["per_instance"] - curve["per_instance_low"],
                    curve["per_instance_high"] - curve["per_instance"],
                ],
                marker="o",
                capsize=2,
                label=motif,
            )
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(cell_type)
        ax.set_xlabel("distance to the region (kb, band middle)")
    axes[0][0].set_ylabel(f"effect per instance\n({units})")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_interpretation_plots(
    table: pd.DataFrame, by_distance: pd.DataFrame, directory: str | Path, units: str
) -> list[Path]:
    """The motif-effect heatmaps and the context decay curves (getdiff interpret)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    heatmap, decay = directory / "motif_effects.png", directory / "context_by_distance.png"
    _effect_heatmaps(heatmap, table, units)
    _context_decay(decay, by_distance, table, units)
    return [heatmap, decay]
