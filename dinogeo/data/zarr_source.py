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

import functools
import json
import math
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from affine import Affine
from rasterio.coords import BoundingBox
from rasterio.crs import CRS
from rasterio.windows import Window

from dinogeo.data.geozarr import COARSE_SIZE, GeoInfo, decode_geoinfo
from dinogeo.data.sensors import Band, Sensor, band_count_mismatch, generic_sensor, load_sensor
from dinogeo.data.source import CRSLike
from dinogeo.data.zarr_chunks import ArrayReader
from dinogeo.errors import BandMismatchError, ConfigError, RasterReadError, SensorError

__all__ = [
    "ZarrSource",
    "find_store_root",
    "list_store_rasters",
    "open_zarr_source",
    "open_zarr_store",
]

DATA = "data"
VALID = "valid"


def find_store_root(path: str | Path) -> tuple[Path, str]:
    """Split a path inside a zarr store into ``(store root, group path)``.

    ``archive.zarr/S2_tile`` gives ``(archive.zarr, "S2_tile")``; the root is the top-most folder
    of an unbroken chain of folders holding ``zarr.json``.

    Raises:
        RasterReadError: if ``path`` is not inside a zarr v3 store.
    """
    p = Path(path).expanduser().absolute()
    if not (p / "zarr.json").is_file():
        raise RasterReadError(
            f"{p}: not a zarr v3 store or group (no zarr.json); pass a store written by "
            "`dinogeo ingest` or one of its raster groups (store.zarr/NAME)"
        )
    root = p
    while (root.parent / "zarr.json").is_file() and root.parent != root:
        root = root.parent
    return root, ("" if p == root else p.relative_to(root).as_posix())


def list_store_rasters(store: str | Path) -> list[str]:
    """Return the group paths of the rasters in a store (``""`` when the root itself is one).

    Uses the list recorded by ingest in the root attributes; otherwise walks the groups looking for
    a 3-D ``data`` array.
    """
    root = Path(store).expanduser().absolute()
    meta = _read_json(root / "zarr.json")
    names = ((meta.get("attributes") or {}).get("dinogeo") or {}).get("rasters")
    if isinstance(names, list):
        return [str(n) for n in names]
    found: list[str] = []
    for dirpath, dirnames, _files in os.walk(root):
        d = Path(dirpath)
        if (d / DATA / "zarr.json").is_file():
            found.append(d.relative_to(root).as_posix() if d != root else "")
            dirnames.clear()
        elif not (d / "zarr.json").is_file():
            dirnames.clear()
    return sorted(found)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RasterReadError(
            f"{path}: cannot read zarr metadata ({err}); is this a complete zarr v3 store?"
        ) from err
    if not isinstance(data, dict):
        raise RasterReadError(f"{path}: zarr metadata is not a JSON object; the store is corrupt")
    return data


def _is_unfinished(meta: Path) -> bool:
    """Whether the store's root marks an ingest in progress (parsed once per root version)."""
    try:
        st = meta.stat()
    except OSError:
        return False  # reported with a clear message when the metadata is read
    return _root_unfinished(str(meta), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=64)
def _root_unfinished(meta: str, mtime_ns: int, size: int) -> bool:
    entry = (_read_json(Path(meta)).get("attributes") or {}).get("dinogeo")
    return isinstance(entry, dict) and entry.get("complete") is False


