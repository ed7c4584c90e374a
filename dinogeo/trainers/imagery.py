"""Imagery read for a backbone: the weight card's band order and normalisation, any grid.

:class:`ImageReader` opens an image with :func:`dinogeo.data.readers.open_source`, selects the
backbone's bands (by name or alias) in the weight card's order, and normalises digital numbers as
``(DN * scale + offset - mean) / std`` with the image sensor's scale/offset and the card's
statistics. :meth:`ImageReader.aligned_to` reads the same image on another image's grid
(reprojected/resampled with a WarpedVRT), as the second date of a change pair needs.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from dinogeo.data.readers import open_source
from dinogeo.errors import BandMismatchError, RasterReadError, SensorError
from dinogeo.models.card import WeightCard, check_bands
from dinogeo.trainers.base import image_sensor

__all__ = ["ImageReader"]


class ImageReader:
    """An image read in the weight card's bands and normalisation.

    Args:
        path: the image.
        card: the backbone's weight card.
        sensor: the image's sensor (default: the card's).
        bands: the file's band names in file order (when it holds a subset of the sensor).
        scale: override of the sensor's DN-to-reflectance scale.
        offset: override of the sensor's offset.

    Raises:
        BandMismatchError: the image lacks bands the backbone needs.
        RasterReadError: unreadable image or no CRS.
    """

    def __init__(
        self,
        path: str | Path,
        card: WeightCard,
        *,
        sensor: str | None = None,
        bands: list[str] | None = None,
        scale: float | None = None,
        offset: float | None = None,
    ) -> None:
        self.path = Path(path)
        self.card = card
        if sensor is None:  # the card's sensor: also its scale/offset unless overridden
            scale = card.scale if scale is None else scale
            offset = card.offset if offset is None else offset
        spec = image_sensor(sensor, None, scale=scale, offset=offset, card=card)
        try:
            self.source = open_source(self.path, spec, bands)
        except BandMismatchError:
            if bands is not None or spec is None:
                raise
            # a file with exactly the backbone's band count and no band names: card order
            self.source = open_source(self.path, spec, card.band_names)
        except SensorError as err:
            raise BandMismatchError(
                f"{self.path}: {err}. The backbone expects bands {card.band_names}"
            ) from err
        names = list(self.source.sensor.band_names)
        try:
            self.index = [self.source.sensor.index(b) for b in card.band_names]
        except SensorError:
            check_bands(card, names, source=str(self.path))
            raise  # check_bands raises; kept for type checkers
        file_scale = self.source.sensor.scale if scale is None else float(scale)
        file_offset = self.source.sensor.offset if offset is None else float(offset)
        mean = np.asarray(card.mean, dtype=np.float64)
        std = np.asarray(card.std, dtype=np.float64)
        self._a = (file_scale / std).astype(np.float32)[:, None, None]
        self._b = ((file_offset - mean) / std).astype(np.float32)[:, None, None]
        self.crs = self.source.crs
        self.transform = self.source.transform
        self.width, self.height = self.source.width, self.source.height
        self.bounds = tuple(self.source.bounds)
        self._target: ImageReader | None = None
        self._vrt: tuple[int, Any, WarpedVRT] | None = None

    @property
    def band_names(self) -> list[str]:
        """The bands returned, in the weight card's order."""
        return list(self.card.band_names)

    def _raw(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        if self._target is None:
            data, valid = self.source.read(window)
            return data[self.index], valid
        return self._read_warped(window)

    def _read_warped(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        target = self._target
        assert target is not None  # only called on aligned readers
        c0, r0 = int(round(window.col_off)), int(round(window.row_off))
        w, h = int(round(window.width)), int(round(window.height))
        count = len(self.index)
        data = np.zeros((count, h, w), dtype=np.float64)
        valid = np.zeros((h, w), dtype=bool)
        ic0, ir0 = max(c0, 0), max(r0, 0)
        ic1, ir1 = min(c0 + w, target.width), min(r0 + h, target.height)
        if ic1 <= ic0 or ir1 <= ir0:
            return data, valid
        inner = Window(ic0, ir0, ic1 - ic0, ir1 - ir0)
        file_bands = getattr(self.source, "_read_indexes", None)  # GeoTIFF band numbers
        if file_bands is None:
            raise RasterReadError(
                f"{self.path}: date 2 must be a GeoTIFF/COG/VRT to be resampled onto date 1's "
                "grid; convert it, or give both dates on the same grid"
            )
        indexes = [int(file_bands[i]) for i in self.index]
        nodata = self.source.nodata
        try:
            vrt = self._warped_vrt(target)
            arr = vrt.read(indexes, window=inner).astype(np.float64)
            alpha = vrt.read(vrt.count, window=inner)
        except rasterio.errors.RasterioError as err:
            raise RasterReadError(
                f"{self.path}: reprojecting onto the date-1 grid failed: {err}"
            ) from err
        ok = alpha > 0
        if nodata is not None and not math.isnan(nodata):
            ok &= (arr != nodata).any(axis=0)
        ok &= np.isfinite(arr).all(axis=0)
        sl = (slice(ir0 - r0, ir1 - r0), slice(ic0 - c0, ic1 - c0))
        data[(slice(None), *sl)] = arr
        valid[sl] = ok
        return data, valid

    def _warped_vrt(self, target: ImageReader) -> WarpedVRT:
        """The WarpedVRT onto ``target``'s grid, opened once per process."""
        pid = os.getpid()
        if self._vrt is None or self._vrt[0] != pid:
            ds = rasterio.open(self.path)
            vrt = WarpedVRT(
                ds,
                src_crs=ds.crs or self.source.crs,
                crs=target.crs,
                transform=target.transform,
                width=target.width,
                height=target.height,
                resampling=Resampling.bilinear,
                src_nodata=self.source.nodata,
                nodata=self.source.nodata,
                add_alpha=True,
            )
            self._vrt = (pid, ds, vrt)
        return self._vrt[2]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_vrt"] = None  # handles are reopened in each worker process
        return state

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Normalised float32 (C, h, w) in card band order (0 where invalid) and the valid mask."""
        data, valid = self._raw(window)
        out = data.astype(np.float32) * self._a + self._b
        out[:, ~valid] = 0.0
        return out, valid

    def valid(self, window: Window) -> np.ndarray:
        """Valid-pixel mask (h, w) of a window."""
        return self._raw(window)[1]

    def same_grid(self, other: ImageReader) -> bool:
        """Whether this image shares ``other``'s grid (CRS, transform and size)."""
        return (
            self.crs == other.crs
            and self.width == other.width
            and self.height == other.height
            and np.allclose(tuple(self.transform)[:6], tuple(other.transform)[:6], atol=1e-9)
        )

    def aligned_to(self, other: ImageReader) -> ImageReader:
        """This image read on ``other``'s grid (itself when the grids already match)."""
        if self.same_grid(other):
            return self
        aligned = ImageReader.__new__(ImageReader)
        aligned.__dict__.update(self.__dict__)
        aligned._target = other
        aligned._vrt = None
        aligned.crs, aligned.transform = other.crs, other.transform
        aligned.width, aligned.height, aligned.bounds = other.width, other.height, other.bounds
        return aligned
