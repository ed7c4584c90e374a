"""A small labelled probe set (chips + majority class) for the kNN monitor of pretraining."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.windows import Window
from torch import Tensor

from dinogeo.data.opener import open_source
from dinogeo.data.sensors import Sensor
from dinogeo.errors import LabelError

__all__ = ["load_probe_set"]


def load_probe_set(
    image: str | Path,
    labels: str | Path,
    sensor: Sensor,
    chip_size: int = 32,
    min_labelled: float = 0.5,
) -> tuple[Tensor, Tensor, Tensor]:
    """Cut a labelled raster into chips labelled by their majority class.

    The chips of the left half of the image are the kNN reference set, those of the right half
    the queries (a spatial split, so neighbouring chips do not leak across the split).

    Args:
        image: the raster (read with ``sensor``'s bands and normalisation).
        labels: a single-band class raster on the same grid (0 = no label).
        sensor: the sensor spec of the run.
        chip_size: chip side in pixels.
        min_labelled: chips with a smaller labelled fraction are skipped.

    Returns:
        ``(chips (N, C, s, s) float32, labels (N,) int64, is_reference (N,) bool)``.

    Raises:
        LabelError: if the grids differ or too few chips are labelled.
    """
    source = open_source(image, sensor=sensor)
    with rasterio.open(labels) as ds:
        if (ds.width, ds.height) != (source.width, source.height):
            raise LabelError(
                f"{labels}: label grid {ds.width}x{ds.height} differs from the image "
                f"{source.width}x{source.height}; resample the labels onto the image grid"
            )
        label = ds.read(1)
    chips, classes, is_ref = [], [], []
    half = source.width // 2
    for row in range(0, source.height - chip_size + 1, chip_size):
        for col in range(0, source.width - chip_size + 1, chip_size):
            if col < half < col + chip_size:
                continue  # straddles the split
            patch = label[row : row + chip_size, col : col + chip_size]
            values = patch[patch > 0]
            if values.size < min_labelled * patch.size:
                continue
            data, _ = source.read_normalized(Window(col, row, chip_size, chip_size))
            chips.append(data)
            classes.append(int(np.bincount(values.astype(np.int64)).argmax()))
            is_ref.append(col + chip_size <= half)
    refs = sum(is_ref)
    if refs < 2 or len(is_ref) - refs < 2:
        raise LabelError(
            f"{labels}: only {len(is_ref)} labelled {chip_size}-pixel chips; use a smaller "
            "probe_chip_size or a larger labelled raster"
        )
    return (
        torch.from_numpy(np.stack(chips)).float(),
        torch.tensor(classes, dtype=torch.long),
        torch.tensor(is_ref, dtype=torch.bool),
    )
