"""One way to open imagery: :func:`open_source` picks the reader a path needs.

A zarr store (``*.zarr`` or a folder holding zarr metadata) opens as a
:class:`~dinogeo.data.zarr_source.ZarrSource`; anything else GDAL reads (GeoTIFF/COG, JPEG2000,
VRT, world-file images) as a :class:`~dinogeo.data.readers.RasterSource`. Both meet the
:class:`~dinogeo.data.source.Source` protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dinogeo.data.readers import RasterSource
from dinogeo.data.sensors import Sensor
from dinogeo.data.source import CRSLike, Source

__all__ = ["is_zarr_path", "open_source"]


def is_zarr_path(path: str | Path) -> bool:
    """Return whether ``path`` names a zarr store (``*.zarr`` or a folder holding zarr metadata)."""
    p = Path(path)
    if p.suffix.lower() == ".zarr":
        return True
    return p.is_dir() and any((p / m).exists() for m in ("zarr.json", ".zgroup", ".zarray"))


def open_source(
    path: str | Path,
    sensor: str | Path | Sensor | None = None,
    bands: Sequence[str] | None = None,
    *,
    target_crs: CRSLike | None = None,
    target_res: float | tuple[float, float] | None = None,
) -> Source:
    """Open a raster file or zarr store as a lazy, windowed source.

    Args:
        path: GeoTIFF/COG, JPEG2000, VRT, PNG/JPEG/TIFF with a world file, or a zarr store.
        sensor: a shipped sensor name, a sensor YAML path or a :class:`Sensor`; None infers a
            generic sensor (bands ``band_1..n``, values divided by the dtype's maximum).
        bands: band names or aliases to read, in output order. When the file holds fewer bands
            than the sensor and its band descriptions do not name them, ``bands`` (one name per
            file band, in file order) describes the file.
        target_crs: reproject onto this CRS (anything ``rasterio.crs.CRS.from_user_input`` takes).
        target_res: output resolution in target CRS units (one value or ``(xres, yres)``).

    Returns:
        A :class:`RasterSource`, or a ``ZarrSource`` for zarr stores.

    Raises:
        RasterReadError: the file is missing, corrupt, or lacks a CRS.
        BandMismatchError: the file's band count does not fit the sensor.
        SensorError: an unknown sensor or band name.
    """
    if is_zarr_path(path):
        from dinogeo.data.zarr_source import open_zarr_source  # zarr is imported when needed

        if target_crs is not None or target_res is not None:
            raise ValueError(
                f"{path}: a zarr store is read on the grid it was ingested on; target_crs and "
                "target_res apply to raster files (reproject the rasters before `dinogeo ingest`)"
            )
        return open_zarr_source(path, sensor=sensor, bands=bands)
    return RasterSource(path, sensor, bands, target_crs=target_crs, target_res=target_res)
