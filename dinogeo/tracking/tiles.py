"""Tiles of a series and their change scores: the unit of work of ``track_series``.

A tile is read with a halo of ``smooth // 2`` pixels (for the speckle filter), turned into index
channels (or backbone features) and scored against its history; memory is bounded by
tile x dates x bands. :class:`ScoreCache` keeps the scores of the calibration tiles on disk
for the main pass, so that neither pass holds more than one tile in memory.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from dinogeo.tracking.series import TimeSeries
from dinogeo.tracking.statistic import ChangeStatistic, index_series

__all__ = [
    "ScoreCache",
    "TileScorer",
    "gdal_cache_bytes",
    "tile_index",
    "tile_scores",
    "tile_windows",
]

#: GDAL block cache while tracking, at least (the read of one tile's blocks must fit)
_MIN_GDAL_CACHE = 8 << 20


def tile_windows(series: TimeSeries, tile: int) -> list[Window]:
    """The tiles of the series' grid, row by row."""
    return [
        Window(c, r, min(tile, series.width - c), min(tile, series.height - r))
        for r in range(0, series.height, tile)
        for c in range(0, series.width, tile)
    ]


def tile_index(series: TimeSeries, tile: int, row: int, col: int) -> int:
    """Index in :func:`tile_windows` of the tile holding pixel (row, col)."""
    return (row // tile) * len(range(0, series.width, tile)) + col // tile


def gdal_cache_bytes(series: TimeSeries, tile: int, smooth: int) -> int:
    """GDAL block cache for tracking: twice the blocks one tile's read (with halo) touches.

    Bounded by tile x dates x bands, not by the scene. Smaller than one read's blocks, GDAL
    would decode a pixel-interleaved block once per band (30 x slower); twice lets the next tile
    of a row reuse the blocks its halo shares with this one.
    """
    side = tile + 2 * (smooth // 2)
    total = 0
    seen: set[tuple[Path, str | None]] = set()
    for layer in series.layers:
        if (layer.path, layer.group) in seen:
            continue
        seen.add((layer.path, layer.group))
        ds = series._dataset(layer)
        bh, bw = ds.block_shapes[0]
        rows = min((-(-side // bh) + 1) * bh, ds.height)
        cols = min((-(-side // bw) + 1) * bw, ds.width)
        total += rows * cols * ds.count * np.dtype(ds.dtypes[0]).itemsize
    return max(_MIN_GDAL_CACHE, 2 * total)


@dataclass
class TileScorer:
    """What scoring a tile needs: the series, its periods and the statistic."""

    series: TimeSeries
    hist: np.ndarray
    mon: np.ndarray
    doy: np.ndarray
    index: str
    smooth: int
    stat: ChangeStatistic
    mask: Path | None = None
    mask_values: tuple[int, ...] = (1,)
    features: Any = None  # a FeatureExtractor when a backbone is given

    def region(self, win: Window) -> np.ndarray | None:
        """Pixels of a tile inside the monitored region (None: everywhere)."""
        if self.mask is None:
            return None
        import rasterio
        from rasterio.vrt import WarpedVRT

        s = self.series
        with rasterio.open(self.mask) as ds:
            same = (ds.crs, ds.transform, ds.width, ds.height) == (
                s.crs,
                s.transform,
                s.width,
                s.height,
            )
            if same:
                values = ds.read(1, window=win)
            else:
                with WarpedVRT(
                    ds, crs=s.crs, transform=s.transform, width=s.width, height=s.height
                ) as v:
                    values = v.read(1, window=win)
        return np.isin(values, self.mask_values)


def tile_scores(
    s: TileScorer, win: Window
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Scores (T, h, w), history LOO scores, monitored mask and raw values of a tile."""
    halo = s.smooth // 2
    big = Window(
        win.col_off - halo, win.row_off - halo, win.width + 2 * halo, win.height + 2 * halo
    )
    x = s.series.read(big)
    if s.features is not None:
        idx = s.features(x)
    else:
        idx = index_series(x, s.series.sensor, s.index, s.smooth)
    scores, loo, monitored = s.stat.scores(idx, s.hist, s.doy)
    core = (slice(halo, halo + int(win.height)), slice(halo, halo + int(win.width)))
    every = (slice(None), *core)
    monitored = monitored[core]
    region = s.region(win)
    if region is not None:
        monitored &= region
    return scores[every], loo[every], monitored, x[(slice(None), slice(None), *core)]


class ScoreCache:
    """Scores of calibration tiles kept on disk (a temporary folder) for the main pass.

    Args:
        max_tiles: tiles kept at most; later ones are scored again by the main pass.
    """

    def __init__(self, max_tiles: int) -> None:
        self.max_tiles = max_tiles
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._kept: set[int] = set()

    def put(self, k: int, scores: np.ndarray, monitored: np.ndarray) -> None:
        """Keep tile ``k``'s scores (while fewer than ``max_tiles`` are kept)."""
        if len(self._kept) >= self.max_tiles:
            return
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="dinogeo-track-")
        np.save(Path(self._dir.name) / f"{k}_scores.npy", scores)
        np.save(Path(self._dir.name) / f"{k}_monitored.npy", monitored)
        self._kept.add(k)

    def pop(self, k: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Tile ``k``'s scores and monitored mask, removed from the cache (None: not kept)."""
        if k not in self._kept or self._dir is None:
            return None
        self._kept.discard(k)
        out = []
        for part in ("scores", "monitored"):
            path = Path(self._dir.name) / f"{k}_{part}.npy"
            out.append(np.load(path))
            path.unlink()
        return out[0], out[1]

    def close(self) -> None:
        """Delete the folder."""
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
        self._kept.clear()
