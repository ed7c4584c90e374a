"""Labels of one image, vector or raster, read on chips of the image's grid.

:class:`Labels` opens a label raster (class indices or heights, resampled onto the image grid)
or a vector file (GeoPackage/Shapefile/GeoJSON/CSV of polygons and points, rasterised per chip)
for one image, checks that it overlaps the image, and reads the labels of any window of the
image grid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from dinogeo.errors import LabelError
from dinogeo.labels.label_spec import LabelSpec
from dinogeo.labels.rasters import LabelRaster
from dinogeo.labels.sources import LabelSource, is_raster_source
from dinogeo.labels.vectors import IGNORE_INDEX, VectorLabels, rasterize_labels, read_vector_labels
from dinogeo.models.task_card import TaskCard
from dinogeo.trainers.imagery import ImageReader

__all__ = ["Labels"]


class Labels:
    """Labels of one image, vector or raster, read on chips of the image grid.

    Args:
        path: label raster, vector file or QGIS layer source (``labels.gpkg|layername=train``),
            or a source parsed already.
        task: the task card.
        reader: the image the labels belong to.
        spec: how the labels are read (field, layer, CRS, point radius, option names).
    """

    def __init__(
        self,
        path: str | Path | LabelSource,
        task: TaskCard,
        reader: ImageReader,
        spec: LabelSpec | None = None,
    ) -> None:
        spec = spec or LabelSpec()
        self.spec = spec
        self.source = path if isinstance(path, LabelSource) else spec.source(path)
        self.path = self.source.path
        self.task = task
        self.reader = reader
        self.vector: VectorLabels | None = None
        self.raster: LabelRaster | None = None
        if not is_raster_source(self.source):
            self.vector = read_vector_labels(
                self.source,
                task,
                field=spec.field,
                target_crs=reader.crs,
                crs=spec.crs,
                keys=spec.keys,
            )
            bounds = self.vector.bounds
        else:
            self.raster = LabelRaster(self.path, task)
            bounds = self.raster.bounds_in(reader.crs)
        left, bottom, right, top = reader.bounds
        if bounds[0] >= right or bounds[2] <= left or bounds[1] >= top or bounds[3] <= bottom:
            raise LabelError(
                f"{self.path}: the labels (bounds {tuple(round(b, 2) for b in bounds)} in the "
                f"imagery CRS) do not overlap the imagery {reader.path} (bounds "
                f"{tuple(round(b, 2) for b in reader.bounds)}). Fix: check that both files cover "
                "the same area and that the label CRS is declared correctly"
            )

    def read(self, window: Window) -> np.ndarray:
        """Labels of one window of the image grid (class indices or heights)."""
        transform = window_transform(window, self.reader.transform)
        width, height = int(window.width), int(window.height)
        if self.vector is not None:
            return rasterize_labels(
                self.vector, transform, width, height, point_radius=self.spec.point_radius
            )
        assert self.raster is not None  # one of vector/raster is always set
        return self.raster.read(self.reader.crs, transform, width, height)

    def labelled(self, labels: np.ndarray) -> np.ndarray:
        """Boolean mask of labelled pixels of an array returned by :meth:`read`."""
        if self.task.is_classification:
            labelled: np.ndarray = labels != IGNORE_INDEX
            return labelled
        return np.isfinite(labels)
