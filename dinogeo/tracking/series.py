"""A dated image time series read lazily, window by window, on the grid of its first date.

Three layouts open as one :class:`TimeSeries`:

* one raster per date (files, folders or globs): the date comes from a CSV (``file,date``), the
  GDAL ``ACQUISITIONDATETIME`` tag or the file name (``YYYY-MM-DD``, ``YYYYMMDD``, product IDs);
* one multi-band raster holding every date plus a CSV mapping bands to dates (columns ``date``
  and one ``band_<name>`` column per sensor band with 1-based band numbers, e.g. ``band_vv,
  band_vh,date``), or band descriptions ``YYYY-MM-DD_<band>`` when no CSV is given;
* a zarr store written by ``dinogeo ingest`` (one raster group per date, dated like files).

Later dates are warped onto the first date's grid (nearest neighbour) when their grid differs.
Invalid pixels (nodata, NaN, a dataset mask, all bands zero when the sensor's nodata is 0) are NaN
in what :meth:`TimeSeries.read` returns, so per-date cloud masks written as nodata are honoured.
"""

from __future__ import annotations

import csv
import datetime as dt
import glob
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from dinogeo.data.band_match import example_band_names
from dinogeo.data.naming import parse_datetime
from dinogeo.data.sensors import Sensor, load_sensor
from dinogeo.errors import DinogeoError, NoValidDataError, RasterReadError, spell_option

__all__ = ["DateLayer", "SeriesError", "TimeSeries", "open_series"]

_RASTER_EXT = (".tif", ".tiff", ".vrt", ".jp2", ".img")


class SeriesError(DinogeoError, ValueError):
    """A time series cannot be assembled: too few dates, undated or duplicate dates, disjoint grids."""


@dataclass(frozen=True)
class DateLayer:
    """One acquisition of a series: where its bands are stored.

    Attributes:
        date: acquisition date.
        path: raster file (or zarr store).
        bands: 1-based band numbers in the file, in sensor band order.
        group: zarr group of the raster (None for files).
    """

    date: dt.date
    path: Path
    bands: tuple[int, ...]
    group: str | None = None


