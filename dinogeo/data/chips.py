"""Chips: one pixel window of one source (:class:`ChipQuery`), and how a rejected chip is redrawn.

Samplers (:mod:`dinogeo.data.samplers`) yield chips, the validity index
(:mod:`dinogeo.data.validity`) estimates their valid fraction, and datasets
(:mod:`dinogeo.data.dataset`) read them.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["ChipQuery", "random_position", "redraw_chip"]


class ChipQuery(NamedTuple):
    """One chip to read: a pixel window of one source.

    Attributes:
        source: index into the dataset's source list.
        row: row offset of the window (may be negative: reads are boundless).
        col: column offset of the window.
        height: window height in pixels.
        width: window width in pixels.
        seed: seed for deterministic redraws when the chip is rejected; -1 for fixed (grid) chips,
            which are never redrawn.
    """

    source: int
    row: int
    col: int
    height: int
    width: int
    seed: int = -1


def random_position(
    rng: np.random.Generator, shape: tuple[int, int], size: tuple[int, int], align: int = 1
) -> tuple[int, int]:
    """A uniformly random ``(row, col)`` of a ``size`` window inside ``shape`` (0 when larger).

    Args:
        rng: the generator to draw from.
        shape: ``(height, width)`` of the source.
        size: ``(height, width)`` of the window.
        align: offsets are multiples of this (tile-aligned chips).
    """
    h, w = shape
    row = align * int(rng.integers(0, (h - size[0]) // align + 1)) if h >= size[0] else 0
    col = align * int(rng.integers(0, (w - size[1]) // align + 1)) if w >= size[1] else 0
    return row, col


def redraw_chip(
    query: ChipQuery, attempt: int, shape: tuple[int, int], coarse: np.ndarray | None = None
) -> ChipQuery:
    """Draw a replacement for a rejected chip, deterministically from ``(query.seed, attempt)``.

    The replacement lies in the same source; when its coarse valid mask is given, the chip's
    centre falls on a valid coarse cell.

    Args:
        query: the rejected chip (``seed >= 0``).
        attempt: 0 for the first redraw, 1 for the next...
        shape: ``(height, width)`` of the source.
        coarse: the source's coarse valid mask, or None.
    """
    rng = np.random.default_rng([query.seed, attempt + 1])
    size = (query.height, query.width)
    h, w = shape
    cells = np.flatnonzero(coarse) if coarse is not None else np.empty(0, dtype=np.int64)
    if coarse is None or cells.size == 0:
        row, col = random_position(rng, (h, w), size)
        return query._replace(row=row, col=col)
    cell = int(cells[rng.integers(0, cells.size)])
    cy, cx = divmod(cell, coarse.shape[1])
    fy, fx = h / coarse.shape[0], w / coarse.shape[1]
    centre_r = (cy + rng.random()) * fy
    centre_c = (cx + rng.random()) * fx
    row = int(np.clip(round(centre_r - size[0] / 2), min(0, h - size[0]), max(0, h - size[0])))
    col = int(np.clip(round(centre_c - size[1] / 2), min(0, w - size[1]), max(0, w - size[1])))
    return query._replace(row=row, col=col)
