"""Simple predictors of masked regions that a model must beat, on the masks the model saw.

Each predictor fills the masked rows of (n, R, F) windows given the (R,) mask of one pass:

- ``train_mean``: each feature's mean over the training regions (a constant).
- ``neighbour_mean``: mean of the nearest unmasked region on each side within the window (one
  side at the window's edges): genomic locality.
- ``window_mean``: each feature's mean over the window's unmasked rows: the window's level.
- ``ridge``: a ridge regression fitted on the cell type's training split with the same mask,
  taking the window's mean unmasked accessibility plus, in the ``accessibility`` task, the
  region's own motif features (known from sequence). It predicts the task's features.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from getdiff.tensors import WindowSet

RIDGE_ALPHA = 1.0  # L2 penalty on the (unstandardised, [0, 1]-scaled) inputs
RIDGE_BATCH = 32  # windows per chunk when accumulating the normal equations


def neighbour_indices(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each position of an (R,) mask: index of the nearest unmasked position to the left
    and to the right (-1 where there is none)."""
    size = len(mask)
    positions = np.arange(size)
    left = np.maximum.accumulate(np.where(~mask, positions, -1))
    left = np.concatenate([[-1], left[:-1]])  # strictly left of the position itself
    right = np.minimum.accumulate(np.where(~mask, positions, size)[::-1])[::-1]
    right = np.concatenate([right[1:], [size]])
    right = np.where(right >= size, -1, right)
    return left, right


def neighbour_mean_prediction(windows: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(n, R, F) prediction: mean of the nearest unmasked neighbours on each side of each row."""
    left, right = neighbour_indices(mask)
    has_left, has_right = left >= 0, right >= 0
    left_values = windows[:, np.maximum(left, 0)] * has_left[None, :, None]
    right_values = windows[:, np.maximum(right, 0)] * has_right[None, :, None]
    count = np.maximum(has_left.astype(np.float32) + has_right, 1.0)[None, :, None]
    return ((left_values + right_values) / count).astype(np.float32)


def window_mean_prediction(windows: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(n, R, F) prediction: each window's mean over its unmasked rows, in every row."""
    level = windows[:, ~mask].mean(axis=1, dtype=np.float64).astype(np.float32)
    return np.broadcast_to(level[:, None, :], windows.shape)


class Ridge:
    """Closed-form ridge regression of the predicted features on per-region inputs.

    Inputs of a masked row: the window's mean unmasked accessibility, plus its own motif features
    when ``own_motifs`` (the accessibility task). Intercept unpenalised (inputs centred).
    """

    def __init__(self, targets: np.ndarray, own_motifs: bool, alpha: float = RIDGE_ALPHA):
        self.targets = np.asarray(targets)  # (T,) feature columns predicted
        self.own_motifs = own_motifs
        self.alpha = alpha
        self.coef: np.ndarray | None = None
        self.input_mean: np.ndarray | None = None
        self.target_mean: np.ndarray | None = None

    def inputs(self, windows: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(n * masked, P) float64 inputs of the masked rows, window by window."""
        level = windows[:, ~mask, -1].mean(axis=1, dtype=np.float64)
        parts = [np.repeat(level, int(mask.sum()))[:, None]]
        if self.own_motifs:
            parts.insert(0, windows[:, mask, :-1].reshape(-1, windows.shape[2] - 1))
        return np.concatenate(parts, axis=1, dtype=np.float64)

    def fit(self, train: WindowSet, mask: np.ndarray) -> Ridge:
        """Accumulate the normal equations over the training windows in chunks (bounded memory)."""
        gram = cross = None
        sums = [0.0, 0.0]
        n = 0
        for lo in range(0, len(train), RIDGE_BATCH):
            windows = train.windows(np.arange(lo, min(lo + RIDGE_BATCH, len(train))))
            x = self.inputs(windows, mask)
            y = windows[:, mask][..., self.targets].reshape(len(x), -1).astype(np.float64)
            gram = x.T @ x if gram is None else gram + x.T @ x
            cross = x.T @ y if cross is None else cross + x.T @ y
            sums = [sums[0] + x.sum(axis=0), sums[1] + y.sum(axis=0)]
            n += len(x)
        if n == 0:
            raise ValueError("no training windows to fit the ridge baseline on")
        self.input_mean, self.target_mean = sums[0] / n, sums[1] / n
        centred_gram = gram - n * np.outer(self.input_mean, self.input_mean)
        centred_cross = cross - n * np.outer(self.input_mean, self.target_mean)
        penalty = self.alpha * np.eye(len(centred_gram))
        self.coef = scipy.linalg.solve(centred_gram + penalty, centred_cross, assume_a="sym")
        return self

    def predict(self, windows: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(n, R, F) prediction: the fitted values in the masked rows' target columns, else 0."""
        if self.coef is None:
            raise RuntimeError("fit the ridge baseline before predicting")
        x = self.inputs(windows, mask)
        fitted = (x - self.input_mean) @ self.coef + self.target_mean
        prediction = np.zeros(windows.shape, dtype=np.float32)
        rows = np.zeros(windows.shape[:2], dtype=bool)
        rows[:, mask] = True
        block = prediction[rows]
        block[:, self.targets] = fitted
        prediction[rows] = block
        return prediction