@dataclass
class TimeSeries:
    """A lazily read stack of dated rasters on one grid (the first date's).

    Attributes:
        layers: the acquisitions, sorted by date.
        sensor: band names, scaling and nodata of every date.
        crs: grid CRS.
        transform: grid transform.
        width: grid width in pixels.
        height: grid height in pixels.
    """

    layers: list[DateLayer]
    sensor: Sensor
    crs: CRS
    transform: Any
    width: int
    height: int
    _handles: dict[Any, Any] = field(default_factory=dict, repr=False)

    @property
    def dates(self) -> list[dt.date]:
        """Acquisition dates, ascending."""
        return [layer.date for layer in self.layers]

    @property
    def dates64(self) -> np.ndarray:
        """Acquisition dates as ``datetime64[D]``."""
        return np.array([np.datetime64(d, "D") for d in self.dates])

    def __len__(self) -> int:
        return len(self.layers)

    def _dataset(self, layer: DateLayer) -> Any:
        key = (layer.path, layer.group)
        ds = self._handles.get(key)
        if ds is None:
            try:
                if layer.group is not None:
                    from dinogeo.data.zarr_source import open_zarr_source

                    ds = open_zarr_source(str(layer.path / layer.group), sensor=self.sensor)
                else:
                    ds = rasterio.open(layer.path)
                    if (ds.crs, ds.transform, ds.width, ds.height) != (
                        self.crs,
                        self.transform,
                        self.width,
                        self.height,
                    ):
                        ds = WarpedVRT(
                            ds,
                            crs=self.crs,
                            transform=self.transform,
                            width=self.width,
                            height=self.height,
                        )
            except rasterio.errors.RasterioIOError as err:
                raise RasterReadError(f"{layer.path}: cannot read ({err})") from err
            self._handles[key] = ds
        return ds

    def close(self) -> None:
        """Close the open file handles."""
        for ds in self._handles.values():
            close = getattr(ds, "close", None)
            if close is not None:
                close()
        self._handles.clear()

    def read(self, window: Window) -> np.ndarray:
        """Read every date of a window in physical units (``DN * scale + offset``).

        Args:
            window: pixel window of the grid; parts outside the grid read as invalid.

        Returns:
            float32 array (T, C, h, w) with NaN where a date is invalid (nodata, masked, outside).
        """
        h, w = int(window.height), int(window.width)
        out = np.full((len(self.layers), len(self.sensor.bands), h, w), np.nan, np.float32)
        c0, r0 = max(int(window.col_off), 0), max(int(window.row_off), 0)
        c1 = min(int(window.col_off) + w, self.width)
        r1 = min(int(window.row_off) + h, self.height)
        if c1 <= c0 or r1 <= r0:
            return out
        inner = Window(c0, r0, c1 - c0, r1 - r0)
        rs = slice(r0 - int(window.row_off), r1 - int(window.row_off))
        cs = slice(c0 - int(window.col_off), c1 - int(window.col_off))
        by_path: dict[tuple[Path, str | None], list[int]] = {}
        for t, layer in enumerate(self.layers):
            by_path.setdefault((layer.path, layer.group), []).append(t)
        for ts in by_path.values():
            if len(ts) == 1 or self.layers[ts[0]].group is not None:
                for t in ts:
                    out[t, :, rs, cs] = self._read_layer(self.layers[t], inner)
            else:  # one multi-band file holds these dates: one read for all of them
                block = self._read_bands(
                    self.layers[ts[0]], [self.layers[t].bands for t in ts], inner
                )
                out[ts, :, rs, cs] = block
        return out

    def _read_bands(
        self, layer: DateLayer, bands: list[tuple[int, ...]], window: Window
    ) -> np.ndarray:
        """Read several dates stored as bands of one file: (T, C, h, w) physical units, NaN invalid."""
        ds = self._dataset(layer)
        flat = sorted({b for group in bands for b in group})
        try:
            data = ds.read(flat, window=window).astype(np.float32)
            mask = ds.read_masks(flat, window=window) > 0
        except rasterio.errors.RasterioIOError as err:
            raise RasterReadError(f"{layer.path}: cannot read window {window} ({err})") from err
        pos = {b: i for i, b in enumerate(flat)}
        take = np.array([[pos[b] for b in group] for group in bands])
        data, valid = data[take], mask[take].all(axis=1)
        data, valid = self._scale(data, valid)
        return data

    def _scale(self, data: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Apply nodata, NaN and scaling to (..., C, h, w) values with a (..., h, w) valid mask."""
        nodata = self.sensor.nodata
        if nodata is not None:
            valid &= ~np.any(data == nodata, axis=-3)
        valid &= np.all(np.isfinite(data), axis=-3)
        data = data * np.float32(self.sensor.scale) + np.float32(self.sensor.offset)
        np.copyto(data, np.nan, where=~valid[..., None, :, :])
        return data, valid

    def _read_layer(self, layer: DateLayer, window: Window) -> np.ndarray:
        ds = self._dataset(layer)
        if layer.group is not None:
            raw, valid = ds.read(window)
            data = raw.astype(np.float32)
        else:
            try:
                data = ds.read(list(layer.bands), window=window)
                mask = ds.read_masks(list(layer.bands), window=window)
            except rasterio.errors.RasterioIOError as err:
                raise RasterReadError(f"{layer.path}: cannot read window {window} ({err})") from err
            data = data.astype(np.float32)
            valid = mask.min(axis=0) > 0
        data, _ = self._scale(data, valid)
        return data

    def index_of(self, date: dt.date | str) -> int:
        """Index of the first acquisition on or after ``date``."""
        day = np.datetime64(date, "D")
        return int(np.searchsorted(self.dates64, day))


def _as_date(value: Any, where: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = str(value).strip()
    for fmt in ("%Y-%m-%d", "%Y%m%d", "%Y/%m/%d", "%d/%m/%Y"):
        try:
            return dt.datetime.strptime(text[:10] if "-" in text[:10] else text, fmt).date()
        except ValueError:
            continue
    raise SeriesError(f"{where}: cannot read the date {value!r}; write dates as YYYY-MM-DD")


def _expand(inputs: Sequence[str | Path]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir() and not (p / "zarr.json").is_file():
            files += sorted(q for q in p.iterdir() if q.suffix.lower() in _RASTER_EXT)
        elif p.exists():
            files.append(p)
        else:
            hits = sorted(Path(h) for h in glob.glob(str(item)))
            if not hits:
                raise RasterReadError(f"{item}: no such file, folder or glob match")
            files += hits
    return files


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as f:
            rows = [
                {k.strip().lower(): (v or "").strip() for k, v in r.items()}
                for r in csv.DictReader(f)
            ]
    except OSError as err:
        raise SeriesError(f"{path}: cannot read the dates CSV ({err})") from err
    if not rows or "date" not in rows[0]:
        raise SeriesError(
            f"{path}: the dates CSV needs a 'date' column (and 'file' or band_* columns)"
        )
    return rows


def _resolve_sensor(sensor: str | Path | Sensor | None, ds: Any, path: Path) -> Sensor:
    if isinstance(sensor, Sensor):
        return sensor
    if sensor is not None:
        return load_sensor(sensor)
    descs = " ".join(d or "" for d in ds.descriptions).upper()
    if "VV" in descs and "VH" in descs:
        return load_sensor("sentinel1_grd_db100" if ds.dtypes[0] == "int16" else "sentinel1_grd_db")
    raise SeriesError(
        f"{path}: cannot tell the sensor of this series; pass "
        f"{spell_option('sensor', 'sentinel2_sr_x1000')}, or sentinel1_grd_db or a sensor YAML "
        "(see `dinogeo sensors`)"
    )


def _band_numbers(sensor: Sensor, count: int, path: Path) -> tuple[int, ...]:
    if count != len(sensor.bands):
        raise SeriesError(
            f"{path}: {count} bands but the series reads {len(sensor.bands)} ({sensor.band_names}); "
            f"name the file's {count} bands in order, e.g. "
            f"{spell_option('bands', example_band_names(sensor, count))}, or pass the sensor of this file"
        )
    return tuple(range(1, count + 1))


def _multiband(path: Path, sensor: Sensor, dates_csv: Path | None) -> list[DateLayer]:
    with rasterio.open(path) as ds:
        descs = list(ds.descriptions)
        count = ds.count
    names = [b.lower() for b in sensor.band_names]
    layers: list[DateLayer] = []
    if dates_csv is not None:
        rows = _read_csv(dates_csv)
        cols = [f"band_{n}" for n in names]
        missing = [c for c in cols if c not in rows[0]]
        if missing:
            raise SeriesError(
                f"{dates_csv}: needs the columns {cols} (1-based band numbers of {path.name}); "
                f"missing {missing}"
            )
        for i, r in enumerate(rows):
            try:
                nums = tuple(int(r[c]) for c in cols)
            except ValueError as err:
                raise SeriesError(
                    f"{dates_csv}: row {i + 2} has a non-integer band number"
                ) from err
            if not all(1 <= n <= count for n in nums):
                raise SeriesError(
                    f"{dates_csv}: row {i + 2} names bands {nums}; {path} has {count}"
                )
            layers.append(DateLayer(_as_date(r["date"], f"{dates_csv} row {i + 2}"), path, nums))
        return layers
    by_date: dict[dt.date, dict[str, int]] = {}
    for i, d in enumerate(descs):
        if not d or "_" not in d:
            raise SeriesError(
                f"{path}: band {i + 1} has no 'YYYY-MM-DD_<band>' description; pass dates_csv= "
                "(--dates-csv) mapping bands to dates"
            )
        day, name = d.rsplit("_", 1)
        by_date.setdefault(_as_date(day, f"{path} band {i + 1}"), {})[name.lower()] = i + 1
    for day, m in by_date.items():
        if any(n not in m for n in names):
            raise SeriesError(f"{path}: date {day} lacks one of the bands {sensor.band_names}")
        layers.append(DateLayer(day, path, tuple(m[n] for n in names)))
    return layers


def _date_of(path: Path, ds: Any, dated: dict[str, dt.date]) -> dt.date | None:
    if path.name in dated:
        return dated[path.name]
    when, _ = parse_datetime(path.name, ds.tags(), ds.tags(ns="IMAGERY"))
    return when.date() if when is not None else None


def _check_dates(layers: list[DateLayer]) -> list[DateLayer]:
    if len(layers) < 2:
        where = layers[0].path if layers else "the inputs"
        raise SeriesError(
            f"{where}: a time series needs at least two dates, got {len(layers)}; pass every date "
            "of the archive (a folder, a glob or a multi-band file with its dates CSV)"
        )
    layers = sorted(layers, key=lambda lay: lay.date)
    seen: dict[dt.date, DateLayer] = {}
    for lay in layers:
        if lay.date in seen:
            raise SeriesError(
                f"{seen[lay.date].path} and {lay.path} have the same date {lay.date}; dates must be "
                "unique: merge same-day acquisitions first (e.g. gdalbuildvrt) or drop one"
            )
        seen[lay.date] = lay
    return layers


def open_series(
    inputs: str | Path | Sequence[str | Path],
    *,
    sensor: str | Path | Sensor | None = None,
    bands: Sequence[str] | None = None,
    dates_csv: str | Path | None = None,
) -> TimeSeries:
    """Open a dated image series (files, folders, globs, a multi-band file + CSV, or a zarr store).

    Args:
        inputs: the rasters (one per date), or one multi-band raster, or one zarr store.
        sensor: sensor name or YAML (inferred for Sentinel-1 stacks whose band descriptions name
            VV and VH).
        bands: names of the file's bands in file order, when the files hold a subset of the
            sensor's bands.
        dates_csv: CSV with ``file,date`` rows (one raster per date) or ``date,band_<name>...``
            rows (one multi-band raster).

    Returns:
        The series on the first date's grid.

    Raises:
        SeriesError: fewer than two dates, an undated file, duplicate dates, disjoint grids.
        RasterReadError: a missing or unreadable file.
    """
    items = [inputs] if isinstance(inputs, str | Path) else list(inputs)
    csv_path = Path(dates_csv) if dates_csv is not None else None
    files = _expand(items)
    if len(files) == 1 and (files[0] / "zarr.json").is_file():
        return _open_zarr(files[0], sensor)
    try:
        first = rasterio.open(files[0])
    except rasterio.errors.RasterioIOError as err:
        raise RasterReadError(f"{files[0]}: cannot open as a raster ({err})") from err
    with first:
        if first.crs is None:
            raise RasterReadError(f"{files[0]}: no CRS; assign one (gdal_edit.py -a_srs) first")
        spec = _resolve_sensor(sensor, first, files[0])
        if bands is not None:
            spec = spec.select(bands)
        grid = (first.crs, first.transform, first.width, first.height)
        single_count = first.count
    if len(files) == 1 and single_count > len(spec.bands):
        layers = _multiband(files[0], spec, csv_path)
    else:
        dated: dict[str, dt.date] = {}
        if csv_path is not None:
            for i, r in enumerate(_read_csv(csv_path)):
                if "file" not in r:
                    raise SeriesError(f"{csv_path}: needs 'file' and 'date' columns")
                dated[Path(r["file"]).name] = _as_date(r["date"], f"{csv_path} row {i + 2}")
        layers, undated = [], []
        for f in files:
            try:
                with rasterio.open(f) as ds:
                    day = _date_of(f, ds, dated)
                    nums = _band_numbers(spec, ds.count, f)
                    _check_overlap(f, ds, grid)
            except rasterio.errors.RasterioIOError as err:
                raise RasterReadError(f"{f}: cannot open as a raster ({err})") from err
            if day is None:
                undated.append(f)
            else:
                layers.append(DateLayer(day, f, nums))
        if undated:
            shown = ", ".join(str(u) for u in undated[:5])
            raise SeriesError(
                f"no acquisition date for {len(undated)} file(s): {shown}; put the date in the file "
                "name (YYYY-MM-DD or YYYYMMDD), set the ACQUISITIONDATETIME tag, or pass dates_csv= "
                "(--dates-csv) with file,date rows"
            )
    layers = _check_dates(layers)
    return TimeSeries(layers, spec, grid[0], grid[1], grid[2], grid[3])


def _check_overlap(path: Path, ds: Any, grid: tuple[Any, Any, int, int]) -> None:
    crs, transform, width, height = grid
    if ds.crs is None:
        raise RasterReadError(f"{path}: no CRS; assign one (gdal_edit.py -a_srs) first")
    left, top = transform @ (0, 0)
    right, bottom = transform @ (width, height)
    b = transform_bounds(ds.crs, crs, *ds.bounds) if ds.crs != crs else tuple(ds.bounds)
    if (
        b[0] >= max(left, right)
        or b[2] <= min(left, right)
        or b[1] >= max(top, bottom)
        or b[3] <= min(top, bottom)
    ):
        raise SeriesError(
            f"{path} does not overlap the grid of the first date; every date must cover the same "
            "area (check the file list and CRS)"
        )


def _open_zarr(store: Path, sensor: str | Path | Sensor | None) -> TimeSeries:
    from dinogeo.data.zarr_source import open_zarr_source
    from dinogeo.data.zarr_store import list_store_rasters

    groups = list_store_rasters(store)
    layers: list[DateLayer] = []
    src0 = None
    for g in groups:
        src = open_zarr_source(str(store / g) if g else str(store), sensor=sensor)
        src0 = src0 or src
        when, _ = parse_datetime(Path(g).name, {}, {})
        if when is None:
            raise SeriesError(
                f"{store}: raster group {g!r} has no date in its name; ingest files whose names "
                "carry YYYY-MM-DD or YYYYMMDD"
            )
        layers.append(DateLayer(when.date(), store, tuple(range(1, len(src.sensor.bands) + 1)), g))
    if src0 is None:
        raise NoValidDataError(f"{store}: the zarr store holds no raster")
    layers = _check_dates(layers)
    return TimeSeries(layers, src0.sensor, src0.crs, src0.transform, src0.width, src0.height)
