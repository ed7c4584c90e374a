"""Label rasters read onto the imagery's grid: class maps (nearest) and heights (average).

A label raster rarely shares the imagery's grid exactly: another CRS, another resolution, a
shifted origin. :class:`LabelRaster` reads any chip of the imagery grid from it, reprojecting with
nearest-neighbour resampling for classes and area-average for continuous targets (heights), and
maps class values to task channel indices (unknown codes raise, nodata becomes ignored).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window

from dinogeo.errors import LabelError
from dinogeo.labels.vectors import IGNORE_INDEX
from dinogeo.models.task_card import TaskCard

__all__ = ["LabelRaster"]


class LabelRaster:
    """A class or height raster, read chip by chip onto another grid.

    Args:
        path: the label GeoTIFF (single band).
        task: task card: segmentation/change cards map values to channel indices, regression cards
            keep values (float32, NaN where nodata).
        nodata: override the file's nodata value.

    Raises:
        LabelError: unreadable file, no CRS, or several bands.
    """

    def __init__(self, path: str | Path, task: TaskCard, *, nodata: float | None = None) -> None:
        self.path = Path(path)
        self.task = task
        if not self.path.exists():
            raise LabelError(f"label raster {self.path} does not exist: check the path")
        try:
            with rasterio.open(self.path) as ds:
                self.crs = ds.crs
                self.transform: Affine = ds.transform
                self.width, self.height, self.count = ds.width, ds.height, ds.count
                self.bounds = tuple(ds.bounds)
                self.nodata = ds.nodata if nodata is None else nodata
        except RasterioIOError as err:
            raise LabelError(f"{self.path}: cannot open the label raster ({err})") from err
        if self.crs is None:
            raise LabelError(
                f"{self.path}: the label raster has no CRS, so it cannot be placed on the imagery. "
                "Fix: assign one (QGIS: Raster > Projections > Assign Projection, or "
                "gdal_edit.py -a_srs EPSG:XXXX)"
            )
        if self.count != 1:
            raise LabelError(
                f"{self.path}: label rasters must have one band, this one has {self.count}; "
                "extract the label band first (gdal_translate -b N)"
            )
        self._handle: tuple[int, Any] | None = None
        self._lut: np.ndarray | None = None
        if task.is_classification:
            lut = np.full(max(max(task.class_values), 0) + 1, IGNORE_INDEX, dtype=np.uint8)
            for i, v in enumerate(task.class_values):
                if v >= 0:
                    lut[v] = i
            self._lut = lut

    def _dataset(self) -> Any:
        """The open dataset of this process (handles are never shared across a fork)."""
        pid = os.getpid()
        if self._handle is None or self._handle[0] != pid:
            try:
                self._handle = (pid, rasterio.open(self.path))
            except RasterioIOError as err:
                raise LabelError(f"{self.path}: cannot open the label raster ({err})") from err
        return self._handle[1]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handle"] = None
        return state

    @property
    def is_classes(self) -> bool:
        """True when the raster holds class values (nearest resampling)."""
        return self.task.is_classification

    def bounds_in(self, crs: CRS) -> tuple[float, float, float, float]:
        """The raster's bounds transformed to ``crs``."""
        left, bottom, right, top = transform_bounds(self.crs, crs, *self.bounds, densify_pts=21)
        return float(left), float(bottom), float(right), float(top)

    def _same_grid(self, crs: CRS, transform: Affine) -> Window | None:
        if crs != self.crs:
            return None
        a, b, c, d, e, f = transform[:6]
        sa, sb, sc, sd, se, sf = self.transform[:6]
        if not np.allclose([a, b, d, e], [sa, sb, sd, se], rtol=1e-9, atol=1e-12):
            return None
        col = (c - sc) / sa
        row = (f - sf) / se
        if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
            return None
        return Window(round(col), round(row), 0, 0)

    def read(self, crs: CRS, transform: Affine, width: int, height: int) -> np.ndarray:
        """Read the labels of one chip of another grid.

        Args:
            crs: the chip grid's CRS.
            transform: the chip's affine transform.
            width: chip width in pixels.
            height: chip height in pixels.

        Returns:
            Class rasters: ``uint8`` channel indices with :data:`IGNORE_INDEX` where unlabelled.
            Regression rasters: ``float32`` values with NaN where nodata or outside the raster.

        Raises:
            LabelError: if a class raster holds a value that is not a task-card class.
        """
        origin = self._same_grid(crs, transform)
        ds = self._dataset()
        if origin is not None:
            data = np.full((height, width), np.nan, dtype=np.float64)
            c0, r0 = int(origin.col_off), int(origin.row_off)
            ic0, ir0 = max(c0, 0), max(r0, 0)
            ic1, ir1 = min(c0 + width, self.width), min(r0 + height, self.height)
            if ic1 > ic0 and ir1 > ir0:
                inner = ds.read(1, window=Window(ic0, ir0, ic1 - ic0, ir1 - ir0))
                data[ir0 - r0 : ir1 - r0, ic0 - c0 : ic1 - c0] = inner
        else:
            data = np.full((height, width), np.nan, dtype=np.float64)
            reproject(
                source=rasterio.band(ds, 1),
                destination=data,
                src_nodata=self.nodata,
                dst_nodata=np.nan,
                dst_transform=transform,
                dst_crs=crs,
                resampling=Resampling.nearest if self.is_classes else Resampling.average,
            )
        outside = np.isnan(data)
        if self.nodata is not None and not np.isnan(self.nodata):
            outside |= data == self.nodata
        if not self.is_classes:
            values = data.astype(np.float32)
            values[outside] = np.nan
            return values
        return self._to_index(np.where(outside, -1, data))

    def _to_index(self, data: np.ndarray) -> np.ndarray:
        assert self._lut is not None  # classification cards always build a lookup table
        codes = np.rint(data).astype(np.int64)
        out = np.full(codes.shape, IGNORE_INDEX, dtype=np.uint8)
        inside = codes >= 0
        known = inside & (codes < len(self._lut))
        out[known] = self._lut[codes[known]]
        bad = inside & ((codes >= len(self._lut)) | (out == IGNORE_INDEX))
        if bad.any():
            unknown = sorted({int(v) for v in np.unique(codes[bad])})
            known_txt = ", ".join(f"{c.value}={c.name}" for c in self.task.classes)
            raise LabelError(
                f"{self.path}: value(s) {unknown[:20]} are not classes of task card "
                f"{self.task.name!r} ({known_txt}) nor the raster's nodata ({self.nodata}). "
                "Fix: set the raster's nodata, reclassify those values, or use a matching task card"
            )
        return out
