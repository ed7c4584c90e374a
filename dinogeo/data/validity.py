"""Where sources hold valid data: coarse valid masks, read or rasterised from index footprints.

:class:`ValidityIndex` keeps one coarse valid mask per source, with summed-area tables, so the
samplers weight sources by valid area and estimate a chip's valid fraction in O(1). A mask is a
decimated read of the source (``coarse_valid_mask``), or the rasterised :class:`Footprint` that
``dinogeo index`` stored (:func:`dinogeo.data.index_sources.index_footprints`, :func:`footprint_mask`)
when the footprint follows the source's validity rule: then the file is not opened, so a sampler
over a 100k-file archive starts without 100k reads.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import pyproj
import shapely
from affine import Affine

from dinogeo.data.chips import ChipQuery
from dinogeo.data.source import Source

__all__ = ["Footprint", "ValidityIndex", "footprint_mask"]


class Footprint(NamedTuple):
    """The valid-data polygon of a source, known without opening it (e.g. from an index row).

    Attributes:
        geometry: a shapely (multi)polygon of the valid pixels; empty when none is valid.
        crs: CRS of ``geometry`` (anything ``pyproj.CRS.from_user_input`` takes).
        mask: how validity was known when the polygon was made (the index's ``mask`` column:
            ``"none"``, ``"nodata"``, ``"alpha"`` or ``"internal"``).
        nodata: the nodata value used then, or None.
        full: whether every pixel of the file is valid (the index's ``valid_fraction`` is 1):
            its mask on the file's own grid is then all valid, with no polygon to test.
    """

    geometry: Any
    crs: Any = "EPSG:4326"
    mask: str = "none"
    nodata: float | None = None
    full: bool = False


@functools.lru_cache(maxsize=64)
def _transformer(src: Any, dst: Any) -> pyproj.Transformer | None:
    a, b = pyproj.CRS.from_user_input(src), pyproj.CRS.from_user_input(dst)
    return None if a == b else pyproj.Transformer.from_crs(a, b, always_xy=True)


def footprint_mask(
    footprint: Footprint, crs: Any, transform: Affine, width: int, height: int, max_size: int = 64
) -> np.ndarray:
    """Rasterise a footprint onto a source's coarse grid, without reading the source.

    The grid is the one ``coarse_valid_mask(max_size)`` returns (longest side ``<= max_size``);
    a cell is valid when its centre lies inside the footprint, as a nearest decimation samples.

    Args:
        footprint: the valid-data polygon (reprojected from ``footprint.crs`` when it differs).
        crs: the source grid's CRS.
        transform: the source grid's affine transform.
        width: the source grid's width in pixels.
        height: the source grid's height in pixels.
        max_size: longest side of the coarse mask.

    Returns:
        bool array of shape about ``(height / f, width / f)``.
    """
    shape = _coarse_shape(width, height, max_size)
    geom = footprint.geometry
    if geom is None or geom.is_empty:
        return np.zeros(shape, dtype=bool)
    coords, ring = _polygon_coords(geom)
    if not len(coords):
        return np.zeros(shape, dtype=bool)
    x, y = coords[:, 0], coords[:, 1]
    tr = _transformer(footprint.crs, crs)
    if tr is not None:
        x, y = tr.transform(x, y)
    inv = ~(transform @ Affine.scale(width / shape[1], height / shape[0]))
    x, y = np.asarray(x), np.asarray(y)
    col, row = inv.a * x + inv.b * y + inv.c, inv.d * x + inv.e * y + inv.f  # coarse-grid pixels
    same = ring[:-1] == ring[1:]  # consecutive vertices of one ring form an edge
    ok = np.isfinite(col) & np.isfinite(row)  # a vertex beyond the CRS's area of use is dropped
    same &= ok[:-1] & ok[1:]
    a = np.column_stack([col[:-1][same], row[:-1][same]])
    b = np.column_stack([col[1:][same], row[1:][same]])
    return _even_odd(a, b, shape)


def _coarse_shape(width: int, height: int, max_size: int) -> tuple[int, int]:
    """Shape of the coarse mask, as the sources' ``coarse_valid_mask`` makes it."""
    f = max(1, math.ceil(max(width, height) / max_size))
    return (max(1, math.ceil(height / f)), max(1, math.ceil(width / f)))


def _summed_area(mask: np.ndarray) -> np.ndarray:
    """Summed-area table of a bool mask, with a leading row and column of zeros."""
    sat = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int32)
    sat[1:, 1:] = np.cumsum(np.cumsum(mask, axis=0, dtype=np.int32), axis=1)
    return sat


