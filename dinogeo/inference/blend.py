"""Smooth blending weights and a strip-sized weighted accumulator for stitching tiles.

Each tile's prediction is multiplied by a separable weight that ramps smoothly (a raised cosine)
from the tile edge across the overlap, and by the tile's valid mask, so nodata pixels contribute
nothing. Edges on the raster border keep full weight (no neighbour covers them). A ``margin`` of
pixels at inner edges gets zero weight, so predictions spoiled by padding at the tile border never
reach the output as long as the model's receptive field fits in the margin; the neighbouring tile
covers those pixels with positive weight when ``margin < overlap / 2``. The accumulated sums are
normalised by the summed weights, so the effective weights sum to one wherever any input is valid.

:class:`BandAccumulator` only holds the rows where tile rows overlap, plus one tile: finished
blocks are handed out at once, so memory depends on the raster width, the tile and the overlap,
never on the raster height.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from dinogeo.errors import ConfigError

__all__ = ["BandAccumulator", "blend_weights", "ramp_1d"]


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
    return _weights_cached(size, overlap, margin, tuple(edges))


class BandAccumulator:
    """Weighted sums of tile predictions, kept only where tiles still overlap.

    Tiles come in row-major order on a lattice of stride ``s = tile - overlap``. While tile row
    ``j`` is processed, the rows ``[j*s, j*s + s)`` (its *band*; ``tile`` rows for the last tile
    row) are final column block by column block: once window ``i`` is added, columns
    ``[i*s, i*s + s)`` of the band receive no more contributions. The accumulator therefore holds
    only the ``overlap`` rows shared with the tile rows above and below (``carry``, the full
    width) and one ``band x tile`` block for the current window, and hands out each finished
    block. Memory is ``(channels + 1) * (2 * overlap * width + tile * tile)`` floats: it depends on
    the raster width, the tile and the overlap, never on the raster height.

    Args:
        channels: prediction channels.
        width: raster width in (output) pixels.
        tile: tile side.
        overlap: tile overlap, at most half the tile.

    Raises:
        ConfigError: if the overlap exceeds half the tile.
    """

    def __init__(self, channels: int, width: int, tile: int, overlap: int) -> None:
        if not 0 <= 2 * overlap <= tile:
            raise ConfigError(f"overlap {overlap} must be between 0 and half the tile {tile}")
        self.channels, self.width, self.tile, self.overlap = channels, width, tile, overlap
        self.stride = tile - overlap
        self.carry_in = np.zeros((channels + 1, overlap, width), dtype=np.float32)
        self.carry_out = np.zeros_like(self.carry_in)
        self.block = np.zeros((channels + 1, tile, tile), dtype=np.float32)
        self.band = self.stride
        self._next_col = 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the accumulator buffers."""
        return int(self.carry_in.nbytes + self.carry_out.nbytes + self.block.nbytes)

    def start_row(self, last: bool) -> None:
        """Begin a tile row; the last tile row keeps all ``tile`` rows in its band."""
        self.band = self.tile if last else self.stride
        self.block[:] = 0.0
        self._next_col = 0

    def end_row(self) -> None:
        """Finish a tile row: its bottom overlap becomes the next row's top overlap."""
        self.carry_in, self.carry_out = self.carry_out, self.carry_in
        self.carry_out[:] = 0.0

    def add(
        self,
        pred: np.ndarray | None,
        weight: np.ndarray | None,
        col_off: int,
        last_col: bool,
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Add one window of the current tile row and return the band block now final.

        Args:
            pred: ``(channels, tile, tile)`` prediction, or None for a window without valid
                pixels (nothing is added but its block is still handed out).
            weight: ``(tile, tile)`` weight (blend weight times valid mask), or None.
            col_off: column of the window (``i * stride``; windows must come left to right).
            last_col: whether this is the last window of the tile row.

        Returns:
            ``(sums, weights, col_off)``: weighted sums ``(channels, band, n)`` and summed
            weights ``(band, n)`` of the final columns ``[col_off, col_off + n)``.
        """
        if col_off != self._next_col:
            raise ConfigError(
                f"windows must be added left to right on the lattice: got column {col_off}, "
                f"expected {self._next_col}"
            )
        t, band, ov = self.tile, self.band, self.overlap
        n_in = min(t, self.width - col_off)
        if pred is not None and weight is not None:
            wsum = pred * weight
            self.block[:-1, :band] += wsum[:, :band]
            self.block[-1, :band] += weight[:band]
            if band < t:
                c = slice(col_off, col_off + n_in)
                self.carry_out[:-1, :, c] += wsum[:, band:, :n_in]
                self.carry_out[-1, :, c] += weight[band:, :n_in]
        n = n_in if last_col else self.stride
        out = self.block[:, :band, :n].copy()
        if ov:
            out[:, :ov] += self.carry_in[:, :, col_off : col_off + n]
        if last_col:
            self.block[:] = 0.0
        else:
            self.block[:, :, :ov] = self.block[:, :, n : n + ov]
            self.block[:, :, ov:] = 0.0
        self._next_col = col_off + self.stride
        return out[:-1], out[-1], col_off
