"""Valid-data footprints of rasters: decimated validity masks, polygons and geodesic areas."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import rasterio.features
import rasterio.warp
import shapely
from affine import Affine
from pyproj import Geod
from rasterio.crs import CRS
from rasterio.enums import Resampling
from shapely.geometry import mapping, shape

__all__ = ["area_km2", "footprint", "to_4326", "valid_decimated"]

_GEOD = Geod(ellps="WGS84")


def valid_decimated(
    ds: Any, data: list[int], alpha: int | None, mask: str, shp: tuple[int, int]
) -> np.ndarray:
    """Valid mask of an open dataset read decimated to ``shp`` (nearest; overviews if any).

    ``mask`` is how validity is known (see the ``mask`` column); NaN is always invalid.
    """
    kw = {"out_shape": shp, "resampling": Resampling.nearest}
    if mask == "alpha" and alpha is not None:
        return np.asarray(ds.read(alpha, **kw) > 0)
    if mask == "internal":
        return np.asarray(ds.dataset_mask(**kw) > 0)
    arr = ds.read(data, out_shape=(len(data), *shp), resampling=Resampling.nearest)
    valid = np.ones(shp, dtype=bool)
    if mask == "nodata":
        nd = ds.nodata
        if not math.isnan(nd):  # GDAL's rule: invalid where all bands equal nodata
            valid &= (arr != arr.dtype.type(nd)).any(axis=0)
    if arr.dtype.kind == "f":
        valid &= ~np.isnan(arr).any(axis=0)
    return valid


def footprint(valid: np.ndarray, transform: Affine, width: int, height: int) -> shapely.Geometry:
    """Polygon of the valid pixels of a decimated mask, simplified at its pixel size."""
    sy, sx = height / valid.shape[0], width / valid.shape[1]
    t = transform @ Affine.scale(sx, sy)
    if valid.all():
        w, h = width, height
        return shapely.Polygon(
            [transform @ (0, 0), transform @ (w, 0), transform @ (w, h), transform @ (0, h)]
        )
    polys = [
        shape(geom)
        for geom, value in rasterio.features.shapes(valid.astype("uint8"), transform=t)
        if value == 1
    ]
    if not polys:
        return shapely.Polygon()
    merged = shapely.unary_union(polys)
    pixel = max(abs(t.a), abs(t.e), abs(t.b), abs(t.d))
    return merged.simplify(pixel, preserve_topology=True)


def to_4326(geom: shapely.Geometry, crs: CRS) -> shapely.Geometry:
    """Reproject a geometry to EPSG:4326, densified so curved edges stay faithful."""
    if geom.is_empty:
        return geom
    minx, miny, maxx, maxy = geom.bounds
    dense = shapely.segmentize(geom, max(maxx - minx, maxy - miny) / 32 or 1.0)
    out = rasterio.warp.transform_geom(crs, "EPSG:4326", mapping(dense), precision=-1)
    return shapely.make_valid(shape(out))


def area_km2(geom: shapely.Geometry) -> float:
    """Geodesic area of an EPSG:4326 geometry in km²."""
    if geom.is_empty:
        return 0.0
    area, _ = _GEOD.geometry_area_perimeter(geom)
    return abs(area) / 1e6
