"""Class rasters to a styled GeoPackage of polygons, streamed strip by strip.

The raster is read in strips of rows; each strip is polygonised with ``rasterio.features.shapes``
(4-connected regions of one class). Regions cut by a strip boundary are dissolved with their
continuation in the next strip, so every feature is one whole connected region of one class, and
finished regions are written out as soon as they cannot grow any more: memory is bounded by the
regions crossing the current strip boundary, not by the raster size. Each feature carries the class
value, the class name and its area in hectares computed in a local Lambert azimuthal equal-area CRS.
The layer's default QGIS style goes into the GeoPackage's ``layer_styles`` table.

A minimum mapping unit (``min_mapping_unit`` pixels) merges every smaller region into its largest
neighbour before polygonising (GDAL's sieve, 4-connected; regions touching only nodata stay). Each
strip is sieved with a halo of ``min_mapping_unit`` rows above and below: a region smaller than
that spans fewer rows, so it is seen whole, and a larger region cut by the halo still counts as
large, so memory stays bounded by the strip. Only the polygons are sieved; the raster keeps the
model's per-pixel classes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import rasterio
import shapely
from affine import Affine
from rasterio.features import shapes, sieve
from rasterio.windows import Window

from dinogeo.errors import ConfigError
from dinogeo.inference.qgis import (
    GPKG_OPTIONS,
    equal_area_crs,
    vector_qml,
    vector_sld,
    write_layer_style,
)
from dinogeo.inference.writer import check_output_path
from dinogeo.models.task_card import TaskCard

__all__ = ["MIN_MAPPING_UNIT", "check_min_mapping_unit", "vectorize_classes"]


def _parts(geom: shapely.Geometry) -> list[shapely.Geometry]:
    return [g for g in shapely.get_parts(geom) if not g.is_empty]


#: default minimum mapping unit of class polygons, in pixels (1: keep every region)
MIN_MAPPING_UNIT = 4


def check_min_mapping_unit(pixels: int) -> None:
    """Refuse a minimum mapping unit below one pixel.

    Raises:
        ConfigError: ``pixels`` < 1.
    """
    if pixels < 1:
        raise ConfigError(
            f"min_mapping_unit must be at least 1 pixel (1 keeps every region), got {pixels}"
        )


def _read_strip(
    ds: rasterio.io.DatasetReader, r0: int, r1: int, nodata: float | None, min_pixels: int
) -> np.ndarray:
    """Rows ``r0:r1`` of band 1, sieved to ``min_pixels`` with a halo of as many rows."""
    if min_pixels <= 1:
        return np.asarray(ds.read(1, window=Window(0, r0, ds.width, r1 - r0)))
    a0, a1 = max(0, r0 - min_pixels), min(ds.height, r1 + min_pixels)
    data = ds.read(1, window=Window(0, a0, ds.width, a1 - a0))
    mask = data != nodata if nodata is not None else None
    out = sieve(data, min_pixels, mask=mask, connectivity=4)
    return np.asarray(out[r0 - a0 : r1 - a0])


def _regions(
    ds: rasterio.io.DatasetReader, nodata: float | None, strip_rows: int, min_pixels: int = 1
) -> Iterator[tuple[int, shapely.Geometry]]:
    """Yield ``(class value, polygon in pixel coordinates)`` for every whole connected region."""
    pending: dict[int, list[shapely.Geometry]] = {}
    for r0 in range(0, ds.height, strip_rows):
        r1 = min(ds.height, r0 + strip_rows)
        data = _read_strip(ds, r0, r1, nodata, min_pixels)
        mask = data != nodata if nodata is not None else None
        new: dict[int, list[shapely.Geometry]] = {}
        for geom, value in shapes(data, mask=mask, transform=Affine.translation(0, r0)):
            new.setdefault(int(value), []).append(shapely.geometry.shape(geom))
        nxt: dict[int, list[shapely.Geometry]] = {}
        for value in sorted(set(pending) | set(new)):
            polys = new.get(value, [])
            top = [p for p in polys if p.bounds[1] <= r0]
            inner = [p for p in polys if p.bounds[1] > r0]
            old = pending.get(value, [])
            joined = _parts(shapely.union_all(old + top)) if old and top else old + top
            for p in joined + inner:
                if r1 < ds.height and p.bounds[3] >= r1:
                    nxt.setdefault(value, []).append(p)
                else:
                    yield value, p
        pending = nxt
    for value, polys in pending.items():
        for p in polys:
            yield value, p


def vectorize_classes(
    raster: str | Path,
    task: TaskCard,
    dst: str | Path,
    *,
    layer: str | None = None,
    overwrite: bool = False,
    strip_rows: int = 512,
    chunk: int = 5000,
    min_mapping_unit: int = MIN_MAPPING_UNIT,
) -> Path:
    """Polygonise a class raster into a styled GeoPackage.

    Args:
        raster: class raster (e.g. a ``dinogeo predict`` output).
        task: task card giving class names and colours.
        dst: output ``.gpkg`` (written to a temporary name, then renamed).
        layer: layer name (default: the raster's stem).
        overwrite: replace an existing ``dst``.
        strip_rows: rows read at a time.
        chunk: features written per batch.
        min_mapping_unit: smallest region in pixels; smaller ones are merged into their largest
            neighbour (1 keeps every region).

    Returns:
        ``dst``.

    Raises:
        ConfigError: ``min_mapping_unit`` below 1.
    """
    check_min_mapping_unit(min_mapping_unit)
    dst = Path(dst)
    check_output_path(dst, overwrite=overwrite)
    layer = layer or Path(raster).stem
    names = {c.value: c.name for c in task.classes}
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}.gpkg")
    tmp.unlink(missing_ok=True)
    try:
        with rasterio.open(raster) as ds:
            t = ds.transform
            m = np.array([[t.a, t.d], [t.b, t.e]])
            shift = np.array([t.c, t.f])

            def affine(xy: np.ndarray) -> np.ndarray:
                return np.asarray(xy @ m + shift)

            b = ds.bounds
            laea = equal_area_crs(ds.crs, (b.left + b.right) / 2, (b.bottom + b.top) / 2)
            written = 0
            batch: list[tuple[int, shapely.Geometry]] = []

            def flush() -> None:
                nonlocal written
                geoms = shapely.transform(np.array([g for _, g in batch], dtype=object), affine)
                values = [v for v, _ in batch]
                gdf = gpd.GeoDataFrame(
                    {
                        "class": np.array(values, dtype=np.int32),
                        "class_name": [names.get(v, str(v)) for v in values],
                    },
                    geometry=gpd.GeoSeries(list(geoms), crs=ds.crs),
                )
                gdf["area_ha"] = gdf.geometry.to_crs(laea).area / 1e4 if len(gdf) else []
                pyogrio.write_dataframe(
                    gdf, tmp, layer=layer, driver="GPKG", append=written > 0,
                    geometry_type="Polygon", promote_to_multi=False,
                    dataset_options=GPKG_OPTIONS if not written else None,
                )  # fmt: skip
                written += len(gdf) or 1
                batch.clear()

            for item in _regions(ds, ds.nodata, strip_rows, int(min_mapping_unit)):
                batch.append(item)
                if len(batch) >= chunk:
                    flush()
            if batch or not written:
                flush()
        write_layer_style(tmp, layer, vector_qml(task), vector_sld(task, layer))
        Path(str(dst) + "-journal").unlink(missing_ok=True)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dst
