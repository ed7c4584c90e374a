"""Labels for training heads: vector features and label rasters onto the image grid, spatial splits."""

from __future__ import annotations

from dinogeo.labels.rasters import LabelRaster
from dinogeo.labels.split import BlockSplit, block_split, chip_windows
from dinogeo.labels.vectors import IGNORE_INDEX, VectorLabels, rasterize_labels, read_vector_labels

__all__ = [
    "IGNORE_INDEX",
    "BlockSplit",
    "LabelRaster",
    "VectorLabels",
    "block_split",
    "chip_windows",
    "rasterize_labels",
    "read_vector_labels",
]
