"""Chip reads from dinogeo zarr stores: the fast path for training.

:class:`ZarrSource` has the same surface as :class:`dinogeo.data.readers.RasterSource` (``path``,
``sensor``, ``crs``, ``transform``, ``width``, ``height``, ``bounds``, ``read(window)``,
``read_normalized(window)``), so datasets and samplers read GeoTIFF archives and zarr stores alike.

Usage::

    from dinogeo.data.zarr_source import open_zarr_source, open_zarr_store

    sources = open_zarr_store("archive.zarr")             # one source per raster group
    src = open_zarr_source("archive.zarr/S2_18SVG", bands=["red", "green", "blue"])
    raw, valid = src.read(Window(0, 0, 256, 256))         # (C, 256, 256) DN + (256, 256) bool

Reads are chunk-aligned: when the store is on the local file system and uses the layout written by
:func:`dinogeo.data.ingest.ingest` (bytes + Blosc codecs, default chunk keys), chunk files are read
and decoded directly, which is several times faster than zarr's generic indexing; any other store
is sliced through zarr. Array handles are opened lazily in each process and never pickled, so
sources are safe to send to DataLoader workers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from affine import Affine
from rasterio.coords import BoundingBox
from rasterio.crs import CRS

from dinogeo.data.band_match import match_file_bands
from dinogeo.data.geozarr import COARSE_SIZE, GeoInfo
from dinogeo.data.sensors import Sensor, load_sensor
from dinogeo.data.source import CRSLike
from dinogeo.data.windowed import WindowedSource
from dinogeo.data.zarr_chunks import ArrayReader
from dinogeo.data.zarr_store import (
    DATA,
    VALID,
    chunk_shape,
    find_store_root,
    list_store_rasters,
    load_info,
    store_unfinished,
)
from dinogeo.errors import ConfigError, RasterReadError, SensorError

__all__ = ["ZarrSource", "open_zarr_source", "open_zarr_store"]


def _resolve_bands(
    info: GeoInfo,
    sensor: Sensor | str | Path | None,
    bands: Sequence[str] | str | None,
    where: str,
) -> tuple[Sensor, list[int]]:
    """The output sensor and the store band of each output band, as a file's are matched.

    Without a sensor, the one recorded at ingest is used when it is known.
    """
    spec: Sensor | str | Path | None = sensor
    if spec is None and info.sensor:
        try:
            spec = load_sensor(info.sensor)
        except SensorError:
            spec = None
    if isinstance(bands, str):
        bands = [bands]
    dtype = np.dtype(info.dtype)
    return match_file_bands(
        where, info.count, info.band_names, dtype, info.nodata, spec, bands, what="store"
    )


class ZarrSource(WindowedSource):
    """One raster group of a zarr store, read by windows like a :class:`RasterSource`.

    Args:
        store: the store root (``archive.zarr``).
        group: the raster group inside the store (``""`` when the root is the raster).
        sensor: a :class:`Sensor`, a shipped sensor name or a YAML path; default: the sensor
            recorded at ingest, else a generic spec for the store's dtype and band count.
        bands: band names or aliases to read, in this order (default: all bands of the sensor).

    Attributes:
        path: ``store/group``.
        sensor: the spec of the bands returned by :meth:`read` (after ``bands`` selection).
        crs, transform, width, height, bounds: the raster grid.
        info: the decoded :class:`GeoInfo` (band names, nodata, mask kind, source...).
        storage_block: the chunk ``(rows, cols)`` of the data array (None if not regular).

    Raises:
        RasterReadError: if the group lacks georeferencing or a data array.
        BandMismatchError: if the sensor's band count differs from the store's.
        SensorError: if the sensor or a band name is unknown.
    """

    def __init__(
        self,
        store: str | Path,
        group: str = "",
        sensor: Sensor | str | Path | None = None,
        bands: Sequence[str] | None = None,
    ) -> None:
        self.store_path = Path(store).expanduser().absolute()
        self.group = group.strip("/")
        self.path = self.store_path / self.group if self.group else self.store_path
        if store_unfinished(self.store_path / "zarr.json"):
            raise RasterReadError(
                f"{self.store_path}: the store is unfinished (its ingest was interrupted); rerun "
                "the same `dinogeo ingest` command to resume it"
            )
        self.info = load_info(self.store_path, self.group)
        self.storage_block = chunk_shape(self.path / DATA / "zarr.json")
        self.crs: CRS = self.info.crs
        self.transform: Affine = self.info.affine
        self.width = self.info.width
        self.height = self.info.height
        left, top = self.transform @ (0, 0)
        right, bottom = self.transform @ (self.width, self.height)
        self.bounds = BoundingBox(
            min(left, right), min(top, bottom), max(left, right), max(top, bottom)
        )
        self.sensor, self.band_index = _resolve_bands(self.info, sensor, bands, str(self.path))
        self.dtype = np.dtype(self.info.dtype)
        #: the store's nodata, else the sensor's (as the GeoTIFF reader)
        self.nodata: float | None = (
            self.info.nodata if self.info.nodata is not None else self.sensor.nodata
        )
        if self.info.mask in ("alpha", "internal"):
            self.mask_kind = self.info.mask
        else:
            self.mask_kind = "nodata" if self.nodata is not None else "none"
        self._pid = -1
        self._data: ArrayReader | None = None
        self._mask_reader: ArrayReader | None = None

    def __repr__(self) -> str:
        return (
            f"ZarrSource({str(self.path)!r}, sensor={self.sensor.name!r}, "
            f"{self.info.count}x{self.height}x{self.width} {self.info.dtype})"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_pid=-1, _data=None, _mask_reader=None)  # handles are reopened in each process
        return state

    def _open(self) -> tuple[ArrayReader, ArrayReader | None]:
        if self._data is None or self._pid != os.getpid():
            try:
                grp = zarr.open_group(store=str(self.store_path), path=self.group, mode="r")
                data = grp[DATA]
                valid = grp[VALID] if self.mask_kind in ("alpha", "internal") else None
            except (KeyError, FileNotFoundError, ValueError) as err:
                raise RasterReadError(
                    f"{self.path}: cannot open the zarr arrays ({err}); the store may be incomplete: "
                    "rerun `dinogeo ingest` to resume it"
                ) from err
            if not isinstance(data, zarr.Array) or (
                valid is not None and not isinstance(valid, zarr.Array)
            ):
                raise RasterReadError(f"{self.path}: 'data'/'valid' must be arrays, not groups")
            self._data = ArrayReader(data)
            self._mask_reader = ArrayReader(valid) if valid is not None else None
            self._pid = os.getpid()
        return self._data, self._mask_reader

    def _read_inside(self, r0: int, r1: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
        data, valid_reader = self._open()
        block = data.read(r0, r1, c0, c1)
        if self.band_index != list(range(self.info.count)):
            block = block[self.band_index]
        stored = None if valid_reader is None else valid_reader.read(r0, r1, c0, c1)
        return block, self._valid(block, stored)

    def _coarse_mask(self, shape: tuple[int, int], max_size: int) -> np.ndarray:
        """The ``valid_coarse`` array written at ingest when it fits, else sampled pixel centres.

        Without a fitting stored mask, the centre pixel of each coarse cell is read, one
        chunk-row at a time.
        """
        same_rule = self.info.nodata is not None or self.mask_kind != "nodata"
        if max_size == COARSE_SIZE and same_rule and (self.path / "valid_coarse").is_dir():
            stored = zarr.open_array(store=str(self.store_path), path=f"{self.group}/valid_coarse")
            if tuple(stored.shape) == shape:
                return np.asarray(stored[...]) > 0
        data, mask = self._open()
        rows = np.minimum(
            ((np.arange(shape[0]) + 0.5) * self.height / shape[0]).astype(int), self.height - 1
        )
        cols = np.minimum(
            ((np.arange(shape[1]) + 0.5) * self.width / shape[1]).astype(int), self.width - 1
        )
        out = np.zeros(shape, dtype=bool)
        step = data.chunks[-2]
        for r0 in range(0, self.height, step):
            r1 = min(self.height, r0 + step)
            sel = np.flatnonzero((rows >= r0) & (rows < r1))
            if sel.size == 0:
                continue
            block = data.read(r0, r1, 0, self.width)[:, rows[sel] - r0][:, :, cols]
            stored_rows = (
                None if mask is None else mask.read(r0, r1, 0, self.width)[rows[sel] - r0][:, cols]
            )
            out[sel] = self._valid(block[self.band_index], stored_rows)
        return out


def open_zarr_source(
    path: str | Path,
    sensor: Sensor | str | Path | None = None,
    bands: Sequence[str] | None = None,
    *,
    target_crs: CRSLike | None = None,
    target_res: float | tuple[float, float] | None = None,
) -> ZarrSource:
    """Open one raster of a zarr store.

    Args:
        path: ``store.zarr/GROUP``, or ``store.zarr`` when the store holds exactly one raster.
        sensor: see :class:`ZarrSource`.
        bands: see :class:`ZarrSource`.
        target_crs: must be None or the store's CRS: zarr rasters are read on their native grid.
        target_res: must be None or the store's resolution.

    Raises:
        ConfigError: a target CRS/resolution differing from the store's grid was asked for.
        RasterReadError: if ``path`` is not a raster of a zarr store, or names a store holding
            several rasters (the message lists them).
    """
    root, group = find_store_root(path)
    if group == "" and not (root / DATA / "zarr.json").is_file():
        names = list_store_rasters(root)
        if len(names) != 1:
            raise RasterReadError(
                f"{root}: the store holds {len(names)} rasters {names[:10]}; open one as "
                f"{root}/NAME or use open_zarr_store({str(root)!r}) to open them all"
            )
        group = names[0]
    src = ZarrSource(root, group, sensor=sensor, bands=bands)
    _check_native(src, target_crs, target_res)
    return src


def _check_native(
    src: ZarrSource, target_crs: CRSLike | None, target_res: float | tuple[float, float] | None
) -> None:
    same_crs = target_crs is None or CRS.from_user_input(target_crs) == src.crs
    res = (abs(src.transform.a), abs(src.transform.e))
    want = None if target_res is None else np.broadcast_to(np.asarray(target_res, float), (2,))
    if not same_crs or (want is not None and not np.allclose(want, res, rtol=1e-9, atol=0)):
        raise ConfigError(
            f"{src.path}: zarr rasters are read on their native grid ({src.crs}, {res}); drop "
            "target_crs/target_res, read the GeoTIFFs with them, or reproject before ingest"
        )


def open_zarr_store(
    path: str | Path,
    sensor: Sensor | str | Path | None = None,
    bands: Sequence[str] | None = None,
) -> list[ZarrSource]:
    """Open every raster of a zarr store, in the store's order.

    Raises:
        RasterReadError: if the store holds no raster or one lacks georeferencing.
    """
    root, _ = find_store_root(path)
    names = list_store_rasters(root)
    if not names:
        raise RasterReadError(
            f"{root}: no raster groups (no '{DATA}' arrays) in this zarr store; create one with "
            "`dinogeo ingest INDEX -o STORE.zarr`"
        )
    return [ZarrSource(root, name, sensor=sensor, bands=bands) for name in names]
