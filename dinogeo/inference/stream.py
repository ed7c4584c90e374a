"""The streaming loop shared by prediction and embedding: read ahead, infer in batches, blend, emit strips.

Background threads read (and normalise) the next batches while the model runs on the current one;
each thread opens its own raster handles. Tile predictions are blended into a
:class:`~dinogeo.inference.blend.BandAccumulator` that keeps only the overlap rows, finished
blocks are turned into output values by a caller-supplied function and handed out one strip at a
time, so memory stays flat whatever the raster height.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from dinogeo.inference.blend import BandAccumulator, blend_weights
from dinogeo.inference.tiling import TileGrid, TileWindow

__all__ = ["Batch", "BatchReader", "StreamSpec", "prefetch", "stream_strips"]

#: reads one input window: normalised images (one per date, each (C,H,W) float32) and a valid mask
WindowReadFn = Callable[[Window], tuple[tuple[np.ndarray, ...], np.ndarray]]
#: turns weighted sums (K,n,W) and summed weights (n,W) of final rows into output bands (B,n,W)
FinishFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
#: runs the model on a batch: one (B,C,H,W) array per date -> (B,K,h,w) float32
InferFn = Callable[[tuple[np.ndarray, ...]], np.ndarray]


@dataclass
class Batch:
    """Windows read together: stacked images per date, valid masks at output resolution."""

    windows: list[TileWindow]
    images: tuple[np.ndarray, ...]
    valid: np.ndarray


@dataclass(frozen=True)
class StreamSpec:
    """What the loop needs besides the grid.

    Attributes:
        channels: prediction channels the model returns.
        bands: output bands produced by ``finish``.
        dtype: output dtype.
        fill: output value for rows with no valid input (nodata).
        scale: input pixels per output pixel.
        margin: zero-weight pixels at inner tile edges (output pixels).
        batch_size: windows per model call.
        workers: background reader threads (0 reads in the calling thread).
    """

    channels: int
    bands: int
    dtype: str
    fill: float
    scale: int = 1
    margin: int = 0
    batch_size: int = 8
    workers: int = 2


def _pool_valid(valid: np.ndarray, scale: int) -> np.ndarray:
    """Return the output-resolution valid mask: at least half of each ``scale`` block valid."""
    if scale == 1:
        return valid
    h, w = valid.shape[0] // scale, valid.shape[1] // scale
    frac = valid[: h * scale, : w * scale].reshape(h, scale, w, scale).mean(axis=(1, 3))
    return frac >= 0.5


class BatchReader:
    """Reads whole batches, one set of raster handles per thread."""

    def __init__(self, factory: Callable[[], WindowReadFn], scale: int) -> None:
        self._factory = factory
        self._scale = scale
        self._local = threading.local()

    def __call__(self, windows: list[TileWindow]) -> Batch:
        """Read ``windows`` with this thread's handles into one batch."""
        fn = getattr(self._local, "fn", None)
        if fn is None:
            fn = self._local.fn = self._factory()
        reads = [fn(w.input_window(self._scale)) for w in windows]
        n_dates = len(reads[0][0])
        images = tuple(np.stack([r[0][d] for r in reads]) for d in range(n_dates))
        valid = np.stack([_pool_valid(r[1], self._scale) for r in reads])
        return Batch(windows, images, valid)


def prefetch(
    reader: BatchReader, batches: Sequence[list[TileWindow]], workers: int
) -> Iterator[Batch]:
    """Yield read batches in order, reading up to ``2 * workers`` batches ahead."""
    if workers <= 0:
        for b in batches:
            yield reader(b)
        return
    pending: deque[Future[Batch]] = deque()
    ahead = max(2, 2 * workers)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dinogeo-read") as pool:
        it = iter(batches)
        try:
            for b in it:
                pending.append(pool.submit(reader, b))
                if len(pending) >= ahead:
                    break
            while pending:
                batch = pending.popleft().result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(pool.submit(reader, nxt))
                yield batch
        finally:
            for f in pending:
                f.cancel()


def stream_strips(
    grid: TileGrid,
    strips: tuple[int, int],
    reader_factory: Callable[[], WindowReadFn],
    infer: InferFn,
    finish: FinishFn,
    spec: StreamSpec,
    on_batch: Callable[[int], object] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Compute the strips ``[start, stop)`` of a grid and yield them in order.

    Args:
        grid: tile grid in output pixels.
        strips: strip range to compute (each range is computed from scratch).
        reader_factory: builds a window reader; called once in every reader thread.
        infer: the model on one batch.
        finish: converts final weighted sums into output bands.
        spec: channels, output bands and dtype, scale, margin, batch size and workers.
        on_batch: called with the number of windows after every batch (progress).

    Yields:
        ``(strip_index, array)`` with ``array`` of shape ``(bands, strip_rows, width)``.
    """
    start, stop = strips
    if start >= stop:
        return
    row_start, row_stop = grid.strip_bounds(start)[0], grid.strip_bounds(stop - 1)[1]
    acc = BandAccumulator(spec.channels, grid.width, grid.tile, grid.overlap)
    n_cols, n_rows = len(grid.col_offsets), len(grid.row_offsets)
    first_row, last_row = grid.tile_row_range(start, stop)
    strip = start
    s0, s1 = grid.strip_bounds(strip)
    buf = np.full((spec.bands, s1 - s0, grid.width), spec.fill, dtype=spec.dtype)
    band = np.full((spec.bands, grid.tile, grid.width), spec.fill, dtype=spec.dtype)
    batches = list(grid.batches(start, stop, spec.batch_size))
    reader = BatchReader(reader_factory, spec.scale)
    for batch in prefetch(reader, batches, spec.workers):
        keep = [i for i in range(len(batch.windows)) if batch.valid[i].any()]
        preds = infer(tuple(img[keep] for img in batch.images)) if keep else None
        pos = {k: n for n, k in enumerate(keep)}
        if on_batch is not None:
            on_batch(len(batch.windows))
        for i, win in enumerate(batch.windows):
            if not first_row <= win.tile_row <= last_row:
                continue
            col = win.index % n_cols
            if col == 0:
                acc.start_row(last=win.tile_row == n_rows - 1)
            pred = weight = None
            if preds is not None and i in pos:
                pred = preds[pos[i]]
                weight = blend_weights(win.size, grid.overlap, spec.margin, win.edges)
                weight = weight * batch.valid[i]
            sums, weights, c0 = acc.add(pred, weight, win.col_off, col == n_cols - 1)
            band[:, : acc.band, c0 : c0 + sums.shape[2]] = finish(sums, weights)
            if col != n_cols - 1:
                continue
            acc.end_row()
            top = win.row_off
            r, final = max(top, row_start), min(top + acc.band, row_stop, grid.height)
            while r < final:
                take = min(final, s1) - r
                buf[:, r - s0 : r - s0 + take] = band[:, r - top : r - top + take]
                r += take
                if r == s1:
                    yield strip, buf
                    strip += 1
                    if strip >= stop:
                        return
                    s0, s1 = grid.strip_bounds(strip)
                    buf = np.full((spec.bands, s1 - s0, grid.width), spec.fill, dtype=spec.dtype)
