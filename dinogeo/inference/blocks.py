"""2-D output blocks with halos: the unit of prediction, writing and resuming.

The raster's output is cut into square blocks of ``block`` pixels (the last row and column of
blocks are smaller). A block is computed on its own from the windows of the global
:class:`~dinogeo.inference.tiling.TileGrid` that reach it: the tile rows and columns from the first
one reaching the block to the last one needed before the block's last row and column are final,
i.e. the block plus a halo of at most one window on each side. Those windows are read, run
through the model in batches (fixed chunks of the block's window list), blended with the same
weights as a whole-raster pass (the windows keep their global positions and raster-border
flags) into a :class:`~dinogeo.inference.blend.BandAccumulator` as wide as the block and its halo,
and the halo is cropped. Every output pixel therefore receives the same window contributions in
the same order as in a pass over the whole raster, so the result is bitwise identical to it,
while memory depends on the tile, the block and the batch, never on the raster size.

Windows in a halo are computed by both blocks that need them: about one extra window column and
row per block, i.e. ``((block / stride + 1) / (block / stride)) ** 2`` times the model work of
a whole-raster pass (1.2-1.5x for blocks of 2048 and tiles of 512 with overlap 64).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from dinogeo.data.source import Source
from dinogeo.errors import ConfigError
from dinogeo.inference.blend import BandAccumulator, blend_weights
from dinogeo.inference.stream import (
    Batch,
    BatchReader,
    FinishFn,
    InferFn,
    StreamSpec,
    WindowReadFn,
    prefetch,
)
from dinogeo.inference.tiling import TileGrid, TileWindow

__all__ = ["Block", "BlockGrid", "read_cache_bytes", "stream_blocks"]


@dataclass(frozen=True)
class Block:
    """One output block and the tile rows/columns (inclusive ranges) that compute it.

    Attributes:
        index: position in the row-major block list.
        row_off: first output row.
        col_off: first output column.
        height: rows.
        width: columns.
        tile_rows: first and last tile row needed.
        tile_cols: first and last tile column needed.
    """

    index: int
    row_off: int
    col_off: int
    height: int
    width: int
    tile_rows: tuple[int, int]
    tile_cols: tuple[int, int]

    @property
    def n_windows(self) -> int:
        """Windows the block runs through the model (halo included)."""
        rows = self.tile_rows[1] - self.tile_rows[0] + 1
        return rows * (self.tile_cols[1] - self.tile_cols[0] + 1)


def _first_reaching(offsets: list[int], tile: int, pos: int) -> int:
    """The first tile whose extent reaches position ``pos``."""
    for i, o in enumerate(offsets):
        if o + tile > pos:
            return i
    return len(offsets) - 1


def _last_needed(offsets: list[int], size: int, stop: int) -> int:
    """The last tile to process before positions ``< stop`` are final."""
    for i in range(len(offsets)):
        final = offsets[i + 1] if i + 1 < len(offsets) else size
        if final >= stop:
            return i
    return len(offsets) - 1


class BlockGrid:
    """Square output blocks over a tile grid.

    Args:
        grid: the tile grid (output pixels).
        block: block side in output pixels (at least the tile).

    Raises:
        ConfigError: the block is smaller than the tile.
    """

    def __init__(self, grid: TileGrid, block: int) -> None:
        if block < grid.tile:
            raise ConfigError(
                f"block {block} must be at least the tile ({grid.tile}): blocks smaller than a "
                "window would run every window several times"
            )
        self.grid, self.block = grid, block
        self.blocks: list[Block] = []
        for r0 in range(0, grid.height, block):
            r1 = min(grid.height, r0 + block)
            rows = (
                _first_reaching(grid.row_offsets, grid.tile, r0),
                _last_needed(grid.row_offsets, grid.height, r1),
            )
            for c0 in range(0, grid.width, block):
                c1 = min(grid.width, c0 + block)
                cols = (
                    _first_reaching(grid.col_offsets, grid.tile, c0),
                    _last_needed(grid.col_offsets, grid.width, c1),
                )
                self.blocks.append(Block(len(self.blocks), r0, c0, r1 - r0, c1 - c0, rows, cols))

    def __len__(self) -> int:
        return len(self.blocks)

    @property
    def n_windows(self) -> int:
        """Windows run through the model over all blocks (halos counted as often as used)."""
        return sum(b.n_windows for b in self.blocks)

    def windows(self, blk: Block) -> list[TileWindow]:
        """The block's windows, row-major, with their global positions and border flags."""
        g = self.grid
        last_r, last_c = len(g.row_offsets) - 1, len(g.col_offsets) - 1
        out = []
        for i in range(blk.tile_rows[0], blk.tile_rows[1] + 1):
            for j in range(blk.tile_cols[0], blk.tile_cols[1] + 1):
                edges = (i == 0, i == last_r, j == 0, j == last_c)
                index = i * len(g.col_offsets) + j
                out.append(TileWindow(index, i, g.row_offsets[i], g.col_offsets[j], g.tile, edges))
        return out

    def batches(self, blk: Block, batch_size: int) -> list[list[TileWindow]]:
        """The block's windows in fixed chunks of ``batch_size`` (the same in every run)."""
        if batch_size <= 0:
            raise ConfigError(f"batch_size must be positive, got {batch_size}")
        wins = self.windows(blk)
        return [wins[i : i + batch_size] for i in range(0, len(wins), batch_size)]


