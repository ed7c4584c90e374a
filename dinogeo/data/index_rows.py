"""One raster as a row of the index: its header, grid, valid-data footprint, date and sensor.

:func:`scan_raster` reads a file's header and a decimated valid mask (one read, using overviews);
:func:`scan_zarr` describes every raster group of a zarr store from the metadata ingest wrote.
The columns are those of :mod:`dinogeo.data.index`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError, RasterioError
from rasterio.windows import Window
from shapely.geometry import box

from dinogeo.data.footprint import area_km2 as _area_km2
from dinogeo.data.footprint import footprint as _footprint
from dinogeo.data.footprint import to_4326 as _to_4326
from dinogeo.data.footprint import valid_decimated
from dinogeo.data.header import read_header
from dinogeo.data.naming import guess_sensor, parse_datetime
from dinogeo.data.windowed import coarse_shape
from dinogeo.errors import RasterReadError

__all__ = ["FOOTPRINT_SIZE", "scan_path", "scan_raster", "scan_zarr"]

#: longest side of the decimated mask read used for footprints
FOOTPRINT_SIZE = 512


def _crs_label(crs: CRS) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def scan_raster(path: Path, sensor: str | None = None) -> dict[str, Any]:
    """Describe one raster file as an index row.

    Raises:
        RasterReadError: the file cannot be read, has no CRS or no geotransform (the message is
            the reason listed among the skipped files).
    """
    try:
        with rasterio.open(path) as ds:
            return _describe(path, ds, sensor)
    except RasterioError as err:
        raise RasterReadError(f"cannot be read as a raster: {err}") from err
    except CRSError as err:
        raise RasterReadError(
            f"invalid CRS ({err}); fix the .prj or assign one with gdal_edit.py -a_srs"
        ) from err


def _describe(path: Path, ds: Any, sensor: str | None) -> dict[str, Any]:
    head = read_header(ds, path)  # the header RasterSource.from_index_row rebuilds from the row
    crs = head.crs
    if crs is None:
        raise RasterReadError(
            "no CRS: assign one with 'gdal_edit.py -a_srs EPSG:XXXX FILE' (or add a .prj beside a "
            "world-file image)"
        )
    if ds.transform == Affine.identity():
        raise RasterReadError("no geotransform: add one with gdal_edit.py -a_ullr or a world file")
    data, alpha, mask = list(head.data_indexes), head.alpha, head.mask
    if not data:
        raise RasterReadError("only an alpha band, no data bands")
    dtypes = set(head.dtypes)
    if len(dtypes) > 1:
        raise RasterReadError(
            f"mixed band dtypes {sorted(dtypes)}; convert with gdal_translate -ot"
        )
    dtype = head.dtypes[0]
    if mask == "none" and np.dtype(dtype).kind != "f":
        valid = np.ones((1, 1), dtype=bool)
        # one pixel of the last block: catches truncated files without a full read
        ds.read(data[:1], window=Window(ds.width - 1, ds.height - 1, 1, 1))
    else:
        shp = coarse_shape(ds.width, ds.height, FOOTPRINT_SIZE)
        valid = valid_decimated(ds, data, alpha, mask, shp)
    native = _footprint(valid, ds.transform, ds.width, ds.height)
    geom = _to_4326(native, crs)
    names = [d or "" for d in head.descriptions]
    when, time_source = parse_datetime(path.name, ds.tags(), ds.tags(ns="IMAGERY"))
    stat = path.stat()
    return {
        "path": str(path),
        "format": ds.driver,
        "native_crs": _crs_label(crs),
        "native_crs_wkt": crs.to_wkt(),
        "transform": [float(v) for v in tuple(ds.transform)[:6]],
        "minx": ds.bounds.left,
        "miny": ds.bounds.bottom,
        "maxx": ds.bounds.right,
        "maxy": ds.bounds.top,
        "res_x": float(abs(ds.res[0])),
        "res_y": float(abs(ds.res[1])),
        "width": ds.width,
        "height": ds.height,
        "count": len(data),
        "alpha_band": alpha or 0,
        "dtype": dtype,
        "has_nodata": head.nodata is not None,
        "nodata": float("nan") if head.nodata is None else head.nodata,
        "mask": mask,
        "band_names": names,
        "sensor": sensor or guess_sensor(path.name, len(data), dtype, names),
        "datetime": when,
        "time_source": time_source,
        "valid_fraction": float(valid.mean()),
        "area_km2": _area_km2(geom),
        "size_bytes": stat.st_size,
        "mtime": stat.st_mtime,
        "geometry": geom,
        "block_height": head.block[0] if head.block else 0,
        "block_width": head.block[1] if head.block else 0,
    }


def scan_zarr(path: Path, sensor: str | None = None) -> list[dict[str, Any]]:
    """Describe every raster group of a zarr store as index rows."""
    from dinogeo.data.zarr_source import open_zarr_store  # zarr is imported when a store is met

    rows = []
    for src in open_zarr_store(path):
        info = src.info
        if info.footprint_wkt:
            geom = shapely.from_wkt(info.footprint_wkt)
        else:
            geom = _to_4326(box(*src.bounds), src.crs)
        when, time_source = parse_datetime(Path(info.source or src.group).name, {}, {})
        t = info.transform
        meta = src.path / "zarr.json"
        rows.append(
            {
                "path": str(src.path),
                "format": "zarr",
                "native_crs": _crs_label(src.crs),
                "native_crs_wkt": info.crs_wkt,
                "transform": [float(v) for v in t],
                "minx": src.bounds.left,
                "miny": src.bounds.bottom,
                "maxx": src.bounds.right,
                "maxy": src.bounds.top,
                "res_x": float(math.hypot(t[0], t[3])),
                "res_y": float(math.hypot(t[1], t[4])),
                "width": info.width,
                "height": info.height,
                "count": info.count,
                "alpha_band": 0,
                "dtype": info.dtype,
                "has_nodata": info.nodata is not None,
                "nodata": float("nan") if info.nodata is None else float(info.nodata),
                "mask": info.mask,
                "band_names": list(info.band_names),
                "sensor": sensor or info.sensor,
                "datetime": when,
                "time_source": time_source,
                "valid_fraction": 1.0 if info.valid_fraction is None else info.valid_fraction,
                "area_km2": _area_km2(geom),
                "size_bytes": meta.stat().st_size,
                "mtime": meta.stat().st_mtime,
                "geometry": geom,
                "block_height": src.storage_block[0] if src.storage_block else 0,
                "block_width": src.storage_block[1] if src.storage_block else 0,
            }
        )
    return rows


def scan_path(path: Path, sensor: str | None) -> list[dict[str, Any]]:
    """The index rows of one archive member: a zarr store's rasters, or one raster file.

    Raises:
        RasterReadError: the file is missing or cannot be indexed (the reason it is skipped).
    """
    if path.is_dir():
        return scan_zarr(path, sensor)
    if not path.exists():
        raise RasterReadError("no such file")
    return [scan_raster(path, sensor)]
