"""Reading an index back: lazy sources and valid-data footprints, without opening the rasters.

:func:`open_index_sources` builds every indexed raster's source from its row (the header is in
the index; a file opens on its first read); :func:`index_footprints` gives the samplers each
row's valid-data polygon, so chips are drawn without reading a mask per file. Both ``stat`` the
files first and fall back to reading the ones that changed since indexing.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd

from dinogeo.data.header import row_is_current
from dinogeo.data.index import load_index
from dinogeo.data.opener import open_source
from dinogeo.data.readers import RasterSource
from dinogeo.data.sensors import Sensor, load_sensor
from dinogeo.data.source import Source
from dinogeo.data.validity import Footprint

__all__ = ["index_footprints", "open_index_sources"]


def open_index_sources(
    index: gpd.GeoDataFrame | str | Path,
    sensor: str | Path | Sensor | None = None,
    bands: Sequence[str] | None = None,
    *,
    check_files: bool = True,
) -> list[Source]:
    """Lazy sources of every indexed raster, built from the index without opening the files.

    Raster rows become :meth:`RasterSource.from_index_row <dinogeo.data.readers.RasterSource>`
    sources (each file opens on its first read); zarr rows are opened with
    :func:`~dinogeo.data.opener.open_source` (their stores' metadata).

    Args:
        index: an index or the path of one.
        sensor: sensor for every raster; default: each row's ``sensor`` column (generic if empty).
        bands: band names to read.
        check_files: compare each file's size and mtime with the index (a ``stat``, no open); a
            changed file's header is read from the file, with one warning for all of them.

    Raises:
        RasterReadError: an indexed file vanished, or a changed one is no longer readable.
    """
    frame = index if isinstance(index, gpd.GeoDataFrame) else load_index(index)
    specs: dict[str, Any] = {}  # each sensor is loaded once, not once per row
    rows = list(frame.itertuples(index=False))
    stale = [
        i
        for i, r in enumerate(rows)
        if check_files and r.format != "zarr" and not row_is_current(r)
    ]
    if stale:  # before opening them: a changed file may no longer fit its row's sensor
        names = ", ".join(str(rows[i].path) for i in stale[:3])
        more = f" and {len(stale) - 3} more" if len(stale) > 3 else ""
        warnings.warn(
            f"{len(stale)} of {len(rows)} indexed files changed since indexing ({names}{more}); "
            "their headers are read from the files: re-run `dinogeo index` to refresh the index",
            stacklevel=2,
        )
    out: list[Source] = []
    reopen = set(stale)
    for i, row in enumerate(rows):
        name = row.sensor if isinstance(row.sensor, str) and row.sensor else None
        spec = sensor if sensor is not None else name
        if spec is not None and not isinstance(spec, Sensor):
            if str(spec) not in specs:
                specs[str(spec)] = load_sensor(spec)
            spec = specs[str(spec)]
        if row.format == "zarr":
            out.append(open_source(row.path, sensor=spec, bands=bands))
        elif i in reopen:
            out.append(RasterSource(row.path, spec, bands))
        else:
            out.append(RasterSource.from_index_row(row, spec, bands, check_file=False))
    return out


def index_footprints(
    index: gpd.GeoDataFrame | str | Path, *, check_files: bool = True
) -> list[Footprint | None]:
    """Footprints for ``RandomChipSampler(..., footprints=)``: masks without reading every file.

    Args:
        index: an index or the path of one.
        check_files: compare each file's size and mtime with the index (a ``stat``, no open); a
            changed or missing file gets None, so its mask is read.

    Returns:
        One :class:`Footprint` (EPSG:4326) per row, in the order of
        :func:`open_index_sources`, or None for zarr rows (their stores keep
        a coarse valid mask), rows without a geometry and changed files.
    """
    frame = index if not isinstance(index, str | Path) else load_index(index)
    out: list[Footprint | None] = []
    stale = 0
    for row in frame.itertuples(index=False):
        usable = row.format != "zarr" and row.geometry is not None
        if usable and check_files and not row_is_current(row):
            usable, stale = False, stale + 1
        nodata = float(row.nodata) if row.has_nodata else None
        full = bool(row.valid_fraction >= 1.0)
        fp = Footprint(row.geometry, "EPSG:4326", str(row.mask), nodata, full)
        out.append(fp if usable else None)
    if stale:
        warnings.warn(
            f"{stale} of {len(frame)} indexed files changed or vanished since indexing; their "
            "valid masks are read from the files: re-run `dinogeo index` to refresh the index",
            stacklevel=2,
        )
    return out
