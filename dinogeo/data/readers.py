"""Lazy, windowed raster files: GeoTIFF/COG, JPEG2000, VRT and world-file georeferenced images.

:class:`RasterSource` inspects a file once (its header, its bands against the sensor, the grid it
is read on, warped or not) and reads pixel windows on demand;
:meth:`RasterSource.from_index_row` takes the header from a ``dinogeo index`` row instead, opening
nothing. :func:`dinogeo.data.opener.open_source` picks this reader or the zarr one. Dataset
handles come from the per-process cache of :mod:`dinogeo.data.handles`, so a source can be
pickled into DataLoader workers and a handle is never shared across a fork.

Valid pixels (see :mod:`dinogeo.data.windowed`): a pixel is valid when it lies inside the raster
and, in order of precedence, its alpha is > 0 (the alpha band is never returned as data), or not
all of its bands equal the nodata value (the file's, else the sensor's; GDAL's rule), or the
file's internal mask (``dataset_mask``) marks it valid. A NaN in any band makes a pixel invalid.
World files: the CRS comes from a ``.prj`` when the file has none (:mod:`dinogeo.data.header`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.coords import BoundingBox
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import CRSError, RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.warp import calculate_default_transform
from rasterio.windows import Window

from dinogeo.data.handles import cached_handle
from dinogeo.data.header import (
    RasterHeader,
    current_row_header,
    header_from_row,
    open_dataset,
    read_header,
    resolve_bands,
    row_value,
)
from dinogeo.data.sensors import Sensor
from dinogeo.data.source import CRSLike
from dinogeo.data.windowed import WindowedSource
from dinogeo.errors import RasterReadError

__all__ = ["RasterSource"]


class RasterSource(WindowedSource):
    """A raster file read in pixel windows, in its native grid or warped onto a target grid.

    Attributes:
        path: the file.
        sensor: the spec of the returned bands (in output order).
        crs: CRS of the returned grid.
        transform: affine transform of the returned grid.
        width: grid width in pixels.
        height: grid height in pixels.
        bounds: grid bounds in ``crs`` units.
        nodata: DN marking missing pixels (file's, else sensor's), or None.
        dtype: dtype of the raw data returned by :meth:`read`.
        mask_kind: how validity is derived: ``"alpha"``, ``"nodata"``, ``"internal"`` or ``"none"``.
        warped: whether reads go through a WarpedVRT (only when the grid differs from the file's).
        storage_block: the file's block ``(rows, cols)`` (GeoTIFF tile or strip) when reads are
            not warped and it is known, else None.
    """

    def __init__(
        self,
        path: str | Path,
        sensor: str | Path | Sensor | None = None,
        bands: Sequence[str] | None = None,
        *,
        target_crs: CRSLike | None = None,
        target_res: float | tuple[float, float] | None = None,
        resampling: str = "bilinear",
        header: RasterHeader | None = None,
    ) -> None:
        """Inspect the file and resolve its bands (see :func:`open_source` for the arguments).

        Args:
            path: the raster file.
            sensor: sensor name, YAML path or spec; None infers a generic one.
            bands: names of the bands to return (see :func:`open_source`).
            target_crs: optional CRS to reproject onto.
            target_res: optional output resolution.
            resampling: resampling used when warping (a ``rasterio.enums.Resampling`` name).
            header: the file's header when already known (e.g. :meth:`from_index_row`); the
                file is then not opened until the first read. Default: read from the file.
        """
        self.path = Path(path)
        if header is None:
            ds = open_dataset(self.path)
            try:
                header = read_header(ds, self.path)
            finally:
                ds.close()
        self._inspect(header, sensor, bands)
        self._setup_grid(header, target_crs, target_res, resampling)
        self.storage_block = None if self.warped else header.block

    @classmethod
    def from_index_row(
        cls,
        row: Any,
        sensor: str | Path | Sensor | None = None,
        bands: Sequence[str] | None = None,
        *,
        target_crs: CRSLike | None = None,
        target_res: float | tuple[float, float] | None = None,
        resampling: str = "bilinear",
        check_file: bool = True,
    ) -> RasterSource:
        """Build a source from its ``dinogeo index`` row, checked as a file's header is, unopened.

        The file opens on the first read; reads equal those of ``RasterSource(path, ...)``.

        Args:
            row: a raster (not zarr) row of :func:`dinogeo.data.index.load_index`: a Series, a
                dict or an ``itertuples`` namedtuple.
            sensor: sensor name, YAML path or spec; None infers a generic one (the row's
                ``sensor`` column is not read here).
            bands: names of the bands to return (see :func:`open_source`).
            target_crs: optional CRS to reproject onto.
            target_res: optional output resolution.
            resampling: resampling used when warping.
            check_file: ``stat`` the file; if its size or mtime differ from the row (or it is
                gone), warn and read the header from the file.

        Raises:
            ValueError: the row is a zarr store's.
        """
        header = current_row_header(row) if check_file else header_from_row(row)
        grid: dict[str, Any] = {"target_crs": target_crs, "target_res": target_res}
        return cls(
            row_value(row, "path"), sensor, bands, resampling=resampling, header=header, **grid
        )

    # ------------------------------------------------------------------ inspection
    def _inspect(self, h: RasterHeader, sensor: str | Path | Sensor | None, bands: Any) -> None:
        if h.crs is None:
            raise RasterReadError(
                f"{self.path}: the raster has no CRS; assign one with "
                "'gdal_edit.py -a_srs EPSG:XXXX FILE', or place a .prj beside a world-file image"
            )
        if not h.georeferenced:
            raise RasterReadError(
                f"{self.path}: the raster has a CRS but no geotransform; add one with "
                "'gdal_edit.py -a_ullr ...' or a world file (.tfw/.pgw/.jgw/.wld)"
            )
        self._file_crs = h.crs
        self._alpha_index: int | None = h.alpha
        data_idx = list(h.data_indexes)
        if not data_idx:
            raise RasterReadError(f"{self.path}: the raster has no data bands (only alpha)")
        dtypes = set(h.dtypes)
        if len(dtypes) > 1:
            raise RasterReadError(
                f"{self.path}: bands have mixed dtypes {sorted(dtypes)}; convert with "
                "gdal_translate -ot to one dtype"
            )
        self.dtype = np.dtype(h.dtypes[0])
        out_sensor, positions = resolve_bands(h, self.path, sensor, bands)
        self.sensor = out_sensor
        self._read_indexes = [data_idx[p] for p in positions]
        self.nodata: float | None = h.nodata if h.nodata is not None else out_sensor.nodata
        # a sensor's nodata value takes precedence over an internal mask
        fallback = h.mask in ("internal", "none") and self.nodata is not None
        self.mask_kind = "nodata" if fallback else h.mask
        if sensor is not None and out_sensor.dtype != str(self.dtype):
            warnings.warn(
                f"{self.path}: the file is {self.dtype} but sensor {out_sensor.name!r} expects "
                f"{out_sensor.dtype}; check that its scale/offset fit this file",
                stacklevel=3,
            )

    def _setup_grid(
        self,
        h: RasterHeader,
        target_crs: CRSLike | None,
        target_res: float | tuple[float, float] | None,
        resampling: str,
    ) -> None:
        dst_crs = self._file_crs if target_crs is None else _parse_crs(target_crs, self.path)
        res = None
        if target_res is not None:
            if isinstance(target_res, (int, float)):
                res = (float(target_res), float(target_res))
            else:
                res = (float(target_res[0]), float(target_res[1]))
        same_crs = dst_crs == self._file_crs
        same_res = res is None or np.allclose(res, h.res, rtol=1e-9, atol=0)
        self.warped = not (same_crs and same_res)
        self._vrt_kwargs: dict[str, Any] = {}
        if not self.warped:
            self.crs = self._file_crs
            self.transform = h.transform
            self.width, self.height = h.width, h.height
        else:
            try:
                resampling_enum = Resampling[resampling]
            except KeyError as err:
                raise ValueError(
                    f"unknown resampling {resampling!r}; use one of {[r.name for r in Resampling]}"
                ) from err
            transform, width, height = calculate_default_transform(
                self._file_crs, dst_crs, h.width, h.height, *h.bounds, resolution=res
            )
            self.crs, self.transform = dst_crs, transform
            self.width, self.height = int(width), int(height)
            kw: dict[str, Any] = {
                "crs": dst_crs,
                "transform": transform,
                "width": self.width,
                "height": self.height,
                "resampling": resampling_enum,
            }
            if not h.crs_in_file:
                kw["src_crs"] = self._file_crs
            if self.mask_kind == "nodata":
                kw["src_nodata"] = self.nodata
                kw["nodata"] = self.nodata
            elif self.mask_kind in ("none", "internal"):
                # the warper writes an alpha band: 0 outside the source footprint / mask
                kw["add_alpha"] = True
                self._alpha_index = h.count + 1
                self.mask_kind = "alpha"
            self._vrt_kwargs = kw
        self.bounds = BoundingBox(
            *rasterio.transform.array_bounds(self.height, self.width, self.transform)
        )

    # ------------------------------------------------------------------ handles
    def _dataset(self) -> Any:
        key = (str(self.path), tuple(sorted((k, str(v)) for k, v in self._vrt_kwargs.items())))
        return cached_handle(key, self._open_handle)

    def _open_handle(self) -> Any:
        ds = open_dataset(self.path)
        if not self.warped:
            return ds
        return WarpedVRT(ds, **self._vrt_kwargs)

    def __repr__(self) -> str:
        return (
            f"RasterSource({str(self.path)!r}, sensor={self.sensor.name!r}, "
            f"bands={list(self.sensor.band_names)}, {self.width}x{self.height}, crs={self.crs})"
        )

    # ------------------------------------------------------------------ reading
    def _read_inner(
        self, window: Window, out_shape: tuple[int, int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        ds = self._dataset()
        idx = list(self._read_indexes)
        with_alpha = self.mask_kind == "alpha" and self._alpha_index is not None
        if with_alpha and self._alpha_index is not None:
            idx.append(self._alpha_index)
        kw: dict[str, Any] = {"window": window}
        if out_shape is not None:
            kw["out_shape"] = (len(idx), *out_shape)
            kw["resampling"] = Resampling.nearest
        try:
            arr = ds.read(idx, **kw)
            mask: np.ndarray | None = None
            if self.mask_kind == "internal":
                mkw = dict(kw)
                if out_shape is not None:
                    mkw["out_shape"] = out_shape
                mask = ds.dataset_mask(**mkw)
        except RasterioError as err:
            raise RasterReadError(
                f"{self.path}: reading window {window} failed ({err}); the file is corrupt or "
                "truncated: re-download or re-export it"
            ) from err
        if with_alpha:
            data, mask = arr[:-1], arr[-1]  # the alpha band is the stored mask
        else:
            data = arr
        return data, self._valid(data, mask)

    def _read_inside(self, r0: int, r1: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
        return self._read_inner(Window(c0, r0, c1 - c0, r1 - r0))

    def _coarse_mask(self, shape: tuple[int, int], max_size: int) -> np.ndarray:
        """A decimated read of the mask (GDAL uses the overviews when the file has them)."""
        _, valid = self._read_inner(Window(0, 0, self.width, self.height), out_shape=shape)
        return valid


def _parse_crs(value: CRSLike, path: Path) -> CRS:
    try:
        return value if isinstance(value, CRS) else CRS.from_user_input(value)
    except (CRSError, ValueError) as err:  # "EPSG:abc" fails int() inside rasterio
        raise ValueError(f"{path}: target_crs {value!r} is not a valid CRS ({err})") from err
