"""Train/validation split by spatial blocks, and chip windows that stay inside one block.

Neighbouring pixels are nearly copies of each other, so a random pixel (or random chip) split
leaks the training set into validation and inflates metrics. dinogeo cuts the image grid into
square blocks, assigns whole blocks to validation, and samples chips strictly inside one block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from dinogeo.errors import ConfigError

__all__ = ["BlockSplit", "ChipSplit", "block_split", "chip_windows"]


@dataclass(frozen=True)
class ChipSplit:
    """How a run cuts scenes into chips and splits them by spatial blocks (one record).

    Args:
        chip_size: chip side in pixels.
        block_size: spatial block side in pixels.
        val_fraction: share of the blocks (weighted) held out for validation.
        seed: seed of the block split.
        select_fraction: share of the training area, by whole blocks, held out as a selection
            set (choosing a training length or checkpoint without the validation blocks); 0: none.

    Raises:
        ConfigError: ``select_fraction`` outside [0, 1).
    """

    chip_size: int = 64
    block_size: int = 128
    val_fraction: float = 0.2
    seed: int = 0
    select_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.select_fraction < 1.0:
            raise ConfigError(f"select_fraction must be in [0, 1), got {self.select_fraction}")


@dataclass(frozen=True)
class BlockSplit:
    """Blocks of an image grid assigned to training or validation.

    Attributes:
        block_size: block side in pixels.
        width: grid width in pixels.
        height: grid height in pixels.
        val_blocks: ``(block_row, block_col)`` of validation blocks.
    """

    block_size: int
    width: int
    height: int
    val_blocks: frozenset[tuple[int, int]]

    @property
    def shape(self) -> tuple[int, int]:
        """Number of block rows and columns."""
        return -(-self.height // self.block_size), -(-self.width // self.block_size)

    def blocks(self, split: str) -> list[tuple[int, int]]:
        """The blocks of one split (``"train"``, ``"val"`` or ``"all"``), row-major."""
        rows, cols = self.shape
        every = [(r, c) for r in range(rows) for c in range(cols)]
        if split == "all":
            return every
        if split == "val":
            return [b for b in every if b in self.val_blocks]
        if split == "train":
            return [b for b in every if b not in self.val_blocks]
        raise ConfigError(f"unknown split {split!r}: use 'train', 'val' or 'all'")

    def block_window(self, block: tuple[int, int]) -> Window:
        """Pixel window of one block, clipped to the grid."""
        r, c = block
        col, row = c * self.block_size, r * self.block_size
        return Window(
            col,
            row,
            min(self.block_size, self.width - col),
            min(self.block_size, self.height - row),
        )

    def mask(self, split: str) -> np.ndarray:
        """Boolean (height, width) mask of the pixels in one split."""
        out = np.zeros((self.height, self.width), dtype=bool)
        for b in self.blocks(split):
            w = self.block_window(b)
            out[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] = True
        return out


def block_split(
    width: int,
    height: int,
    *,
    block_size: int,
    val_fraction: float,
    seed: int = 0,
    weights: np.ndarray | None = None,
) -> BlockSplit:
    """Assign whole blocks of an image grid to validation.

    Blocks are shuffled with ``seed`` and taken for validation until ``val_fraction`` of the
    (optionally weighted) total is reached; at least one block goes to each split when the grid
    has two blocks or more.

    Args:
        width: grid width in pixels.
        height: grid height in pixels.
        block_size: block side in pixels.
        val_fraction: target share of validation, in [0, 1).
        seed: random seed of the assignment.
        weights: optional (block_rows, block_cols) weight per block, e.g. its labelled pixel
            count, so the validation share is measured in labelled pixels; blocks with weight 0
            are never picked.

    Returns:
        The split.

    Raises:
        ConfigError: on invalid sizes or fractions.
    """
    if block_size < 1:
        raise ConfigError(f"block_size must be a positive number of pixels, got {block_size}")
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rows, cols = -(-height // block_size), -(-width // block_size)
    w = np.ones((rows, cols)) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != (rows, cols):
        raise ConfigError(f"weights must have shape {(rows, cols)}, got {w.shape}")
    candidates = [(r, c) for r in range(rows) for c in range(cols) if w[r, c] > 0]
    rng = np.random.default_rng(seed)
    order = [candidates[i] for i in rng.permutation(len(candidates))]
    total = float(sum(w[b] for b in candidates))
    chosen: set[tuple[int, int]] = set()
    acc = 0.0
    if val_fraction > 0 and len(candidates) >= 2:
        for b in order:
            if acc >= val_fraction * total or len(chosen) >= len(candidates) - 1:
                break
            chosen.add(b)
            acc += float(w[b])
    return BlockSplit(block_size, width, height, frozenset(chosen))


def chip_windows(block: Window, chip_size: int, stride: int) -> list[Window]:
    """Chip windows of ``chip_size`` lying inside one block, every ``stride`` pixels.

    The last row/column of chips is aligned to the block's far edge so the whole block is covered.
    Blocks are full-size except at the image's right and bottom edges; there a chip that does not
    fit starts at the block's edge and runs past the image (read boundless: invalid, unlabelled).
    """
    if stride < 1:
        raise ConfigError(f"stride must be a positive number of pixels, got {stride}")

    def starts(offset: int, length: int) -> list[int]:
        if length <= chip_size:
            return [int(offset)]
        last = length - chip_size
        out = list(range(0, last + 1, stride))
        if out[-1] != last:
            out.append(last)
        return [int(offset) + s for s in out]

    return [
        Window(col, row, chip_size, chip_size)
        for row in starts(int(block.row_off), int(block.height))
        for col in starts(int(block.col_off), int(block.width))
    ]
