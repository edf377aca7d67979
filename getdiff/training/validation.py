"""Scoring a validation pass (masked MSE, masked and accessibility Pearson) and how
``train.select_by`` ranks the passes."""

from __future__ import annotations

import math

import torch

from getdiff.modeling.diffusion import GaussianDiffusion, Target, hidden_values
from getdiff.training.windows import ValidationSet


def masked_pearson(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    columns: torch.Tensor | None = None,
) -> float:
    """Pearson correlation over the hidden values (NaN if either side is constant)."""
    hidden = hidden_values(mask, columns).expand_as(target)
    p = pred[hidden].double()
    y = target[hidden].double()
    p, y = p - p.mean(), y - y.mean()
    denominator = (p.square().sum() * y.square().sum()).sqrt()
    return float((p * y).sum() / denominator) if denominator > 0 else float("nan")


@torch.no_grad()
def validate(
    model: torch.nn.Module,
    diffusion: GaussianDiffusion,
    val: ValidationSet,
    batch_size: int,
    autocast: torch.autocast,
    target: Target,
    accessibility: torch.Tensor | None = None,
) -> dict[str, float]:
    """The history's validation columns over the whole fixed validation set, in eval mode:
    ``val_loss`` (masked MSE), ``val_masked_pearson`` (over the predicted values) and
    ``val_accessibility_pearson`` (:func:`accessibility_pearson` of the (F,) bool column mask
    ``accessibility``; NaN without one)."""
    model.eval()
    squared, count = 0.0, 0
    preds = []
    for i in range(0, val.x0.shape[0], batch_size):
        part = slice(i, i + batch_size)
        with autocast:
            loss, pred = diffusion.training_loss(
                model,
                val.x0[part],
                val.mask[part],
                val.t[part],
                val.noise[part],
                positions=val.positions[part],
                target=target,
                cell_type=val.cell_type[part],
            )
        values = int(hidden_values(val.mask[part], target.columns).expand_as(val.x0[part]).sum())
        squared += float(loss) * values
        count += values
        preds.append(pred.float())
    model.train()
    pred = torch.cat(preds)
    return {
        "val_loss": squared / count,
        "val_masked_pearson": masked_pearson(pred, val.x0, val.mask, target.columns),
        "val_accessibility_pearson": accessibility_pearson(pred, val, accessibility),
    }


def accessibility_pearson(
    pred: torch.Tensor, val: ValidationSet, accessibility: torch.Tensor | None
) -> float:
    """Mean over the validation set's cell types of each one's masked accessibility Pearson
    (cell types whose Pearson is undefined left out; NaN if none is defined or no column)."""
    if accessibility is None:
        return math.nan
    scores = []
    for cell_type in val.cell_type.unique().tolist():
        rows = val.cell_type == cell_type
        scores.append(masked_pearson(pred[rows], val.x0[rows], val.mask[rows], accessibility))
    defined = [score for score in scores if math.isfinite(score)]
    return sum(defined) / len(defined) if defined else math.nan


def selection_key(row: dict[str, float], select_by: str) -> tuple[float, ...]:
    """How ``train.select_by`` ranks a validation pass (larger is better): the accessibility
    Pearson, then the lower loss; or the loss alone. An undefined value ranks last."""

    def defined(value: float) -> float:
        return value if math.isfinite(value) else -math.inf

    loss = defined(-row["val_loss"])
    if select_by == "val_loss":
        return (loss,)
    return (defined(row["val_accessibility_pearson"]), loss)
