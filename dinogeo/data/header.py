"""Raster file headers: what a reader needs to know of a file, from the file or from an index row.

A :class:`RasterHeader` holds the grid, band layout, dtype, nodata and mask facts that
:class:`dinogeo.data.readers.RasterSource` checks and reads with. :func:`read_header` takes them
from an open rasterio dataset (``dinogeo index`` builds its rows from it); :func:`header_from_row`
rebuilds the same header from a row of the index, so the sources of a 100k-file archive are built
without opening a file (each opens on its first read). :func:`row_is_current` tells, with one
``stat`` and no open, whether a file is still the one that was indexed.

World files: GDAL reads ``.tfw/.pgw/.jgw/.wld`` transforms itself but ignores the ``.prj`` beside
a PNG/JPEG/TIFF; :func:`read_header` takes the CRS from that ``.prj`` when the file has none.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.coords import BoundingBox
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import CRSError, RasterioError

from dinogeo.data.band_match import match_file_bands
from dinogeo.data.sensors import Sensor
from dinogeo.errors import RasterReadError

__all__ = [
    "RasterHeader",
    "current_row_header",
    "header_from_row",
    "open_dataset",
    "prj_crs",
    "read_header",
    "resolve_bands",
    "row_block",
    "row_is_current",
    "row_value",
]


@dataclass(frozen=True)
class RasterHeader:
    """The facts of a raster file that a reader checks and reads with.

    Attributes:
        crs: the file's CRS, else the one of a ``.prj`` beside it (world files), else None.
        crs_in_file: whether ``crs`` is stored in the file itself (a warp must name it otherwise).
        transform: the file's affine geotransform.
        width: width in pixels.
        height: height in pixels.
        bounds: the file's bounds in ``crs`` units (as ``rasterio`` reports them).
        res: pixel size ``(x, y)`` in ``crs`` units.
        count: number of bands, alpha included.
        alpha: 1-based index of the first alpha band, or None.
        data_indexes: 1-based indexes of the data bands (every band but alpha bands).
        dtypes: dtype name of each data band.
        descriptions: band description of each data band (None where unset).
        nodata: the file's nodata value, or None.
        internal_mask: whether the first data band has a per-dataset (internal) mask.
        georeferenced: whether the file has a geotransform or ground control points.
        block: the storage block ``(rows, cols)`` of the first data band (GeoTIFF tile or
            strip, from rasterio's ``block_shapes``), or None where unknown (an index written
            before dinogeo recorded it).
    """

    crs: CRS | None
    crs_in_file: bool
    transform: Affine
    width: int
    height: int
    bounds: BoundingBox
    res: tuple[float, float]
    count: int
    alpha: int | None
    data_indexes: tuple[int, ...]
    dtypes: tuple[str, ...]
    descriptions: tuple[str | None, ...]
    nodata: float | None
    internal_mask: bool
    georeferenced: bool = True
    block: tuple[int, int] | None = None

    @property
    def mask(self) -> str:
        """How the file alone marks validity: ``alpha``, ``nodata``, ``internal`` or ``none``."""
        if self.alpha is not None:
            return "alpha"
        if self.nodata is not None:
            return "nodata"
        return "internal" if self.internal_mask else "none"


#: band layouts resolved per (header bands, sensor, bands): an archive has few distinct ones
_LAYOUTS: dict[tuple[Any, ...], tuple[Sensor | None, Sensor, tuple[int, ...]]] = {}


def resolve_bands(
    header: RasterHeader,
    path: Path,
    sensor: str | Path | Sensor | None,
    bands: Sequence[str] | None,
) -> tuple[Sensor, list[int]]:
    """:func:`~dinogeo.data.band_match.match_file_bands` for a header (with data bands of one dtype).

    Results are memoised when ``sensor`` is None or a :class:`Sensor`, so 100k files of one
    layout resolve it once (a sensor name is loaded, and resolved, per call).
    """
    n, desc, dtype = len(header.data_indexes), header.descriptions, np.dtype(header.dtypes[0])
    if sensor is not None and not isinstance(sensor, Sensor):
        return match_file_bands(path, n, desc, dtype, header.nodata, sensor, bands)
    names = None if bands is None else (bands,) if isinstance(bands, str) else tuple(bands)
    # the sensor by identity (hashing a spec costs more than resolving); the entry keeps it alive
    key = (n, desc, dtype.str, repr(header.nodata), id(sensor), names)
    hit = _LAYOUTS.get(key)
    if hit is None:
        spec, positions = match_file_bands(path, n, desc, dtype, header.nodata, sensor, bands)
        if len(_LAYOUTS) >= 1024:
            _LAYOUTS.clear()
        hit = _LAYOUTS[key] = (sensor, spec, tuple(positions))
    return hit[1], list(hit[2])


def open_dataset(path: Path) -> Any:
    """Open a raster with rasterio.

    Raises:
        RasterReadError: the file is missing, corrupt or not a raster (the message says which).
    """
    try:
        return rasterio.open(path)
    except RasterioError as err:
        if not path.exists():
            raise RasterReadError(f"{path}: no such file; check the path") from err
        raise RasterReadError(
            f"{path}: cannot be opened as a raster ({err}); the file is corrupt, truncated or not "
            "a raster: re-download or re-export it (gdalinfo shows what GDAL sees)"
        ) from err


def prj_crs(path: Path) -> CRS | None:
    """CRS from a ``.prj`` sidecar (world-file georeferencing), or None.

    Raises:
        RasterReadError: the ``.prj`` exists but its CRS cannot be parsed.
    """
    for cand in (path.with_suffix(".prj"), Path(str(path) + ".prj")):
        if cand.is_file():
            try:
                return CRS.from_user_input(cand.read_text(encoding="utf-8", errors="replace"))
            except CRSError as err:
                raise RasterReadError(
                    f"{path}: the CRS in {cand.name} cannot be parsed ({err}); write a valid WKT "
                    "into the .prj or assign a CRS with gdal_edit.py -a_srs EPSG:XXXX"
                ) from err
    return None


def read_header(ds: Any, path: Path) -> RasterHeader:
    """The header of an open rasterio dataset (the CRS from a ``.prj`` when the file has none).

    Raises:
        RasterReadError: a ``.prj`` beside a file without CRS cannot be parsed.
    """
    crs = ds.crs if ds.crs is not None else prj_crs(path)
    alpha = [i + 1 for i, c in enumerate(ds.colorinterp) if c == ColorInterp.alpha]
    data = tuple(i + 1 for i in range(ds.count) if (i + 1) not in alpha)
    flags = ds.mask_flag_enums[data[0] - 1] if data else []
    return RasterHeader(
        crs=crs,
        crs_in_file=ds.crs is not None,
        transform=ds.transform,
        width=int(ds.width),
        height=int(ds.height),
        bounds=BoundingBox(*ds.bounds),
        res=(float(ds.res[0]), float(ds.res[1])),
        count=int(ds.count),
        alpha=alpha[0] if alpha else None,
        data_indexes=data,
        dtypes=tuple(ds.dtypes[i - 1] for i in data),
        descriptions=tuple(ds.descriptions[i - 1] or None for i in data),
        nodata=None if ds.nodata is None else float(ds.nodata),
        internal_mask=MaskFlags.per_dataset in flags and MaskFlags.alpha not in flags,
        georeferenced=ds.transform != Affine.identity() or bool(ds.gcps[0]),
        block=(int(ds.block_shapes[data[0] - 1][0]), int(ds.block_shapes[data[0] - 1][1]))
        if data
        else None,
    )


def row_value(row: Any, column: str) -> Any:
    """A column of an index row: a pandas Series, a dict or an ``itertuples`` namedtuple.

    A Series is indexed, never read as an attribute (``row.count`` is the Series method).
    """
    if isinstance(row, tuple) and hasattr(row, "_fields"):
        return getattr(row, column)
    return row[column]


@functools.lru_cache(maxsize=256)
def _crs_from_wkt(wkt: str) -> CRS:
    return CRS.from_wkt(wkt)


def header_from_row(row: Any) -> RasterHeader:
    """Rebuild a raster file's header from its ``dinogeo index`` row, without opening the file.

    The index rows are built from :func:`read_header`, so the result equals the file's header
    except ``crs_in_file`` (the index does not record it: False, a warp names the CRS).

    Raises:
        ValueError: the row is a zarr store's (open those with ``open_source``).
    """
    path = row_value(row, "path")
    if row_value(row, "format") == "zarr":
        raise ValueError(f"{path}: a zarr row has no raster header; open it with open_source")
    try:
        crs = _crs_from_wkt(str(row_value(row, "native_crs_wkt")))
    except CRSError as err:
        raise RasterReadError(
            f"{path}: the index holds an unreadable CRS ({err}); re-run `dinogeo index`"
        ) from err
    n_data = int(row_value(row, "count"))
    alpha = int(row_value(row, "alpha_band")) or None
    count = n_data + (alpha is not None)
    data = tuple(i for i in range(1, count + 1) if i != alpha)
    nodata = float(row_value(row, "nodata")) if bool(row_value(row, "has_nodata")) else None
    bounds = [float(row_value(row, c)) for c in ("minx", "miny", "maxx", "maxy")]
    return RasterHeader(
        crs=crs,
        crs_in_file=False,
        transform=Affine(*(float(v) for v in list(row_value(row, "transform"))[:6])),
        width=int(row_value(row, "width")),
        height=int(row_value(row, "height")),
        bounds=BoundingBox(*bounds),
        res=(float(row_value(row, "res_x")), float(row_value(row, "res_y"))),
        count=count,
        alpha=alpha,
        data_indexes=data,
        dtypes=(str(row_value(row, "dtype")),) * n_data,
        descriptions=tuple(str(d) or None for d in row_value(row, "band_names")),
        nodata=nodata,
        internal_mask=row_value(row, "mask") == "internal",
        block=row_block(row),
    )


def row_block(row: Any) -> tuple[int, int] | None:
    """The storage block ``(rows, cols)`` an index row records, or None (older indexes)."""
    try:
        rows, cols = int(row_value(row, "block_height")), int(row_value(row, "block_width"))
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    return (rows, cols) if rows > 0 and cols > 0 else None


def row_is_current(row: Any) -> bool:
    """Whether the row's file exists with the size and mtime it was indexed with (a ``stat``)."""
    try:
        stat = os.stat(row_value(row, "path"))
    except OSError:
        return False
    return bool(
        stat.st_size == int(row_value(row, "size_bytes"))
        and stat.st_mtime == float(row_value(row, "mtime"))
    )


def current_row_header(row: Any) -> RasterHeader | None:
    """:func:`header_from_row` when the file is unchanged (:func:`row_is_current`), else None.

    A changed or vanished file gets a warning naming it and the fix (re-run ``dinogeo index``).
    """
    header = header_from_row(row)
    if row_is_current(row):
        return header
    warnings.warn(
        f"{row_value(row, 'path')}: changed or vanished since it was indexed (size or mtime "
        "differ); its header is read from the file: re-run `dinogeo index` to refresh the index",
        stacklevel=3,
    )
    return None
