"""Change detection on synthetic pairs: trained on Aberystwyth, scored on a held-out Rufiji scene.

Date 2 is date 1 with real patches from elsewhere pasted in (the change mask) and a global
radiometric jitter (not change); see ``dinogeo.trainers.synthetic_change``. The heads train on a
fixed pool of 128 pairs of 32 pixels (drawn once, shared by the seeds and the baseline) with
random flips/rotations; the 64 validation pairs come from the held-out scene and are fixed by
seed 0. The 64 selection pairs that pick each head's best step come from a third scene, neither
training nor test: the Sentinel-2 L1C tile of the Virginia coast (2016-01-12, top-of-atmosphere
reflectance x 10000, read with the ``sentinel2_l1c`` sensor), so that the choice sees a change of
place, season and processing as the test scene does. Pairs from held-out blocks of the training
scene (the previous choice) scored F1 0.96-0.98 at every step and could not tell the heads apart.
The config's 64-pixel chips cost 6x more backbone time per chip at patch 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from dinogeo.models.task_card import load_task_card
from dinogeo.trainers.base import DenseTask
from dinogeo.trainers.change import ChangeTask
from dinogeo.trainers.feature_cache import CachedFeatureDataModule, FeatureCache
from dinogeo.trainers.synthetic_change import SyntheticChangeDataModule

from . import baselines
from .common import Settings, finetune_config, fit_seeds, head_row, linked, row, validate

TITLE = "Synthetic change (held-out Rufiji scene)"
POOL = 128
CHIP = 32
#: the selection scene (neither the training nor the test scene), with its sensor
SELECT = "sentinel2-l1c-virginia-sattestdata/S2_18SVG_20160112_20m_10band_crop.tif"
SELECT_SENSOR = "sentinel2_l1c"


@dataclass
class ChangeHeads:
    """The fitted change heads (per backbone label: (seed, task, feature cache)) and baseline."""

    heads: dict[str, list[tuple[int, DenseTask, FeatureCache]]] = field(default_factory=dict)
    baseline: torch.nn.Linear | None = None


def _pairs(dm: CachedFeatureDataModule, pool: str) -> tuple[np.ndarray, np.ndarray]:
    data = getattr(dm, pool)
    x = [baselines.change_features(s["image1"].numpy(), s["image2"].numpy()) for s in data.samples]
    y = [s["mask"].numpy().ravel() for s in data.samples]
    return np.concatenate(x), np.concatenate(y)


def run(settings: Settings) -> tuple[list[dict], ChangeHeads]:
    """Rows of the heads and the per-pixel baseline; the fitted heads for the Rufiji task."""
    model_args, data_args, _ = finetune_config("change_synthetic", settings.shared)
    model_args["features"] = settings.features
    task_card = load_task_card("change")
    rows: list[dict] = []
    fitted = ChangeHeads()
    for label, path in settings.backbones.items():
        data = {
            **data_args,
            "backbone": path,
            "chips_per_epoch": POOL,
            "chip_size": CHIP,
        }
        if settings.select_fraction:
            data.update(select_images=[str(settings.shared / SELECT)], select_sensor=SELECT_SENSOR)
        dm = SyntheticChangeDataModule(**data)
        args = {**model_args, **linked(data)}
        fitted.heads[label] = []
        for seed, task, cached in fit_seeds(
            settings, TITLE, label, ChangeTask, args, dm, pool_size=POOL
        ):
            rows.append(head_row(TITLE, label, seed, task, validate(task, cached)))
            fitted.heads[label].append((seed, task, cached.cache))
    # the baseline on the same training pool and validation pairs (convex: seed-free)
    x, y = _pairs(cached, "train_pool")
    fitted.baseline = baselines.softmax_regression(x, y, task_card.num_outputs)
    xv, yv = _pairs(cached, "val_pool")
    m = baselines.class_metrics(task_card, baselines.classify(fitted.baseline, xv), yv)
    rows.extend(row(TITLE, baselines.CHANGE, s, m) for s in settings.seeds)
    return rows, fitted
