"""Rufiji consistency: predicted change between two clear dates vs predicted land-cover flips.

A land-cover head is trained on the first date with the 1997 map (held-out blocks give its
accuracy); the change heads come from the synthetic change task. Where land cover flips between
the dates, change should be predicted and vice versa: Cohen's kappa between the two binary maps
measures their agreement (not an accuracy: there is no change reference).
"""

from __future__ import annotations

import numpy as np
from rasterio.windows import Window

from dinogeo.labels import IGNORE_INDEX
from dinogeo.trainers.datamodule import LabeledChipDataModule
from dinogeo.trainers.imagery import ImageReader
from dinogeo.trainers.land_cover import LandCoverTask

from . import baselines, common
from .change import CHIP, ChangeHeads
from .common import Settings, fit_chip_heads, head_row, pixels, predict_tiled, row

RUFIJI = "sentinel2-timeseries-rufiji-rsgislib"
S2_BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]
DATE_A, DATE_B = "20160710", "20190615"
TITLE = f"Rufiji {DATE_A} vs {DATE_B}: change vs land-cover flips"
METHOD = "per-pixel softmax regressions (land cover + change)"


def agreement(
    lc_a: np.ndarray, lc_b: np.ndarray, change: np.ndarray, ok: np.ndarray
) -> dict[str, float]:
    """Kappa and conditional rates between predicted change and land-cover flips over ``ok``."""
    flip, ch = (lc_a != lc_b)[ok], change[ok]
    p_change, p_flip = float(ch.mean()), float(flip.mean())
    both = float((ch & flip).mean())
    expected = p_change * p_flip + (1 - p_change) * (1 - p_flip)
    observed = float((ch == flip).mean())
    return {
        "kappa": (observed - expected) / (1 - expected) if expected < 1 else float("nan"),
        "changed": p_change,
        "lc_flipped": p_flip,
        "P(change|flip)": both / p_flip if p_flip else float("nan"),
        "P(flip|change)": both / p_change if p_change else float("nan"),
    }


def run(settings: Settings, change: ChangeHeads) -> list[dict]:
    """Rows of the heads (per backbone and seed) and of the per-pixel baselines."""
    folder = settings.shared / RUFIJI
    date_a = folder / f"SEN2_{DATE_A}_T37MEM_20m_10band.tif"
    date_b = folder / f"SEN2_{DATE_B}_T37MEM_20m_10band.tif"
    model_args, _, _ = common.finetune_config("land_cover_aberystwyth", settings.shared)
    data_args = {
        "image": str(date_a),
        "labels": str(folder / "base_1997_class_on_ts_grid.tif"),
        "task": "land_cover_rufiji1997",
        "sensor": "sentinel2_l2a",
        "bands": S2_BANDS,
        "scale": 1e-3,
        "offset": 0.0,
        "chip_size": 32,
        "block_size": 64,
        "val_fraction": 0.25,
    }
    rows: list[dict] = []
    fits = fit_chip_heads(settings, TITLE, LandCoverTask, model_args, data_args, adapt=False)
    for label, seed, task, cached in fits:
        ia, ib, ok, labels, held = _dates(cached.inner, date_a, date_b)
        lc_a = predict_tiled(task, cached.cache, ia, chip=32).argmax(0)
        lc_b = predict_tiled(task, cached.cache, ib, chip=32).argmax(0)
        change_task, change_cache = next((t, c) for s, t, c in change.heads[label] if s == seed)
        chg = predict_tiled(change_task, change_cache, ia, ib, chip=CHIP).argmax(0) == 1
        acc = float((lc_a[held] == labels[held]).mean())
        metrics = {"lc_acc": acc, **agreement(lc_a, lc_b, chg, ok)}
        rows.append(head_row(TITLE, label, seed, task, metrics))
    dm: LabeledChipDataModule = cached.inner
    ia, ib, ok, labels, held = _dates(dm, date_a, date_b)
    train = (labels != IGNORE_INDEX) & dm.splits[0].mask("train") & ok
    layer = baselines.softmax_regression(pixels(ia)[train.ravel()], labels[train], 3)
    shape = ok.shape
    lc_a = baselines.classify(layer, pixels(ia)).argmax(1).numpy().reshape(shape)
    lc_b = baselines.classify(layer, pixels(ib)).argmax(1).numpy().reshape(shape)
    assert change.baseline is not None
    chg = baselines.classify(change.baseline, baselines.change_features(ia, ib)).argmax(1)
    chg = chg.numpy().reshape(shape) == 1
    acc = float((lc_a[held] == labels[held]).mean())
    m = {"lc_acc": acc, **agreement(lc_a, lc_b, chg, ok)}
    rows.extend(row(TITLE, METHOD, s, m) for s in settings.seeds)
    return rows


def _dates(dm: LabeledChipDataModule, date_a, date_b):
    """Both dates normalised for the backbone, the pixels valid on both, the 1997 classes and
    the held-out labelled pixels."""
    assert dm.train_set is not None
    card = dm.train_set.readers[0].card
    imagery = dm.imagery
    (ia, va), (ib, vb) = (
        common.full(ImageReader(date_a, card, imagery)),
        common.full(ImageReader(date_b, card, imagery)),
    )
    reader = dm.train_set.readers[0]
    labels = dm.train_set.labels[0].read(Window(0, 0, reader.width, reader.height))
    ok = va & vb
    held = (labels != IGNORE_INDEX) & va & dm.splits[0].mask("val")
    return ia, ib, ok, labels.astype(np.int64), held
