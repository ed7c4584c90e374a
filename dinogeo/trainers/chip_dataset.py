"""Labelled chips as a dataset: the image (or date pair), the labels and the valid mask of a window.

Samples are dicts: ``image`` (C, h, w) float32 (``image1``/``image2`` for change), ``mask``
(h, w) class indices with ``IGNORE_INDEX`` where unlabelled (uint8 -> int64) or heights float32
with NaN where unknown, and ``valid`` (h, w) bool.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from rasterio.windows import Window
from torch.utils.data import Dataset

from dinogeo.data.sample_types import LabeledSample
from dinogeo.labels.vectors import IGNORE_INDEX
from dinogeo.trainers.chip_labels import Labels
from dinogeo.trainers.imagery import Scene

__all__ = ["Chip", "LabeledChipDataset"]


@dataclass(frozen=True)
class Chip:
    """One chip: scene index and window on that scene's grid."""

    scene: int
    window: Window


class LabeledChipDataset(Dataset[LabeledSample]):
    """Chips of labelled scenes.

    Args:
        readers: one image reader per scene (index = scene), a tuple of two for change pairs.
        labels: one :class:`Labels` per scene.
        chips: the chips.
        augment: random flips and 90-degree rotations.
    """

    def __init__(
        self,
        readers: Sequence[Scene],
        labels: Sequence[Labels],
        chips: Sequence[Chip],
        *,
        augment: bool = False,
    ) -> None:
        self.readers = list(readers)
        self.labels = list(labels)
        self.chips = list(chips)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.chips)

    def __getitem__(self, index: int) -> LabeledSample:
        chip = self.chips[index]
        reader = self.readers[chip.scene]
        labels = self.labels[chip.scene]
        mask = labels.read(chip.window)
        arrays: dict[str, np.ndarray] = {}
        if isinstance(reader, tuple):
            arrays["image1"], valid1 = reader[0].read(chip.window)
            arrays["image2"], valid2 = reader[1].read(chip.window)
            valid = valid1 & valid2
        else:
            arrays["image"], valid = reader.read(chip.window)
        mask = np.where(valid, mask, IGNORE_INDEX if labels.task.is_classification else np.nan)
        arrays["mask"], arrays["valid"] = mask, valid
        if self.augment:
            # drawn from torch's generator, so that seed_everything (and the DataLoader's
            # per-worker seeding) makes the flips, and so a run, reproducible
            fresh = int(torch.randint(0, 2**62, ()).item())
            arrays = _augment(arrays, np.random.default_rng(fresh))
        out = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
        if labels.task.is_classification:
            out["mask"] = out["mask"].long()
        return cast(LabeledSample, out)


def _augment(arrays: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    out = {}
    for key, a in arrays.items():
        a = np.rot90(a, k, axes=(-2, -1))
        out[key] = a[..., ::-1] if flip else a
    return out
