"""Where random chips may start: any pixel, a fixed pixel grid, or each source's storage tiles.

Reading a window decodes every storage block (GeoTIFF tile or strip, zarr chunk) it touches, so a
256-px chip at an arbitrary offset of a 256-px-tiled COG decodes four tiles where one would do.
:class:`ChipGrid` says how :class:`~dinogeo.data.samplers.RandomChipSampler` places a source's
chips:

* ``ChipGrid(n, n)``: offsets are multiples of ``n`` pixels (``data.chip_align: n``);
* ``ChipGrid(tile_rows, tile_cols, snap=True)`` (``data.chip_align: auto``): each chip lies inside
  the fewest whole tiles that can hold it, ``ceil(chip / tile)`` per axis, at a random offset
  inside them. A chip that is a multiple of the tile starts on the tile grid (the same draws as
  ``chip_align: <tile>``); a smaller or in-between chip moves freely inside its span of tiles, so
  every pixel can still be sampled while no chip decodes a tile more than it needs. Chips then
  never straddle the span's border: context across tile edges comes only from chips of several
  tiles (set ``chip_align: 1`` for offsets anywhere).

:func:`chip_grids` resolves ``chip_align`` for a list of sources: ``auto`` reads each source's
``storage_block`` (from the file header, the index row or the zarr metadata). Striped GeoTIFFs
(blocks as wide as the raster), single-block files, warped sources and sources of an index
written before blocks were recorded get ``ChipGrid()`` (any offset); :func:`describe_grids` says
which, in one line.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dinogeo.data.chips import random_position
from dinogeo.data.source import Source
from dinogeo.errors import ConfigError

__all__ = ["AUTO", "ChipGrid", "chip_grids", "describe_grids", "parse_chip_align"]

#: the ``chip_align`` value that snaps chips to each source's storage tiles
AUTO = "auto"


@dataclass(frozen=True)
class ChipGrid:
    """How the chips of one source are placed.

    Attributes:
        rows: grid step along rows (tile height when ``snap``); 1: any row.
        cols: grid step along columns (tile width when ``snap``); 1: any column.
        snap: place each chip inside the fewest whole tiles (see the module docstring) instead
            of on multiples of ``rows``/``cols``.
        reason: why this grid was chosen (for :func:`describe_grids`).
    """

    rows: int = 1
    cols: int = 1
    snap: bool = False
    reason: str = "any offset"

    def position(
        self, rng: np.random.Generator, shape: tuple[int, int], size: tuple[int, int]
    ) -> tuple[int, int]:
        """A random ``(row, col)`` for a ``size`` chip in a ``shape`` source (0 when larger).

        Without ``snap`` this is :func:`~dinogeo.data.chips.random_position` with step ``rows``
        (the same random draws).
        """
        if not self.snap:
            return random_position(rng, shape, size, self.rows)
        return (
            _snapped(rng, shape[0], size[0], self.rows),
            _snapped(rng, shape[1], size[1], self.cols),
        )


def _snapped(rng: np.random.Generator, length: int, chip: int, tile: int) -> int:
    """An offset of a ``chip`` window inside the fewest ``tile``-px blocks along one axis."""
    if length <= chip:
        return 0
    start = tile * int(rng.integers(0, (length - chip) // tile + 1))
    span = -(-chip // tile) * tile
    slack = min(span - chip, length - chip - start)
    return start + (int(rng.integers(0, slack + 1)) if slack > 0 else 0)


def parse_chip_align(value: Any, where: str = "data.chip_align") -> int | str:
    """Check a ``chip_align`` setting: ``"auto"`` or a whole number of pixels >= 1.

    Raises:
        ConfigError: for anything else (the message names the accepted values).
    """
    if value == AUTO:
        return AUTO
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"{where}={value!r} must be 'auto' (snap chips to each file's storage tiles) or a "
            "whole number of pixels >= 1 (1: any chip offset; e.g. 256 for 256-px tiles)"
        )
    return value


def _auto_grid(source: Source) -> ChipGrid:
    block = source.storage_block
    width, height = int(source.width), int(source.height)
    if block is None:
        why = "warped" if getattr(source, "warped", False) else "storage grid unknown"
        return ChipGrid(reason=why)
    rows, cols = int(block[0]), int(block[1])
    if cols >= width:
        kind = "one block" if rows >= height else f"striped ({rows}-row strips)"
        return ChipGrid(reason=kind)
    return ChipGrid(rows, cols, snap=True, reason=f"tiled {rows}x{cols}")


def chip_grids(sources: Sequence[Source], chip_align: int | str = AUTO) -> list[ChipGrid]:
    """Resolve ``chip_align`` into one :class:`ChipGrid` per source.

    Args:
        sources: the sampler's sources (their ``storage_block`` is read for ``auto``).
        chip_align: ``"auto"`` or a number of pixels (see :func:`parse_chip_align`).

    Returns:
        One grid per source (:func:`describe_grids` says which, in one line).

    Raises:
        ConfigError: for an invalid ``chip_align``.
    """
    align = parse_chip_align(chip_align)
    if align != AUTO:
        step = int(align)
        reason = "any offset" if step == 1 else f"chip_align {step}"
        return [ChipGrid(step, step, reason=reason) for _ in sources]
    return [_auto_grid(s) for s in sources]


def describe_grids(
    grids: Sequence[ChipGrid], sources: Sequence[Source], chip_size: int | tuple[int, int]
) -> str:
    """One line saying how many sources got which grid, with an example file for each."""
    size = chip_size if isinstance(chip_size, int) else f"{chip_size[0]}x{chip_size[1]}"
    groups: Counter[tuple[str, bool]] = Counter((g.reason, g.snap) for g in grids)
    parts = []
    for (reason, snap), n in groups.most_common():
        example = next(
            s for s, g in zip(sources, grids, strict=True) if (g.reason, g.snap) == (reason, snap)
        )
        where = f", e.g. {example.path.name}"
        what = "chips snapped to the tiles" if snap else "chips at any pixel offset"
        parts.append(f"{n} {reason}{where}: {what}")
    return f"chip_align auto ({size}-px chips): " + "; ".join(parts)
