"""Heads on a frozen backbone: land cover, canopy height and change (LightningModules + data).

Names are imported on first use, so ``dinogeo.trainers.heads`` (needed to load model bundles)
does not import Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "CanopyHeightTask",
    "ChangePairDataModule",
    "ChangeTask",
    "DenseTask",
    "LabeledChipDataModule",
    "LandCoverTask",
    "SyntheticChangeDataModule",
    "evaluate_bundle",
]

_WHERE = {
    "CanopyHeightTask": "dinogeo.trainers.canopy_height",
    "ChangePairDataModule": "dinogeo.trainers.change_pairs",
    "ChangeTask": "dinogeo.trainers.change",
    "DenseTask": "dinogeo.trainers.base",
    "LabeledChipDataModule": "dinogeo.trainers.datamodule",
    "LandCoverTask": "dinogeo.trainers.land_cover",
    "SyntheticChangeDataModule": "dinogeo.trainers.synthetic_change",
    "evaluate_bundle": "dinogeo.trainers.evaluate",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'dinogeo.trainers' has no attribute {name!r}")
