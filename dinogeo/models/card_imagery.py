"""Imagery opened for a backbone's weight card: the card's bands and normalisation, on any grid.

:class:`CardImage` opens a raster file or zarr store with
:func:`dinogeo.data.opener.open_source` and reads the weight card's bands (matched by name or
alias) in the card's order. Normalised reads are ``(DN * scale + offset - mean) / std`` with the
image's scale/offset (:func:`resolve_sensor`) and the card's mean/std (:func:`apply_card_stats`).

:meth:`CardImage.aligned_to` reads an image exactly on another image's grid (CRS, transform and
size) through a GDAL WarpedVRT (bilinear), as the second date of a change pair needs;
:meth:`CardImage.same_grid` says when no warp is needed. A :class:`CardImage` has the reading
surface of a raster source (``read`` of raw digital numbers, ``read_normalized``, ``sensor``,
``crs``, ``transform``, ``width``, ``height``, ``bounds``, ``path``, ``nodata``).
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.coords import BoundingBox
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import RasterioError
from rasterio.transform import array_bounds
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from dinogeo.data.band_match import match_file_bands
from dinogeo.data.imagery_spec import ImagerySpec
from dinogeo.data.opener import open_source
from dinogeo.data.readers import RasterSource
from dinogeo.data.sensors import Sensor, load_sensor
from dinogeo.data.source import Grid, Source
from dinogeo.errors import BandMismatchError, RasterReadError, SensorError
from dinogeo.models.card import WeightCard, check_bands

__all__ = ["CardImage", "apply_card_stats", "resolve_sensor"]


def resolve_sensor(card: WeightCard, imagery: ImagerySpec | None = None) -> Sensor | None:
    """Return the sensor describing an image read for ``card``, with scale/offset overrides.

    Args:
        card: the backbone's weight card.
        imagery: the image's sensor (shipped name or YAML path) and the overrides of its
            DN-to-reflectance ``scale`` (e.g. 1e-3 for x1000 products) and ``offset``; without a
            sensor the card's sensor applies together with the card's scale and offset.

    Returns:
        The sensor spec, or None when no sensor is given and the card's sensor is not shipped
        (the reader then infers a generic sensor from the file, and the card's scale and offset
        apply).

    Raises:
        SensorError: the sensor is unknown.
    """
    imagery = imagery or ImagerySpec()
    sensor, scale, offset = imagery.sensor, imagery.scale, imagery.offset
    if sensor is None:
        scale = card.scale if scale is None else scale
        offset = card.offset if offset is None else offset
        try:
            spec = load_sensor(card.sensor)
        except SensorError:
            return None
    else:
        spec = load_sensor(sensor)
    return spec.with_scaling(scale, offset)


def apply_card_stats(sensor: Sensor, card: WeightCard) -> Sensor:
    """Return ``sensor`` with the card's mean/std on the card's bands (matched by name or alias).

    Args:
        sensor: any spec holding the card's bands (others keep their statistics).
        card: the backbone's weight card.

    Returns:
        The spec with the card's normalisation statistics.

    Raises:
        SensorError: ``sensor`` lacks one of the card's bands.
    """
    bands = list(sensor.bands)
    for name, mean, std in zip(card.band_names, card.mean, card.std, strict=True):
        i = sensor.index(name)
        bands[i] = replace(bands[i], mean=float(mean), std=float(std))
    return replace(sensor, bands=tuple(bands))


class CardImage:
    """An image read in a weight card's bands and normalisation, on its own or another grid.

    Args:
        path: raster file or zarr store.
        card: the backbone's weight card.
        imagery: the image's sensor, file bands and scale/offset overrides (its ``backbone`` is
            not read: ``card`` is the backbone's); None: the card's sensor, scale and offset
            (see :func:`resolve_sensor`).

    Attributes:
        path: the image.
        card: the weight card.
        source: the underlying raster source (its own grid).
        sensor: spec of the returned bands: the card's bands in the card's order, the card's
            mean/std and the image's scale/offset (``sensor.normalize`` maps :meth:`read` output).
        crs: CRS of the returned grid.
        transform: affine transform of the returned grid.
        width: grid width in pixels.
        height: grid height in pixels.
        bounds: grid bounds in ``crs`` units.
        nodata: DN marking missing pixels (the file's, else the sensor's), or None.

    Raises:
        BandMismatchError: the image lacks bands the backbone needs.
        RasterReadError: unreadable image or no CRS.
        SensorError: an unknown sensor or band name.
    """

    def __init__(
        self,
        path: str | Path,
        card: WeightCard,
        imagery: ImagerySpec | None = None,
    ) -> None:
        imagery = imagery or ImagerySpec()
        sensor, bands = imagery.sensor, imagery.band_list
        scale, offset = imagery.scale, imagery.offset
        self.path = Path(path)
        self.card = card
        self._spec = resolve_sensor(card, imagery)
        # bands=None: ask for the card's bands directly (only those are read from disk); this
        # also reads a file holding exactly the card's bands in card order
        self._layout = list(bands) if bands is not None else list(card.band_names)
        self.source: Source = _open(self.path, card, self._spec, self._layout, bands is not None)
        have = self.source.sensor
        try:
            index = [have.index(b) for b in card.band_names]
        except SensorError as err:
            check_bands(card, list(have.band_names), source=str(self.path))
            raise BandMismatchError(
                f"{self.path}: {err}. The backbone expects bands {card.band_names}"
            ) from err
        if self.source.crs is None:
            raise RasterReadError(
                f"{self.path} has no CRS: outputs could not be georeferenced; assign one "
                "(gdal_edit.py -a_srs EPSG:XXXX) or add a .prj"
            )
        self._index = None if index == list(range(len(have.bands))) else index
        if scale is None:
            scale = card.scale if sensor is None else have.scale
        if offset is None:
            offset = card.offset if sensor is None else have.offset
        spec = apply_card_stats(have.select(list(card.band_names)), card)
        self.sensor: Sensor = replace(spec, scale=float(scale), offset=float(offset))
        self.nodata: float | None = self.source.nodata
        self.crs: CRS = self.source.crs
        self.transform: Affine = self.source.transform
        self.width: int = int(self.source.width)
        self.height: int = int(self.source.height)
        self.bounds = BoundingBox(*self.source.bounds)
        self._warp: _Warp | None = None  # set on images returned by aligned_to

    def __repr__(self) -> str:
        on = "" if self._warp is None else ", warped"
        return (
            f"CardImage({str(self.path)!r}, bands={list(self.sensor.band_names)}, "
            f"{self.width}x{self.height}, crs={self.crs}{on})"
        )

    @property
    def band_names(self) -> list[str]:
        """The bands returned, in the weight card's order."""
        return list(self.card.band_names)

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Read raw digital numbers of the card's bands in a pixel window (boundless).

        Args:
            window: pixel window on this image's grid; outside pixels are invalid.

        Returns:
            ``(data, valid)``: data (C, h, w) in the card's band order, valid a bool (h, w) mask.
        """
        if self._warp is not None:
            return self._warp.read(window)
        data, valid = self.source.read(window)
        if self._index is not None:
            data = data[self._index]
        return data, valid

    def read_normalized(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Read a window normalised with the card's statistics.

        Args:
            window: pixel window on this image's grid.

        Returns:
            ``(image, valid)``: float32 (C, h, w) with invalid pixels set to 0.0, and the mask.
        """
        data, valid = self.read(window)
        out = self.sensor.normalize(data)
        if not valid.all():
            out[:, ~valid] = 0.0
        return out, valid

    def valid(self, window: Window) -> np.ndarray:
        """Return the valid-pixel mask (h, w) of a window."""
        return self.read(window)[1]

    def same_grid(self, other: Grid) -> bool:
        """Return whether this image shares ``other``'s grid (CRS, transform and size).

        Args:
            other: any :class:`~dinogeo.data.source.Grid` (a source, another image).
        """
        return (
            self.crs == other.crs
            and (self.width, self.height) == (other.width, other.height)
            and all(
                abs(x - y) <= 1e-9 * max(1.0, abs(x))
                for x, y in zip(tuple(self.transform)[:6], tuple(other.transform)[:6])
            )
        )

    def aligned_to(self, other: Grid) -> CardImage:
        """Return this image read exactly on ``other``'s grid (itself when the grids match).

        Pixels are resampled bilinearly through a GDAL WarpedVRT onto ``other``'s CRS,
        transform and size; pixels outside this image's footprint are invalid.

        Args:
            other: the image whose grid wins (e.g. date 1): anything with ``crs``,
                ``transform``, ``width``, ``height`` and ``path``.

        Returns:
            An image with ``other``'s grid, reading this image's data.

        Raises:
            RasterReadError: this image is a zarr store, or the warp cannot be set up.
        """
        if self.same_grid(other):
            return self
        if not isinstance(self.source, RasterSource):
            raise RasterReadError(
                f"{self.path}: a zarr raster is read on the grid it was ingested on and cannot "
                f"be resampled onto the grid of {getattr(other, 'path', 'the target')}; give both dates on the same grid "
                "(ingest them onto one grid) or pass the raster file instead"
            )
        aligned = copy.copy(self)
        aligned._warp = _Warp(self, other)
        aligned.crs, aligned.transform = other.crs, other.transform
        aligned.width, aligned.height = int(other.width), int(other.height)
        aligned.bounds = BoundingBox(*array_bounds(aligned.height, aligned.width, other.transform))
        return aligned


