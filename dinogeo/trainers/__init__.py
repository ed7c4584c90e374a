"""Heads on a frozen backbone: land cover, canopy height and change (LightningModules + data).

The plain ``nn.Module`` heads these tasks train live in :mod:`dinogeo.models.heads`, so loading a
model bundle never imports Lightning.
"""

from __future__ import annotations

from dinogeo.trainers.base import DenseTask
from dinogeo.trainers.canopy_height import CanopyHeightTask
from dinogeo.trainers.change import ChangeTask
from dinogeo.trainers.change_pairs import ChangePairDataModule
from dinogeo.trainers.datamodule import LabeledChipDataModule
from dinogeo.trainers.evaluate import evaluate_bundle
from dinogeo.trainers.land_cover import LandCoverTask
from dinogeo.trainers.selection import BestOnSelection
from dinogeo.trainers.synthetic_change import SyntheticChangeDataModule

__all__ = [
    "BestOnSelection",
    "CanopyHeightTask",
    "ChangePairDataModule",
    "ChangeTask",
    "DenseTask",
    "LabeledChipDataModule",
    "LandCoverTask",
    "SyntheticChangeDataModule",
    "evaluate_bundle",
]