def _compute_block(
    bgrid: BlockGrid,
    blk: Block,
    batches: Iterator[Batch],
    n_batches: int,
    infer: InferFn,
    finish: FinishFn,
    spec: StreamSpec,
    on_batch: Callable[[int], object] | None,
) -> np.ndarray:
    """Blend the block's windows (``n_batches`` read batches) and return its output bands."""
    g = bgrid.grid
    tc0, tc1 = blk.tile_cols
    base = g.col_offsets[tc0]
    width = min(g.width, g.col_offsets[tc1] + g.tile) - base
    acc = BandAccumulator(spec.channels, width, g.tile, g.overlap)
    band = np.full((spec.bands, g.tile, width), spec.fill, dtype=spec.dtype)
    out = np.full((spec.bands, blk.height, blk.width), spec.fill, dtype=spec.dtype)
    n_cols, last_row = len(g.col_offsets), len(g.row_offsets) - 1
    crop = slice(blk.col_off - base, blk.col_off - base + blk.width)
    for _ in range(n_batches):
        batch = next(batches)
        keep = [i for i in range(len(batch.windows)) if batch.valid[i].any()]
        preds = infer(tuple(img[keep] for img in batch.images)) if keep else None
        pos = {k: n for n, k in enumerate(keep)}
        if on_batch is not None:
            on_batch(len(batch.windows))
        for i, win in enumerate(batch.windows):
            col = win.index % n_cols
            if col == tc0:
                acc.start_row(last=win.tile_row == last_row)
            pred = weight = None
            if preds is not None and i in pos:
                pred = preds[pos[i]]
                weight = blend_weights(win.size, g.overlap, spec.margin, win.edges)
                weight = weight * batch.valid[i]
            sums, weights, c0 = acc.add(pred, weight, win.col_off - base, col == tc1)
            band[:, : acc.band, c0 : c0 + sums.shape[2]] = finish(sums, weights)
            if col != tc1:
                continue
            acc.end_row()
            top = win.row_off
            r0 = max(top, blk.row_off)
            r1 = min(top + acc.band, blk.row_off + blk.height)
            if r0 < r1:
                out[:, r0 - blk.row_off : r1 - blk.row_off] = band[:, r0 - top : r1 - top, crop]
    return out


def stream_blocks(
    bgrid: BlockGrid,
    blocks: Sequence[Block],
    reader_factory: Callable[[], WindowReadFn],
    infer: InferFn,
    finish: FinishFn,
    spec: StreamSpec,
    on_batch: Callable[[int], object] | None = None,
) -> Iterator[tuple[Block, np.ndarray]]:
    """Compute blocks in the given order and yield each with its output bands.

    Reading runs ahead across block boundaries, so the model never waits for a block's first
    windows.

    Args:
        bgrid: the block grid.
        blocks: blocks to compute (each on its own: any subset, any order).
        reader_factory: builds a window reader; called once in every reader thread.
        infer: the model on one batch.
        finish: converts final weighted sums into output bands.
        spec: channels, output bands and dtype, margin, batch size and workers.
        on_batch: called with the number of windows after every batch (progress).

    Yields:
        ``(block, array)`` with ``array`` of shape ``(bands, block.height, block.width)``.
    """
    per_block = [bgrid.batches(b, spec.batch_size) for b in blocks]
    flat = [batch for batches in per_block for batch in batches]
    read = prefetch(BatchReader(reader_factory, spec.scale), flat, spec.workers)
    try:
        for blk, batches in zip(blocks, per_block, strict=True):
            out = _compute_block(bgrid, blk, read, len(batches), infer, finish, spec, on_batch)
            yield blk, out
    finally:
        close = getattr(read, "close", None)
        if close is not None:
            close()


#: floor of the GDAL block cache while predicting
MIN_READ_CACHE = 16 << 20
#: the cache when a source's storage block is unknown (warped or irregular): the old fixed cap
UNKNOWN_BLOCK_CACHE = 64 << 20


def read_cache_bytes(sources: Sequence[Source], tile: int, block: int) -> int:
    """GDAL block cache for predicting in blocks: twice the storage blocks one row of windows reads.

    A row of windows across an output block (with its halo of one tile each side) touches
    ``ceil(tile / block_rows) + 1`` rows of storage blocks over ``block + 2 * tile`` columns; twice
    that lets the next row reuse the blocks the two rows share, and every window decodes each of
    its blocks once. The size depends on the tile, the block and the file's storage layout, never
    on the raster's width (except for a striped file, whose strips span the width). A fixed cap
    instead fills up on wide rasters only, which grew peak memory with the width.

    Args:
        sources: the opened inputs (their ``storage_block``, ``count`` and ``dtype``).
        tile: prediction window size in pixels.
        block: output block size in pixels.

    Returns:
        Bytes, at least 16 MiB (64 MiB where a storage block is unknown).
    """
    total = 0
    for src in sources:
        if src.storage_block is None:
            return max(UNKNOWN_BLOCK_CACHE, 2 * total)
        bh, bw = src.storage_block
        rows = min((-(-tile // bh) + 1) * bh, src.height)
        cols = min((-(-(block + 2 * tile) // bw) + 1) * bw, src.width)
        total += rows * cols * src.count * np.dtype(src.dtype).itemsize
    return max(MIN_READ_CACHE, 2 * total)
