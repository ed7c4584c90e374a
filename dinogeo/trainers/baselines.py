"""Per-pixel baselines on the raw bands: what a head on a backbone has to beat.

A multinomial logistic regression on the normalised band values of single pixels (no spatial
context, no backbone), trained full-batch with L-BFGS and balanced class weights. The demo and
``bench/heads`` report it next to every land-cover result, measured the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from rasterio.windows import Window

from dinogeo.data.opener import open_source
from dinogeo.errors import NoValidDataError
from dinogeo.labels.label_spec import LabelSpec
from dinogeo.labels.vectors import IGNORE_INDEX, rasterize_labels, read_vector_labels
from dinogeo.models.task_card import load_task_card
from dinogeo.trainers.metrics import TaskMetrics

__all__ = ["fit_softmax_regression", "pixel_baseline"]


def fit_softmax_regression(
    x: np.ndarray,
    y: np.ndarray,
    k: int,
    *,
    l2: float = 1e-3,
    max_iter: int = 200,
    balanced: bool = True,
) -> torch.nn.Linear:
    """Fit a multinomial logistic regression, full batch, with balanced class weights.

    Args:
        x: ``(N, F)`` features.
        y: ``(N,)`` class indices in ``[0, k)``.
        k: number of classes.
        l2: weight penalty.
        max_iter: L-BFGS iterations.
        balanced: weight classes by inverse frequency (False: every sample alike, which keeps
            the predicted probabilities calibrated, e.g. over height bins).

    Returns:
        The fitted linear layer (logits = layer(x)).
    """
    torch.manual_seed(0)
    xt, yt = torch.from_numpy(np.asarray(x, np.float32)), torch.from_numpy(y.astype(np.int64))
    layer = torch.nn.Linear(xt.shape[1], k)
    counts = torch.bincount(yt, minlength=k).float()
    weight = torch.where(counts > 0, counts.sum() / (k * counts.clamp(min=1)), torch.zeros(k))
    if not balanced:
        weight = torch.ones(k)
    opt = torch.optim.LBFGS(layer.parameters(), max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(layer(xt), yt, weight=weight)
        loss = loss + l2 * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return layer


def _labelled_pixels(
    image: np.ndarray, valid: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    keep = valid & (labels != IGNORE_INDEX)
    return image[:, keep].T, labels[keep]


def pixel_baseline(
    image: str | Path,
    train_labels: str | Path,
    val_labels: str | Path,
    *,
    task: str,
    sensor: str | None = None,
    field: str | None = None,
    point_radius: float = 0.0,
) -> dict[str, float]:
    """Train a per-pixel linear classifier on vector labels and validate it on others.

    Args:
        image: the raster (read whole: meant for scenes of a few megapixels).
        train_labels: polygons/points to train on (any CRS: reprojected to the image's).
        val_labels: independent polygons/points to validate on.
        task: the task card name or path (class mapping).
        sensor: the image's sensor (normalisation); generic by dtype when None.
        field: the class attribute of both vector files (guessed when None).
        point_radius: disk radius in pixels of point labels.

    Returns:
        The task's metrics on the validation labels (as :class:`TaskMetrics` reports them).

    Raises:
        NoValidDataError: no labelled pixel over valid imagery in one of the label files.
    """
    card = load_task_card(task)
    spec = LabelSpec(field=field, point_radius=point_radius)
    src = open_source(image, sensor=sensor)
    pixels, valid = src.read_normalized(Window(0, 0, src.width, src.height))

    def burn(path: str | Path) -> np.ndarray:
        vec = read_vector_labels(path, card, field=spec.field, target_crs=src.crs)
        return rasterize_labels(
            vec, src.transform, src.width, src.height, point_radius=spec.point_radius
        )

    x, y = _labelled_pixels(pixels, valid, burn(train_labels))
    xv, yv = _labelled_pixels(pixels, valid, burn(val_labels))
    for name, arr, path in (("training", y, train_labels), ("validation", yv, val_labels)):
        if arr.size == 0:
            raise NoValidDataError(
                f"{path}: no {name} label falls on valid pixels of {image}; check that the "
                "labels overlap the imagery"
            )
    layer = fit_softmax_regression(x, y, card.num_outputs)
    with torch.no_grad():
        scores = layer(torch.from_numpy(np.asarray(xv, np.float32)))
    metrics = TaskMetrics(card)
    metrics.update(scores.T[None, :, None, :], torch.from_numpy(yv.astype(np.int64))[None, None])
    return metrics.compute()
