"""The public contract of a windowed imagery source: what datasets, samplers and predictors read.

:class:`Source` is a :class:`typing.Protocol` met by :class:`~dinogeo.data.readers.RasterSource`
(GeoTIFF/COG, JPEG2000, VRT, world-file images) and :class:`~dinogeo.data.zarr_source.ZarrSource`
(a group of a zarr store); :func:`~dinogeo.data.opener.open_source` returns one. Code that reads
imagery takes a ``Source`` (or a sequence of them), never a concrete class, so a new storage
format only has to provide these members. :class:`Grid` is the part of it that grid comparisons
and warps need; :data:`CRSLike` is what a ``target_crs`` argument accepts. The protocol is ``runtime_checkable``:
``isinstance(x, Source)`` checks that every member is present (not their types).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from affine import Affine
from rasterio.coords import BoundingBox
from rasterio.crs import CRS
from rasterio.windows import Window

from dinogeo.data.sensors import Sensor

__all__ = ["CRSLike", "Grid", "Source"]

#: what a ``target_crs`` argument takes: a CRS, an EPSG code, or anything
#: ``rasterio.crs.CRS.from_user_input`` reads ("EPSG:32632", WKT, PROJ string, a PROJ JSON dict)
type CRSLike = CRS | int | str | dict[str, Any]


@runtime_checkable
class Grid(Protocol):
    """A raster grid: what comparing or aligning two images needs (sources and card images).

    Attributes:
        crs: the grid's CRS.
        transform: affine transform (pixel -> CRS coordinates).
        width: width in pixels.
        height: height in pixels.
    """

    crs: CRS
    transform: Affine
    width: int
    height: int


@runtime_checkable
class Source(Grid, Protocol):
    """A raster read by pixel windows on one grid, with its bands described by a sensor spec.

    Attributes:
        path: the file or ``store/group`` read.
        sensor: the spec of the returned bands, in output order (names, scale, offset, nodata).
        crs: CRS of the grid.
        transform: affine transform of the grid (pixel -> CRS coordinates).
        width: grid width in pixels.
        height: grid height in pixels.
        bounds: grid bounds in ``crs`` units.
        dtype: dtype of the raw values returned by :meth:`read`.
        nodata: DN marking missing pixels, or None.
        mask_kind: how validity is derived: ``"alpha"``, ``"nodata"``, ``"internal"`` or ``"none"``.
        storage_block: the storage block ``(rows, cols)`` reads decode (GeoTIFF tile or strip,
            zarr chunk), or None where unknown or warped (``chip_align: auto`` snaps to it).
    """

    path: Path
    sensor: Sensor
    crs: CRS
    transform: Affine
    width: int
    height: int
    bounds: BoundingBox
    dtype: np.dtype
    nodata: float | None
    mask_kind: str
    storage_block: tuple[int, int] | None

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size ``(x, y)`` of the grid in CRS units."""
        ...

    @property
    def count(self) -> int:
        """Number of returned bands (``len(sensor.bands)``)."""
        ...

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Read a window, boundless: raw DN ``(C, h, w)`` and a bool ``(h, w)`` valid mask."""
        ...

    def read_normalized(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Read a window normalised by the sensor spec: float32 ``(C, h, w)``, invalid set to 0."""
        ...

    def coarse_valid_mask(self, max_size: int = 256) -> np.ndarray:
        """Valid mask of the whole grid, decimated so that its longest side is ``max_size``."""
        ...

    def valid_fraction(self, max_size: int = 256) -> float:
        """Estimated fraction of valid pixels (from :meth:`coarse_valid_mask`)."""
        ...
