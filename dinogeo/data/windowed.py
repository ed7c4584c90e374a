"""What every windowed source shares: boundless windows, the valid-pixel rule, normalised reads.

:class:`WindowedSource` is the base of :class:`~dinogeo.data.readers.RasterSource` and
:class:`~dinogeo.data.zarr_source.ZarrSource`. A subclass sets the grid and band attributes and
reads the part of a window that lies inside the raster (:meth:`WindowedSource._read_inside`) and
a decimated valid mask (:meth:`WindowedSource._coarse_mask`);
the base pads windows that reach outside (outside pixels are invalid and hold nodata, or 0),
derives validity the same way for both storage formats and normalises with the sensor spec.

Valid pixels: a pixel is valid when it lies inside the raster and, in order of precedence, its
stored mask (an alpha band, a file's internal mask or a zarr store's ``valid`` array) is > 0, or
not all of its bands equal the nodata value, and no band is NaN.
"""

from __future__ import annotations

import math

import numpy as np
from rasterio.windows import Window

from dinogeo.data.source import Source

__all__ = ["WindowedSource", "coarse_shape", "zero_invalid"]


class WindowedSource(Source):
    """The members of a :class:`~dinogeo.data.source.Source` that every storage format shares.

    A subclass sets the grid and band attributes the protocol lists and implements
    :meth:`_read_inside` and :meth:`_coarse_mask`.
    """

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size (x, y) of the grid in CRS units."""
        return (abs(self.transform.a), abs(self.transform.e))

    @property
    def count(self) -> int:
        """Number of returned bands."""
        return len(self.sensor.bands)

    def _read_inside(self, r0: int, r1: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
        """Read rows ``r0:r1`` and columns ``c0:c1``, all inside the grid: ``(data, valid)``."""
        raise NotImplementedError

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Read raw digital numbers of a pixel window (boundless).

        Args:
            window: pixel window on the grid; offsets and sizes are rounded to integers and may
                extend beyond the raster (outside pixels are invalid and filled with nodata,
                or 0).

        Returns:
            ``(data, valid)``: data (C, h, w) in sensor band order and the source's dtype, valid
            a bool (h, w) mask.
        """
        c0, r0 = int(round(window.col_off)), int(round(window.row_off))
        w, h = int(round(window.width)), int(round(window.height))
        if w <= 0 or h <= 0:
            raise ValueError(f"window {window} is empty; width and height must be positive")
        ic0, ir0 = max(c0, 0), max(r0, 0)
        ic1, ir1 = min(c0 + w, self.width), min(r0 + h, self.height)
        if ic0 == c0 and ir0 == r0 and ic1 == c0 + w and ir1 == r0 + h:
            return self._read_inside(r0, r0 + h, c0, c0 + w)
        nan_nodata = self.nodata is not None and math.isnan(self.nodata)
        fill = 0 if self.nodata is None or nan_nodata else self.nodata
        data = np.full((self.count, h, w), fill, dtype=self.dtype)
        if nan_nodata and self.dtype.kind == "f":
            data[...] = np.nan
        valid = np.zeros((h, w), dtype=bool)
        if ic1 > ic0 and ir1 > ir0:
            inner, ivalid = self._read_inside(ir0, ir1, ic0, ic1)
            sl = (slice(ir0 - r0, ir1 - r0), slice(ic0 - c0, ic1 - c0))
            data[(slice(None), *sl)] = inner
            valid[sl] = ivalid
        return data, valid

    def _valid(self, data: np.ndarray, stored: np.ndarray | None) -> np.ndarray:
        """Valid mask of in-bounds data: the stored mask, else not all bands equal nodata."""
        nodata = self.nodata
        if stored is not None:
            valid = stored > 0
        elif self.mask_kind == "nodata" and nodata is not None and not math.isnan(nodata):
            valid = (data != data.dtype.type(nodata)).any(axis=0)
        else:
            valid = np.ones(data.shape[1:], dtype=bool)
        if data.dtype.kind == "f":
            valid &= ~np.isnan(data).any(axis=0)
        return valid

    def read_normalized(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Read a window as normalised float32 (sensor scale/offset and mean/std).

        Returns:
            ``(image, valid)``: image (C, h, w) float32 with invalid pixels set to 0.0, and the
            bool (h, w) valid mask.
        """
        data, valid = self.read(window)
        out = self.sensor.normalize(data)
        if not valid.all():
            zero_invalid(out, valid, data.dtype)
        return out, valid

    def coarse_valid_mask(self, max_size: int = 256) -> np.ndarray:
        """Valid mask of the whole grid, decimated.

        Args:
            max_size: longest side of the returned mask; each cell covers about
                ``ceil(max(width, height) / max_size)`` pixels per side.

        Returns:
            bool array of shape about ``(height / f, width / f)``.
        """
        shape = coarse_shape(self.width, self.height, max_size)
        if self.mask_kind == "none" and self.dtype.kind != "f":
            return np.ones(shape, dtype=bool)  # nothing can be invalid: no mask, no NaN
        return self._coarse_mask(shape, max_size)

    def _coarse_mask(self, shape: tuple[int, int], max_size: int) -> np.ndarray:
        """The decimated valid mask of ``shape`` (the source's own way of reading it)."""
        raise NotImplementedError

    def valid_fraction(self, max_size: int = 256) -> float:
        """Estimated fraction of valid pixels, from :meth:`coarse_valid_mask`."""
        return float(self.coarse_valid_mask(max_size).mean())


def coarse_shape(width: int, height: int, max_size: int) -> tuple[int, int]:
    """Shape ``(rows, cols)`` of a decimated mask whose longest side is at most ``max_size``.

    Each cell covers ``ceil(max(width, height) / max_size)`` pixels per side.
    """
    f = max(1, math.ceil(max(width, height) / max_size))
    return (max(1, math.ceil(height / f)), max(1, math.ceil(width / f)))


def zero_invalid(image: np.ndarray, valid: np.ndarray, raw_dtype: np.dtype) -> None:
    """Set invalid pixels of a normalised (C, h, w) image to 0.0 in place.

    Multiplying by the mask is several times faster than boolean indexing; it is used unless the
    raw data were floats, whose NaN (always invalid) would survive a multiplication.
    """
    if raw_dtype.kind == "f":
        image[:, ~valid] = 0.0
    else:
        image *= valid.astype(np.float32)
