"""Window grids with overlap that cover a raster, grouped into output strips, batches and rank shards.

The grid works in *output* pixels. ``scale`` input pixels make one output pixel (1 for per-pixel
prediction, the patch size for patch embeddings), so every window maps to an input window
``scale`` times larger. Tile origins advance by exactly ``tile - overlap``; the last window may
reach beyond the raster, where the reader pads it with invalid pixels.

Output is produced in *strips*: bands of ``strip_rows`` output rows (a multiple of the output
block size), finished as soon as no later tile row reaches them. Because of the overlap, a strip
depends on a few tile rows above it; :meth:`TileGrid.first_tile_row` gives the first one so that
a strip range can be computed on its own (resume, one range per rank).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from rasterio.windows import Window

from dinogeo.errors import ConfigError

__all__ = ["TileGrid", "TileWindow", "shard_strips", "tile_offsets"]


def tile_offsets(size: int, tile: int, overlap: int) -> list[int]:
    """Return the origins of tiles of length ``tile`` covering ``[0, size)`` with ``overlap``.

    Origins advance by exactly ``tile - overlap``; the last tile may reach beyond ``size`` (the
    reader pads it with invalid pixels), so every pair of neighbours overlaps by exactly
    ``overlap`` pixels and the stitching buffers stay ``overlap`` rows high.

    Args:
        size: length of the raster axis in pixels.
        tile: tile length in pixels.
        overlap: overlap between neighbouring tiles in pixels (``0 <= overlap < tile``).

    Returns:
        Increasing origins ``0, s, 2s, ...`` with ``s = tile - overlap``; the last tile ends at
        or beyond ``size``.

    Raises:
        ConfigError: if the sizes are inconsistent.
    """
    if tile <= 0 or size <= 0:
        raise ConfigError(f"tile ({tile}) and raster size ({size}) must be positive")
    if not 0 <= overlap < tile:
        raise ConfigError(f"overlap {overlap} must be >= 0 and smaller than the tile {tile}")
    stride = tile - overlap
    count = max(1, -(-(size - overlap) // stride))
    return [k * stride for k in range(count)]


@dataclass(frozen=True)
class TileWindow:
    """One tile of the grid, in output pixels.

    Attributes:
        index: position in the row-major window list.
        tile_row: index of its tile row.
        row_off: first output row.
        col_off: first output column.
        size: side length in output pixels.
        edges: whether (top, bottom, left, right) lie on the raster border (no neighbour there).
    """

    index: int
    tile_row: int
    row_off: int
    col_off: int
    size: int
    edges: tuple[bool, bool, bool, bool]

    def input_window(self, scale: int = 1) -> Window:
        """Return the matching window in input pixels."""
        return Window(
            self.col_off * scale, self.row_off * scale, self.size * scale, self.size * scale
        )


@dataclass(frozen=True)
class TileGrid:
    """An overlapping tile grid over a ``height`` x ``width`` output raster.

    Attributes:
        height: output rows.
        width: output columns.
        tile: tile side in output pixels.
        overlap: overlap between tiles in output pixels.
        strip_rows: rows per output strip (the unit of writing, resuming and sharding).
    """

    height: int
    width: int
    tile: int
    overlap: int
    strip_rows: int = 512
    row_offsets: list[int] = field(init=False, repr=False)
    col_offsets: list[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.strip_rows <= 0:
            raise ConfigError(f"strip_rows must be positive, got {self.strip_rows}")
        object.__setattr__(self, "row_offsets", tile_offsets(self.height, self.tile, self.overlap))
        object.__setattr__(self, "col_offsets", tile_offsets(self.width, self.tile, self.overlap))

    @property
    def n_tile_rows(self) -> int:
        """Number of tile rows."""
        return len(self.row_offsets)

    @property
    def n_windows(self) -> int:
        """Number of windows in the grid."""
        return len(self.row_offsets) * len(self.col_offsets)

    @property
    def n_strips(self) -> int:
        """Number of output strips."""
        return -(-self.height // self.strip_rows)

    def strip_bounds(self, strip: int) -> tuple[int, int]:
        """Return the output rows ``[start, stop)`` of one strip."""
        start = strip * self.strip_rows
        return start, min(self.height, start + self.strip_rows)

    def windows(self) -> list[TileWindow]:
        """Return every window, row-major (the order in which they are batched)."""
        out: list[TileWindow] = []
        last_r, last_c = len(self.row_offsets) - 1, len(self.col_offsets) - 1
        for i, r in enumerate(self.row_offsets):
            for j, c in enumerate(self.col_offsets):
                edges = (i == 0, i == last_r, j == 0, j == last_c)
                out.append(TileWindow(len(out), i, r, c, self.tile, edges))
        return out

    def first_tile_row(self, row: int) -> int:
        """Return the first tile row that reaches output row ``row`` (needed to compute it)."""
        for i, r in enumerate(self.row_offsets):
            if r + self.tile > row:
                return i
        return len(self.row_offsets) - 1

    def rows_final_after(self, tile_row: int) -> int:
        """Return how many leading output rows are final once tile rows ``0..tile_row`` are done."""
        if tile_row + 1 >= len(self.row_offsets):
            return self.height
        return self.row_offsets[tile_row + 1]

    def last_tile_row(self, row_stop: int) -> int:
        """Return the last tile row that must be processed before rows ``< row_stop`` are final."""
        for i in range(len(self.row_offsets)):
            if self.rows_final_after(i) >= row_stop:
                return i
        return len(self.row_offsets) - 1

    def tile_row_range(self, strip_start: int, strip_stop: int) -> tuple[int, int]:
        """Return the tile rows ``[first, last]`` needed to compute strips ``[start, stop)``."""
        row_start = self.strip_bounds(strip_start)[0]
        row_stop = self.strip_bounds(strip_stop - 1)[1]
        return self.first_tile_row(row_start), self.last_tile_row(row_stop)

    def batches(
        self, strip_start: int, strip_stop: int, batch_size: int
    ) -> Iterator[list[TileWindow]]:
        """Yield the batches of windows needed to compute strips ``[strip_start, strip_stop)``.

        Batches are fixed chunks of the global window list, yielded whole even where a chunk
        straddles the needed tile rows, so a strip range computed on its own (a resumed run, one
        rank) runs the model on exactly the batches of an uninterrupted run and its output is
        bitwise identical. Callers ignore windows outside :meth:`tile_row_range`.

        Args:
            strip_start: first strip.
            strip_stop: one past the last strip.
            batch_size: windows per model call.

        Yields:
            Lists of at most ``batch_size`` windows in row-major order.
        """
        if batch_size <= 0:
            raise ConfigError(f"batch_size must be positive, got {batch_size}")
        if strip_start >= strip_stop:
            return
        first, last = self.tile_row_range(strip_start, strip_stop)
        per_row = len(self.col_offsets)
        lo, hi = first * per_row, (last + 1) * per_row
        wins = self.windows()
        for chunk in range((lo // batch_size) * batch_size, hi, batch_size):
            yield wins[chunk : chunk + batch_size]


def shard_strips(n_strips: int, world_size: int, rank: int) -> tuple[int, int]:
    """Return the contiguous strip range ``[start, stop)`` that one rank computes.

    Args:
        n_strips: number of strips in the raster.
        world_size: number of ranks.
        rank: this rank (``0 <= rank < world_size``).

    Returns:
        Balanced contiguous ranges that together cover every strip exactly once.

    Raises:
        ConfigError: if ``rank`` is out of range.
    """
    if world_size <= 0 or not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is outside a world of {world_size} ranks")
    base, extra = divmod(n_strips, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)