class ZarrSource:
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
        if _is_unfinished(self.store_path / "zarr.json"):
            raise RasterReadError(
                f"{self.store_path}: the store is unfinished (its ingest was interrupted); rerun "
                "the same `dinogeo ingest` command to resume it"
            )
        self.info = _load_info(self.store_path, self.group)
        self.storage_block = _chunk_shape(self.path / DATA / "zarr.json")
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

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size (x, y) of the grid in CRS units."""
        return (abs(self.transform.a), abs(self.transform.e))

    @property
    def count(self) -> int:
        """Number of returned bands."""
        return len(self.sensor.bands)

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

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Read a window, boundless.

        Args:
            window: pixel window (offsets and sizes are rounded to integers); parts outside the
                raster are filled with nodata (or 0) and marked invalid.

        Returns:
            ``(raw, valid)``: raw DN ``(C, h, w)`` in the sensor's band order and the store's dtype,
            and a bool ``(h, w)`` mask of valid pixels.
        """
        data, valid_reader = self._open()
        row0, col0 = int(round(window.row_off)), int(round(window.col_off))
        h, w = int(round(window.height)), int(round(window.width))
        if h <= 0 or w <= 0:
            raise ValueError(f"window {window} is empty; width and height must be positive")
        r0, r1 = max(row0, 0), min(row0 + h, self.height)
        c0, c1 = max(col0, 0), min(col0 + w, self.width)
        block = data.read(r0, r1, c0, c1) if r0 < r1 and c0 < c1 else None
        if block is not None and self.band_index != list(range(self.info.count)):
            block = block[self.band_index]
        stored = None
        if block is not None and valid_reader is not None:
            stored = valid_reader.read(r0, r1, c0, c1)
        if block is not None and (r0, r1, c0, c1) == (row0, row0 + h, col0, col0 + w):
            return block, self._valid(block, stored)  # inside the raster: no boundless padding
        nan_nodata = self.nodata is not None and np.isnan(self.nodata)
        fill = 0 if self.nodata is None or nan_nodata else self.nodata
        raw = np.full((len(self.band_index), h, w), fill, dtype=self.dtype)
        if nan_nodata and self.dtype.kind == "f":
            raw[...] = np.nan
        valid = np.zeros((h, w), dtype=bool)
        if block is None:
            return raw, valid
        inner = (slice(r0 - row0, r1 - row0), slice(c0 - col0, c1 - col0))
        raw[(slice(None), *inner)] = block
        valid[inner] = self._valid(block, stored)
        return raw, valid

    def _valid(self, block: np.ndarray, stored: np.ndarray | None) -> np.ndarray:
        """Valid mask of an in-bounds block: the stored mask, else not all bands equal nodata."""
        if stored is not None:
            valid = stored > 0
        elif self.mask_kind == "nodata" and self.nodata is not None and not np.isnan(self.nodata):
            valid = (block != block.dtype.type(self.nodata)).any(axis=0)
        else:
            valid = np.ones(block.shape[1:], dtype=bool)
        if block.dtype.kind == "f":
            valid &= ~np.isnan(block).any(axis=0)
        return valid

    def coarse_valid_mask(self, max_size: int = COARSE_SIZE) -> np.ndarray:
        """Valid mask of the whole grid, decimated (as :meth:`RasterSource.coarse_valid_mask`).

        Uses the ``valid_coarse`` array written at ingest when it fits the request, else samples
        the pixel centres of each coarse cell, reading one chunk-row at a time.

        Args:
            max_size: longest side of the returned mask; each cell covers about
                ``ceil(max(width, height) / max_size)`` pixels per side.

        Returns:
            bool array of shape about ``(height / f, width / f)``.
        """
        f = max(1, math.ceil(max(self.width, self.height) / max_size))
        shape = (max(1, math.ceil(self.height / f)), max(1, math.ceil(self.width / f)))
        if self.mask_kind == "none" and self.dtype.kind != "f":
            return np.ones(shape, dtype=bool)
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

    def valid_fraction(self, max_size: int = COARSE_SIZE) -> float:
        """Estimated fraction of valid pixels, from :meth:`coarse_valid_mask`."""
        return float(self.coarse_valid_mask(max_size).mean())

    def read_normalized(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Read a window and normalise it with the sensor spec.

        Returns:
            ``(image, valid)``: float32 ``(C, h, w)`` normalised values with invalid pixels set to
            0.0, and the bool ``(h, w)`` valid mask.
        """
        raw, valid = self.read(window)
        image = self.sensor.normalize(raw)
        if not valid.all():
            image[:, ~valid] = 0.0
        return image, valid


def _load_info(store: Path, group: str) -> GeoInfo:
    where = f"{store}/{group}" if group else str(store)
    gdir = store / group if group else store
    gmeta = _read_json(gdir / "zarr.json")
    if gmeta.get("node_type") != "group":
        raise RasterReadError(
            f"{where}: not a zarr group; pass the store or one of its raster groups"
        )
    dmeta_path = gdir / DATA / "zarr.json"
    if not dmeta_path.is_file():
        raise RasterReadError(
            f"{where}: no '{DATA}' array in this group; pass a raster group written by "
            f"`dinogeo ingest` (raster groups: {list_store_rasters(store)[:10]})"
        )
    dmeta = _read_json(dmeta_path)
    if dmeta.get("node_type") != "array":
        raise RasterReadError(f"{where}/{DATA}: not a zarr array")
    dattrs = dmeta.get("attributes") or {}
    gm_name = dattrs.get("grid_mapping")
    gm_attrs: dict[str, Any] = {}
    if isinstance(gm_name, str) and (gdir / gm_name / "zarr.json").is_file():
        gm_attrs = _read_json(gdir / gm_name / "zarr.json").get("attributes") or {}
    dtype = dmeta.get("data_type")
    if not isinstance(dtype, str):
        raise RasterReadError(f"{where}/{DATA}: unsupported data type {dtype!r}")
    return decode_geoinfo(
        gmeta.get("attributes") or {},
        shape=tuple(int(s) for s in dmeta.get("shape", ())),
        dtype=dtype,
        data_attrs=dattrs,
        grid_mapping_attrs=gm_attrs,
        where=where,
    )


def _chunk_shape(meta: Path) -> tuple[int, int] | None:
    """The last two chunk dimensions of a regular-grid zarr array, from its ``zarr.json``."""
    grid = _read_json(meta).get("chunk_grid") or {}
    shape = (grid.get("configuration") or {}).get("chunk_shape")
    if grid.get("name") != "regular" or not isinstance(shape, list) or len(shape) < 2:
        return None
    return int(shape[-2]), int(shape[-1])


def _resolve_bands(
    info: GeoInfo,
    sensor: Sensor | str | Path | None,
    bands: Sequence[str] | str | None,
    where: str,
) -> tuple[Sensor, list[int]]:
    """Return the output sensor and the store band of each output band (as the GeoTIFF reader)."""
    if isinstance(bands, str):
        bands = [bands]
    spec: Sensor | None = None
    if sensor is not None:
        spec = load_sensor(sensor)
    elif info.sensor:
        try:
            spec = load_sensor(info.sensor)
        except SensorError:
            spec = None
    if spec is None:
        base = generic_sensor(info.count, info.dtype, info.nodata)
        layout = replace(
            base,
            bands=tuple(
                Band(name=b.name, aliases=(d,) if d and d != b.name else ())
                for b, d in zip(base.bands, info.band_names)
            ),
        )
    else:
        layout = _store_layout(info, spec, bands, where)
    if bands is None:
        return layout, list(range(info.count))
    positions = []
    for name in bands:
        try:
            positions.append(layout.index(name))
        except SensorError as err:
            raise SensorError(
                f"{where}: band {name!r} is not among the store's bands "
                f"{list(layout.band_names)} (sensor {layout.name!r})"
            ) from err
    return layout.select(list(bands)), positions


def _store_layout(info: GeoInfo, spec: Sensor, bands: Sequence[str] | None, where: str) -> Sensor:
    """The sensor describing the store's bands in store order."""
    if info.band_names and all(info.band_names):
        try:
            return spec.select(list(info.band_names))
        except SensorError:
            pass
    if len(spec.bands) == info.count:
        return spec
    if bands is not None and len(bands) == info.count:
        return spec.select(list(bands))
    raise BandMismatchError(
        f"{where}: bands {list(info.band_names)}: {band_count_mismatch(spec, info.count, 'store')}"
    )


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
