"""Labels for training heads: vector features and label rasters onto the image grid, spatial splits.

Sources are read as QGIS writes them (layer URIs, GeoPackages with ``layer_styles``, CSV with WKT
or X/Y columns); validation labels are checked not to be the training labels.
"""

from __future__ import annotations

from dinogeo.labels.independence import check_independent
from dinogeo.labels.rasters import LabelRaster
from dinogeo.labels.sources import LabelKeys, LabelSource, parse_label_source, read_label_frame
from dinogeo.labels.split import BlockSplit, block_split, chip_windows
from dinogeo.labels.vectors import IGNORE_INDEX, VectorLabels, rasterize_labels, read_vector_labels

__all__ = [
    "IGNORE_INDEX",
    "BlockSplit",
    "LabelKeys",
    "LabelRaster",
    "LabelSource",
    "VectorLabels",
    "block_split",
    "check_independent",
    "chip_windows",
    "parse_label_source",
    "rasterize_labels",
    "read_label_frame",
    "read_vector_labels",
]
