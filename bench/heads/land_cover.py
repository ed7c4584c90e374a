"""Land-cover rows shared by the Aberystwyth and North Carolina tasks."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from rasterio.windows import Window

from dinogeo.labels import IGNORE_INDEX
from dinogeo.models.task_card import load_task_card
from dinogeo.trainers.datamodule import LabeledChipDataModule
from dinogeo.trainers.feature_cache import CachedFeatureDataModule
from dinogeo.trainers.land_cover import LandCoverTask

from . import baselines
from .common import (
    Settings,
    finetune_config,
    fit_chip_heads,
    full,
    head_row,
    pixels,
    row,
    validate,
)

# (image pixels (N, C), class indices (N,)) the per-pixel baseline trains on
TrainPixels = Callable[[LabeledChipDataModule], tuple[np.ndarray, np.ndarray]]


def val_pixels(dm: CachedFeatureDataModule) -> tuple[np.ndarray, np.ndarray]:
    """The labelled pixels of the validation chips the heads are scored on: (N, C), (N,)."""
    assert dm.val_pool is not None
    xs, ys = [], []
    for sample in dm.val_pool.samples:
        mask = sample["mask"].numpy().ravel()
        keep = mask != IGNORE_INDEX
        xs.append(pixels(sample["image"].numpy())[keep])
        ys.append(mask[keep])
    return np.concatenate(xs), np.concatenate(ys)


def labelled_pixels(
    dm: LabeledChipDataModule, *, part: str | None, labels_of: str = "train_set"
) -> tuple[np.ndarray, np.ndarray]:
    """Labelled pixels (N, C) and classes (N,) of the whole image over valid imagery.

    ``part``: ``"train"`` keeps the training blocks of the spatial split, None every block;
    ``labels_of``: the data set whose labels are read.
    """
    dataset = getattr(dm, labels_of)
    reader = dataset.readers[0]
    image, valid = full(reader)
    labels = dataset.labels[0].read(Window(0, 0, reader.width, reader.height))
    ok = (labels != IGNORE_INDEX) & valid
    if part is not None:
        ok &= dm.splits[0].mask(part)
    return pixels(image)[ok.ravel()], labels[ok].astype(np.int64)


def land_cover_rows(
    settings: Settings, config: str, title: str, train_pixels: TrainPixels
) -> list[dict]:
    """Heads on every backbone and seed, and the per-pixel baseline on the same pixels."""
    model_args, data_args, _ = finetune_config(config, settings.shared)
    task_card = load_task_card(data_args["task"])
    rows: list[dict] = []
    heads = fit_chip_heads(settings, title, LandCoverTask, model_args, data_args)
    for label, seed, task, cached in heads:
        rows.append(head_row(title, label, seed, task, validate(task, cached)))
    # the baseline on the pixels the heads are scored on (a convex fit: the same for every seed)
    x, y = train_pixels(cached.inner)
    layer = baselines.softmax_regression(x, y, task_card.num_outputs)
    xv, yv = val_pixels(cached)
    m = baselines.class_metrics(task_card, baselines.classify(layer, xv), yv)
    rows.extend(row(title, baselines.SOFTMAX, s, m) for s in settings.seeds)
    return rows
