"""Evaluation figures (PNG): predicted vs observed densities, ranked per-feature Pearson, curves.

Headless (Agg backend). Each figure is one file in the given directory:
``accessibility_density.png``, ``motifs_density.png``, ``per_feature_pearson.png`` and, when a
training history is given, ``training_curves.png``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from getdiff.evaluate import metrics, metrics_per_column  # noqa: E402

LABELS = {
    "model": "GETRegionDiffusion",
    "train_mean": "training mean",
    "neighbour_mean": "neighbours",
}


def _density_panels(path: Path, observed: np.ndarray, predictions: dict, title: str) -> None:
    fig, axes = plt.subplots(1, len(predictions), figsize=(4.2 * len(predictions), 4), sharey=True)
    for ax, (name, predicted) in zip(np.atleast_1d(axes), predictions.items(), strict=True):
        obs, pred = observed.ravel(), np.asarray(predicted).ravel()
        ax.hexbin(obs, pred, gridsize=60, bins="log", mincnt=1, cmap="viridis", extent=(0, 1, 0, 1))
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        stats = metrics(obs, pred)
        ax.set_title(f"{LABELS.get(name, name)}\nr={stats['pearson']:.3f}  R²={stats['r2']:.3f}")
        ax.set_xlabel(f"observed {title} (normalised)")
    np.atleast_1d(axes)[0].set_ylabel("predicted (normalised)")
    fig.suptitle(f"Masked {title}: predicted vs observed (log density)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _per_feature_pearson(
    path: Path, observed: np.ndarray, predictions: dict, names: list[str]
) -> None:
    pearson = {
        p: metrics_per_column(observed, np.asarray(v))["pearson"] for p, v in predictions.items()
    }
    order = np.argsort(-np.nan_to_num(pearson["model"], nan=-2.0))
    fig, ax = plt.subplots(figsize=(10, 4))
    for name, values in pearson.items():
        ax.plot(np.arange(len(order)), values[order], label=LABELS.get(name, name), lw=1.2)
    top = [names[j] for j in order[:10]]
    ax.set_xlabel("features ranked by model Pearson (top 10: " + ", ".join(top) + ")")
    ax.set_ylabel("Pearson r (masked regions)")
    ax.axhline(0, color="grey", lw=0.6)
    ax.legend()
    ax.set_title("Per-feature masked Pearson, ranked")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _training_curves(path: Path, history: str | Path) -> None:
    table = pd.read_csv(history, sep="\t")
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(table["step"], table["loss"], label="training loss (batch)", lw=0.8, alpha=0.8)
    if "val_loss" in table:
        val = table.dropna(subset=["val_loss"])
        ax.plot(val["step"], val["val_loss"], "o-", label="validation loss", ms=3)
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
    observed: np.ndarray,
    predictions: dict[str, np.ndarray],
    names: list[str],
    accessibility: int,
    history: str | Path | None = None,
) -> list[Path]:
    """Write the evaluation figures into ``directory``; return their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    motifs = [j for j in range(observed.shape[1]) if j != accessibility]
    written = [
        directory / "accessibility_density.png",
        directory / "motifs_density.png",
        directory / "per_feature_pearson.png",
    ]
    _density_panels(
        written[0],
        observed[:, accessibility],
        {p: np.asarray(v)[:, accessibility] for p, v in predictions.items()},
        "accessibility",
    )
    _density_panels(
        written[1],
        observed[:, motifs],
        {p: np.asarray(v)[:, motifs] for p, v in predictions.items()},
        "motif features",
    )
    _per_feature_pearson(written[2], observed, predictions, names)
    if history is not None and Path(history).exists():
        written.append(directory / "training_curves.png")
        _training_curves(written[-1], history)
    return written