def _polygons(geom: Any) -> np.ndarray:
    """The polygons of a geometry, multi-geometries and (nested) collections flattened."""
    parts = shapely.get_parts(geom)  # a polygon gives itself
    kinds = shapely.get_type_id(parts)
    nested = [_polygons(p) for p in parts[kinds > 3]]  # make_valid may nest collections
    return np.concatenate([parts[kinds == 3], *nested]) if nested else parts[kinds == 3]


def _polygon_coords(geom: Any) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (N, 2) of every ring of the polygons in ``geom``, and the ring of each vertex."""
    coords, ring = shapely.get_coordinates(shapely.get_rings(_polygons(geom)), return_index=True)
    return np.asarray(coords, dtype=np.float64), np.asarray(ring)


def _even_odd(a: np.ndarray, b: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Cells whose centre is inside the closed rings with edges ``a -> b`` (pixel coordinates).

    A scanline even-odd test vectorised over rows, several times faster than
    ``rasterio.features.rasterize`` on a 64 x 64 grid (it counts for 100k footprints).
    """
    h, w = shape
    # edge e crosses the centre lines of rows lo[e] <= r < hi[e] (half-open: y0 <= r + 0.5 < y1)
    lo = np.clip(np.ceil(np.minimum(a[:, 1], b[:, 1]) - 0.5), 0, h).astype(np.int64)
    hi = np.clip(np.ceil(np.maximum(a[:, 1], b[:, 1]) - 0.5), 0, h).astype(np.int64)
    n = np.maximum(hi - lo, 0)
    e = np.repeat(np.arange(len(n)), n)
    r = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n) + lo[e]
    (xa, ya), (xb, yb) = a[e].T, b[e].T
    x = np.clip(xa + (r + 0.5 - ya) / (yb - ya) * (xb - xa), -1.0, w + 1.0)
    crossings = np.sort(x + (w + 4.0) * r)  # row r's crossings within [r(w+4) - 1, r(w+4) + w + 1]
    base = (w + 4.0) * np.arange(h, dtype=np.float64)[:, None]
    xc = np.arange(w, dtype=np.float64)[None, :] + 0.5
    left = np.searchsorted(crossings, base + xc) - np.searchsorted(crossings, base - 1.5)
    return np.asarray(left % 2 == 1)


def _footprint_fits(source: Any, footprint: Footprint) -> bool:
    """Whether the footprint follows the source's validity rule (else its mask is read)."""
    kind = getattr(source, "mask_kind", None)
    if kind is None or getattr(source, "crs", None) is None or not hasattr(source, "transform"):
        return False
    if kind == "alpha" and getattr(source, "warped", False) and footprint.mask == "none":
        return True  # the warp's alpha band is the file's extent on the target grid
    if kind != footprint.mask:
        return False  # e.g. a nodata value the sensor supplies but the file lacks
    if kind == "nodata":
        a, b = getattr(source, "nodata", None), footprint.nodata
        if a is None or b is None:
            return False
        return bool(a == b or (math.isnan(a) and math.isnan(b)))
    return True