def _open(
    path: Path, card: WeightCard, spec: Sensor | None, layout: list[str], user_bands: bool
) -> Source:
    """Open ``path`` asking for ``layout`` bands; band errors name the card's bands."""
    try:
        return open_source(path, spec, layout)
    except SensorError as err:
        if not user_bands:  # a card band the file lacks: name the file's bands and the fix
            check_bands(card, list(open_source(path, spec).sensor.band_names), source=str(path))
        raise BandMismatchError(
            f"{path}: {err}. The backbone expects bands {card.band_names}"
        ) from err


class _Warp:
    """Reads of an image's card bands on a target grid through a WarpedVRT (one per process)."""

    def __init__(self, image: CardImage, target: Grid) -> None:
        self.path = image.path
        self.target = str(getattr(target, "path", "the first date"))
        self.crs, self.transform = target.crs, target.transform
        self.width, self.height = int(target.width), int(target.height)
        self.src_crs = image.source.crs
        self.nodata = image.nodata
        self.dtype = np.dtype(image.source.dtype)
        numbers, alpha = _file_bands(image.path, image._spec, image._layout)
        index = image._index if image._index is not None else range(len(numbers))
        self.indexes = [numbers[i] for i in index]
        self.alpha = alpha
        self._handle: tuple[int, Any, WarpedVRT] | None = None
        self._vrt()  # set-up errors surface now, not at the first read

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handle"] = None  # reopened in each worker process
        return state

    def _vrt(self) -> WarpedVRT:
        pid = os.getpid()
        if self._handle is None or self._handle[0] != pid:
            kw: dict[str, Any] = {
                "crs": self.crs,
                "transform": self.transform,
                "width": self.width,
                "height": self.height,
                "resampling": Resampling.bilinear,
                "src_nodata": self.nodata,
                "nodata": self.nodata,
                "add_alpha": self.alpha is None,  # a file's own alpha band is warped as alpha
            }
            try:
                ds = rasterio.open(self.path)
                if ds.crs is None:
                    kw["src_crs"] = self.src_crs  # from a .prj sidecar
                vrt = WarpedVRT(ds, **kw)
            except RasterioError as err:
                raise RasterReadError(
                    f"cannot warp {self.path} onto the grid of {self.target}: {err}; reproject "
                    "it yourself (gdalwarp) onto the first date's grid"
                ) from err
            self._handle = (pid, ds, vrt)
        return self._handle[2]

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        c0, r0 = int(round(window.col_off)), int(round(window.row_off))
        w, h = int(round(window.width)), int(round(window.height))
        if w <= 0 or h <= 0:
            raise ValueError(f"window {window} is empty; width and height must be positive")
        nan_fill = self.nodata is not None and math.isnan(self.nodata)
        fill = 0 if self.nodata is None or nan_fill else self.nodata
        data = np.full((len(self.indexes), h, w), np.nan if nan_fill else fill, dtype=self.dtype)
        valid = np.zeros((h, w), dtype=bool)
        ic0, ir0 = max(c0, 0), max(r0, 0)
        ic1, ir1 = min(c0 + w, self.width), min(r0 + h, self.height)
        if ic1 <= ic0 or ir1 <= ir0:
            return data, valid
        inner = Window(ic0, ir0, ic1 - ic0, ir1 - ir0)
        vrt = self._vrt()
        try:
            arr = vrt.read(self.indexes, window=inner)
            alpha = vrt.read(self.alpha or vrt.count, window=inner)
        except RasterioError as err:
            raise RasterReadError(
                f"{self.path}: reading window {window} on the grid of {self.target} failed "
                f"({err}); the file is corrupt or truncated: re-download or re-export it"
            ) from err
        ok = alpha > 0
        if self.nodata is not None and not nan_fill:
            ok &= (arr != arr.dtype.type(self.nodata)).any(axis=0)
        if arr.dtype.kind == "f":
            ok &= np.isfinite(arr).all(axis=0)
        sl = (slice(ir0 - r0, ir1 - r0), slice(ic0 - c0, ic1 - c0))
        data[(slice(None), *sl)] = arr
        valid[sl] = ok
        return data, valid


def _file_bands(path: Path, spec: Sensor | None, layout: list[str]) -> tuple[list[int], int | None]:
    """1-based file band numbers of the bands a source opened with ``layout`` returns, and alpha.

    A local equivalent of the band resolution inside :class:`~dinogeo.data.readers.RasterSource`
    (which keeps the band numbers private), through the public :func:`match_file_bands`.
    """
    try:
        with rasterio.open(path) as ds:
            alpha = [i for i in ds.indexes if ds.colorinterp[i - 1] == ColorInterp.alpha]
            data = [i for i in ds.indexes if i not in alpha]
            descriptions = [ds.descriptions[i - 1] for i in data]
            dtype, nodata = np.dtype(ds.dtypes[data[0] - 1]), ds.nodata
    except RasterioError as err:
        raise RasterReadError(f"{path}: cannot be opened as a raster ({err})") from err
    _, positions = match_file_bands(path, len(data), descriptions, dtype, nodata, spec, layout)
    return [data[p] for p in positions], (alpha[0] if alpha else None)
