"""Smooth blending weights and a strip-sized weighted accumulator for stitching tiles.

Each tile's prediction is multiplied by a separable weight that ramps smoothly (a raised cosine)
from the tile edge across the overlap, and by the tile's valid mask, so nodata pixels contribute
nothing. Edges on the raster border keep full weight (no neighbour covers them). A ``margin`` of
pixels at inner edges gets zero weight, so predictions spoiled by padding at the tile border never
reach the output as long as the model's receptive field fits in the margin; the neighbouring tile
covers those pixels with positive weight when ``margin < overlap / 2``. The accumulated sums are
normalised by the summed weights, so the effective weights sum to one wherever any input is valid.

:class:`StripAccumulator` only holds ``tile`` rows of the raster: finished rows are handed out and
dropped, so memory depends on the raster width and the tile size, never on the raster height.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from dinogeo.errors import ConfigError

__all__ = ["StripAccumulator", "blend_weights", "ramp_1d"]


def ramp_1d(size: int, overlap: int, margin: int, start_edge: bool, end_edge: bool) -> np.ndarray:
    """Return 1-D blend weights for a tile of ``size`` pixels.

    Args:
        size: tile length.
        overlap: overlap with the neighbouring tiles; the ramp spans it.
        margin: pixels at an inner edge with zero weight (``0 <= 2 * margin < overlap``).
        start_edge: the tile start lies on the raster border (full weight there).
        end_edge: the tile end lies on the raster border (full weight there).

    Returns:
        float64 weights in ``[0, 1]``, strictly positive beyond the margin.
    """
    if overlap and not 0 <= 2 * margin < overlap:
        raise ConfigError(f"blend margin {margin} must be below half the overlap {overlap}")
    idx = np.arange(size, dtype=np.float64)
    if overlap == 0:
        return np.ones(size)
    length = float(overlap - 2 * margin)

    def side(dist: np.ndarray) -> np.ndarray:
        t = np.clip((dist + 0.5 - margin) / length, 0.0, 1.0)
        return 0.5 - 0.5 * np.cos(np.pi * t)

    w = np.ones(size)
    if not start_edge:
        w = np.minimum(w, side(idx))
    if not end_edge:
        w = np.minimum(w, side(size - 1 - idx))
    return w


@lru_cache(maxsize=32)
def _weights_cached(
    size: int, overlap: int, margin: int, edges: tuple[bool, bool, bool, bool]
) -> np.ndarray:
    top, bottom, left, right = edges
    wy = ramp_1d(size, overlap, margin, top, bottom)
    wx = ramp_1d(size, overlap, margin, left, right)
    out = np.outer(wy, wx).astype(np.float32)
    out.setflags(write=False)
    return out


def blend_weights(
    size: int, overlap: int, margin: int, edges: tuple[bool, bool, bool, bool]
) -> np.ndarray:
    """Return the separable 2-D blend weights of a square tile.

    Args:
        size: tile side in pixels.
        overlap: overlap between tiles in pixels.
        margin: zero-weight pixels at inner edges.
        edges: whether (top, bottom, left, right) lie on the raster border.

    Returns:
        A read-only float32 ``(size, size)`` array (cached).
    """
    return _weights_cached(size, overlap, margin, tuple(edges))  # type: ignore[arg-type]


class StripAccumulator:
    """Weighted sums of tile predictions over a rolling band of ``capacity`` raster rows.

    Args:
        channels: prediction channels.
        width: raster width in (output) pixels.
        capacity: rows held at once (the tile size is enough when rows are popped after every
            tile row).
        top: first raster row held (rows above it are already final and are ignored).
    """

    def __init__(self, channels: int, width: int, capacity: int, top: int = 0) -> None:
        self.channels = channels
        self.width = width
        self.capacity = capacity
        self.top = top
        self.sums = np.zeros((channels, capacity, width), dtype=np.float32)
        self.weights = np.zeros((capacity, width), dtype=np.float32)

    @property
    def nbytes(self) -> int:
        """Bytes held by the accumulator buffers."""
        return int(self.sums.nbytes + self.weights.nbytes)

    def add(self, pred: np.ndarray, weight: np.ndarray, row_off: int, col_off: int) -> None:
        """Add one tile's prediction times its weight.

        Args:
            pred: ``(channels, h, w)`` prediction.
            weight: ``(h, w)`` weight (blend weight times valid mask).
            row_off: raster row of the tile's first row.
            col_off: raster column of the tile's first column.

        Raises:
            ConfigError: if the tile reaches below the rows held.
        """
        h, w = weight.shape
        r0, r1 = max(row_off, self.top), min(row_off + h, self.top + self.capacity)
        c0, c1 = max(col_off, 0), min(col_off + w, self.width)
        if row_off + h > self.top + self.capacity:
            raise ConfigError(
                f"tile rows {row_off}..{row_off + h} exceed the accumulator rows "
                f"{self.top}..{self.top + self.capacity}; pop finished rows first"
            )
        if r0 >= r1 or c0 >= c1:
            return
        tr, tc = slice(r0 - row_off, r1 - row_off), slice(c0 - col_off, c1 - col_off)
        br = slice(r0 - self.top, r1 - self.top)
        wt = weight[tr, tc]
        self.sums[:, br, c0:c1] += pred[:, tr, tc] * wt
        self.weights[br, c0:c1] += wt

    def pop(self, row_stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Hand out rows ``[top, row_stop)`` (now final) and drop them from the buffer.

        Args:
            row_stop: one past the last final row.

        Returns:
            Copies of the weighted sums ``(channels, n, width)`` and summed weights ``(n, width)``.
        """
        n = max(0, min(row_stop - self.top, self.capacity))
        sums = self.sums[:, :n].copy()
        weights = self.weights[:n].copy()
        rest = self.capacity - n
        if n:
            self.sums[:, :rest] = self.sums[:, n:]
            self.sums[:, rest:] = 0.0
            self.weights[:rest] = self.weights[n:]
            self.weights[rest:] = 0.0
        self.top += n
        return sums, weights