class ValidityIndex:
    """Coarse valid masks of all sources with summed-area tables for O(1) chip estimates.

    Each source provides ``coarse_valid_mask(max_size)`` (a decimated read, cheap); sources
    without it are assumed fully valid. A source given a :class:`Footprint` whose validity rule
    matches its own (same ``mask_kind`` and nodata value) gets the footprint rasterised instead
    (:func:`footprint_mask`), without opening the file; the others are read.

    Args:
        sources: the sources (anything with ``width``, ``height`` and optionally
            ``coarse_valid_mask``).
        max_size: longest side of each coarse mask.
        footprints: one :class:`Footprint` or None per source (e.g. from
            :func:`dinogeo.data.index_sources.index_footprints`); default: read every mask.

    Attributes:
        n_from_footprints: how many masks were rasterised from footprints (the rest were read).

    Raises:
        ValueError: if ``footprints`` is not one per source.
    """

    def __init__(
        self,
        sources: Sequence[Source],
        max_size: int = 64,
        footprints: Sequence[Footprint | None] | None = None,
    ) -> None:
        if footprints is not None and len(footprints) != len(sources):
            raise ValueError(
                f"{len(footprints)} footprints for {len(sources)} sources: give one per source "
                "(None to read that source's mask)"
            )
        self.shapes = [(int(s.height), int(s.width)) for s in sources]
        self.masks: list[np.ndarray] = []
        self._sat: list[np.ndarray] = []
        self.n_from_footprints = 0
        full: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        for i, s in enumerate(sources):
            fp = footprints[i] if footprints is not None else None
            fn = getattr(s, "coarse_valid_mask", None)
            if fp is not None and _footprint_fits(s, fp):
                self.n_from_footprints += 1
                h, w = self.shapes[i]
                if fp.full and not getattr(s, "warped", False):
                    m = np.ones(_coarse_shape(w, h, max_size), dtype=bool)
                else:
                    m = footprint_mask(fp, s.crs, s.transform, w, h, max_size)
            else:
                m = np.asarray(fn(max_size), dtype=bool) if fn else np.ones((1, 1), bool)
            if m.all():  # all-valid masks share one read-only copy per shape (100k clear files)
                if m.shape not in full:
                    full[m.shape] = (m, _summed_area(m))
                    for arr in full[m.shape]:
                        arr.setflags(write=False)
                m, sat = full[m.shape]
            else:
                sat = _summed_area(m)
            self.masks.append(m)
            self._sat.append(sat)

    def valid_fraction(self, i: int) -> float:
        """Estimated valid fraction of source ``i``."""
        return float(self.masks[i].mean())

    def valid_pixels(self, i: int) -> float:
        """Estimated number of valid pixels of source ``i``."""
        h, w = self.shapes[i]
        return self.valid_fraction(i) * h * w

    def chip_fraction(self, q: ChipQuery) -> float:
        """Estimated valid fraction of a chip (area outside the source counts as invalid)."""
        h, w = self.shapes[q.source]
        m = self.masks[q.source]
        sy, sx = m.shape[0] / h, m.shape[1] / w
        r0 = min(max(q.row * sy, 0.0), m.shape[0])
        r1 = min(max((q.row + q.height) * sy, 0.0), m.shape[0])
        c0 = min(max(q.col * sx, 0.0), m.shape[1])
        c1 = min(max((q.col + q.width) * sx, 0.0), m.shape[1])
        r0i, r1i = int(math.floor(r0)), int(math.ceil(r1))
        c0i, c1i = int(math.floor(c0)), int(math.ceil(c1))
        if r1i <= r0i or c1i <= c0i:
            return 0.0
        sat = self._sat[q.source]
        valid = sat[r1i, c1i] - sat[r0i, c1i] - sat[r1i, c0i] + sat[r0i, c0i]
        cells = (r1i - r0i) * (c1i - c0i)
        inside = ((r1 - r0) * (c1 - c0)) / max((q.height * sy) * (q.width * sx), 1e-12)
        return float(valid / cells) * float(min(inside, 1.0))
