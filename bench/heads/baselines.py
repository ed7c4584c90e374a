"""Per-pixel baselines on the raw (normalised) bands: what every head has to beat.

Softmax regression (``dinogeo.trainers.baselines.fit_softmax_regression``: full-batch L-BFGS,
balanced class weights) for classes and change, ridge regression for heights. Both are convex
fits with a unique optimum, so they do not depend on the seed: their standard deviation over
seeds is 0 unless their training data changes with the seed.
"""

from __future__ import annotations

import numpy as np
import torch

from dinogeo.models.task_card import TaskCard
from dinogeo.trainers.baselines import fit_softmax_regression
from dinogeo.trainers.metrics import TaskMetrics

from .common import pixels

SOFTMAX = "per-pixel softmax regression (raw bands)"
RIDGE = "per-pixel ridge regression (raw bands)"
CHANGE = "per-pixel softmax regression on [d1, d2, |d1-d2|]"


def softmax_regression(x: np.ndarray, y: np.ndarray, k: int) -> torch.nn.Linear:
    """Multinomial logistic regression of classes ``y`` (N,) on features ``x`` (N, F)."""
    return fit_softmax_regression(x, y.astype(np.int64), k, l2=1e-3)


def classify(layer: torch.nn.Linear, x: np.ndarray) -> torch.Tensor:
    """Class scores (N, K) of features (N, F)."""
    with torch.no_grad():
        return layer(torch.from_numpy(np.ascontiguousarray(x)).float())


def ridge(x: np.ndarray, y: np.ndarray, l2: float = 1e-3) -> np.ndarray:
    """Ridge regression coefficients (F + 1,) of targets ``y`` (N,) on features ``x`` (N, F)."""
    xa = np.hstack([x, np.ones((len(x), 1))]).astype(np.float64)
    return np.linalg.solve(xa.T @ xa + l2 * np.eye(xa.shape[1]), xa.T @ y.astype(np.float64))


def ridge_predict(coef: np.ndarray, x: np.ndarray, valid_range: tuple[float, float]) -> np.ndarray:
    """Heights from ridge coefficients, clipped to the task card's valid range."""
    xa = np.hstack([x, np.ones((len(x), 1))]).astype(np.float64)
    return np.clip(xa @ coef, *valid_range)


def change_features(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel [date 1, date 2, |date 1 - date 2|] of two (C, H, W) images."""
    pa, pb = pixels(a), pixels(b)
    return np.concatenate([pa, pb, np.abs(pa - pb)], axis=1)


def class_metrics(task: TaskCard, scores: torch.Tensor, target: np.ndarray) -> dict[str, float]:
    """Task metrics of class scores (N, K) against class indices (N,)."""
    metrics = TaskMetrics(task)
    metrics.update(
        scores.T[None, :, None, :], torch.from_numpy(target.astype(np.int64))[None, None, :]
    )
    return {k: float(v) for k, v in metrics.compute().items()}


def height_metrics(task: TaskCard, pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Task metrics of heights (N,) against reference heights (N,)."""
    metrics = TaskMetrics(task)
    metrics.update(
        torch.from_numpy(pred).float()[None, None, None],
        torch.from_numpy(target).float()[None, None],
    )
    return {k: float(v) for k, v in metrics.compute().items()}
