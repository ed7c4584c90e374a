"""Swiss canopy height (SWISSIMAGE RGB + LiDAR CHM, held-out blocks), also scored cross-site.

The heads and the ridge baseline are trained on the Swiss orthophoto only. The cross-site rows
score the same fitted heads and baseline on the Kootenay (British Columbia) RGB orthophoto and
CHM of ``../shared/eval`` once, after everything is fixed: that data is never used for tuning,
selection or thresholds (``../shared/eval/README.md``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from dinogeo.data.imagery_spec import ImagerySpec
from dinogeo.models.card import WeightCard
from dinogeo.models.task_card import load_task_card
from dinogeo.trainers.canopy_height import CanopyHeightTask
from dinogeo.trainers.datamodule import LabeledChipDataModule
from dinogeo.trainers.feature_cache import CachedFeatureDataModule
from dinogeo.trainers.imagery import ImageReader

from . import baselines
from .common import (
    Settings,
    finetune_config,
    fit_chip_heads,
    full,
    head_row,
    pixels,
    predict_tiled,
    row,
    validate,
)

TITLE = "Swiss canopy height (spatial split)"
CROSS = "Kootenay canopy height (cross-site, ../shared/eval)"
KOOTENAY = "kootenay-ortho-chm-foresttools"


def _val_pixels(dm: CachedFeatureDataModule) -> tuple[np.ndarray, np.ndarray]:
    assert dm.val_pool is not None
    xs, ys = [], []
    for sample in dm.val_pool.samples:
        mask = sample["mask"].numpy().ravel()
        keep = np.isfinite(mask)
        xs.append(pixels(sample["image"].numpy())[keep])
        ys.append(mask[keep])
    return np.concatenate(xs), np.concatenate(ys)


def kootenay(eval_dir: Path) -> tuple[Path, Path]:
    """The Kootenay orthophoto and canopy height model."""
    folder = eval_dir / KOOTENAY
    return folder / "kootenayOrtho_from_rda.tif", folder / "kootenayCHM.tif"


def kootenay_data(eval_dir: Path, card: WeightCard) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Kootenay orthophoto normalised for ``card`` (C, H, W), reference heights (H, W) and
    the pixels to score (valid imagery, finite non-negative reference)."""
    ortho, chm = kootenay(eval_dir)
    reader = ImageReader(ortho, card, ImagerySpec(sensor="rgb_uint8"))
    image, valid = full(reader)
    with rasterio.open(chm) as src:
        heights = src.read(1, window=Window(0, 0, reader.width, reader.height), masked=True)
    ref = heights.filled(np.nan).astype(np.float32)
    return image, ref, valid & np.isfinite(ref) & (ref >= 0)


def run(settings: Settings, eval_dir: Path | None = None) -> list[dict]:
    """Rows of the heads and the ridge baseline; cross-site rows when ``eval_dir`` is given."""
    model_args, data_args, _ = finetune_config("canopy_height_swiss", settings.shared)
    task_card = load_task_card("canopy_height")
    rows: list[dict] = []
    heads = fit_chip_heads(settings, TITLE, CanopyHeightTask, model_args, data_args)
    for label, seed, task, cached in heads:
        rows.append(head_row(TITLE, label, seed, task, validate(task, cached)))
        if eval_dir is not None:
            image, ref, ok = kootenay_data(eval_dir, task.weight_card)
            pred = predict_tiled(task, cached.cache, image, chip=int(data_args["chip_size"]))[0]
            metrics = baselines.height_metrics(task_card, pred[ok], ref[ok])
            rows.append(head_row(CROSS, label, seed, task, metrics))
    # ridge on the training blocks' pixels (selection blocks included), scored on the heads'
    # validation pixels
    dm: LabeledChipDataModule = cached.inner
    assert dm.train_set is not None
    reader = dm.train_set.readers[0]
    image, valid = full(reader)
    target = dm.train_set.labels[0].read(Window(0, 0, reader.width, reader.height))
    ok = np.isfinite(target) & valid & dm.splits[0].mask("train")
    coef = baselines.ridge(pixels(image)[ok.ravel()], target[ok])
    xv, yv = _val_pixels(cached)
    m = baselines.height_metrics(
        task_card, baselines.ridge_predict(coef, xv, task_card.valid_range), yv
    )
    rows.extend(row(TITLE, baselines.RIDGE, s, m) for s in settings.seeds)
    if eval_dir is not None:
        image, ref, ok = kootenay_data(eval_dir, reader.card)
        pred = baselines.ridge_predict(coef, pixels(image)[ok.ravel()], task_card.valid_range)
        m = baselines.height_metrics(task_card, pred, ref[ok])
        rows.extend(row(CROSS, baselines.RIDGE, s, m) for s in settings.seeds)
    return rows
