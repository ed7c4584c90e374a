"""Class rasters to a styled GeoPackage of polygons, in 2-D blocks merged across block edges.

The raster is read in square blocks; each block is polygonised with ``rasterio.features.shapes``
(4-connected regions of one class). Pieces that touch the frontier between the blocks done and the
blocks to do are kept and dissolved with the pieces of the same class in the next blocks (a union
split into its parts, so only pieces sharing an edge merge), and every region is written as soon as
it cannot grow any more: each feature is one whole connected region of one class, the same
polygons as a polygonisation of the whole raster at once. Memory is bounded by the block and by the
regions crossing the frontier (one block row's lower edge). Such a region is kept as its per-block
pieces and dissolved once, when no later block can reach it (re-unioning a region that spans the
raster at every block copied it every time and grew memory with the number of blocks). Each
feature carries the class value, the class name and its area in hectares computed in a local
Lambert azimuthal equal-area CRS. The layer's default QGIS style goes into the GeoPackage's
``layer_styles`` table.

A minimum mapping unit (``min_mapping_unit`` pixels) merges every smaller region into its largest
neighbour before polygonising (GDAL's sieve, 4-connected; regions touching only nodata stay). Each
block is sieved in a window with a halo of ``min_mapping_unit + 1`` pixels: a region smaller than
the unit spans fewer pixels than the halo, so it is seen whole, and a larger region cut by the
window still counts as large. A small region that straddles a block edge is decided once, in the
window of the block holding its bounding box's top-left pixel, and every block takes that decision
for its pixels of the region: a region is never split between two neighbours. The neighbour it
merges into is the largest as seen in that window (a neighbour cut by the window may look smaller
than it is; a whole-raster sieve can then pick another neighbour). Only the polygons are sieved;
the raster keeps the model's per-pixel classes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import rasterio
import shapely
from affine import Affine
from rasterio.features import shapes, sieve
from rasterio.windows import Window
from scipy import ndimage

from dinogeo.errors import ConfigError
from dinogeo.inference.output_stats import equal_area_crs
from dinogeo.inference.vector_style import (
    GPKG_OPTIONS,
    vector_qml,
    vector_sld,
    write_layer_style,
)
from dinogeo.inference.writer import check_output_path
from dinogeo.models.task_card import TaskCard

__all__ = ["BLOCK", "MIN_MAPPING_UNIT", "check_min_mapping_unit", "vectorize_classes"]


def _parts(geom: shapely.Geometry) -> list[shapely.Geometry]:
    return [g for g in shapely.get_parts(geom) if not g.is_empty]


#: default minimum mapping unit of class polygons, in pixels (1: keep every region)
MIN_MAPPING_UNIT = 4


def check_min_mapping_unit(pixels: int) -> None:
    """Refuse a minimum mapping unit below one pixel.

    Raises:
        ConfigError: ``pixels`` < 1.
    """
    if pixels < 1:
        raise ConfigError(
            f"min_mapping_unit must be at least 1 pixel (1 keeps every region), got {pixels}"
        )


#: default block side of the polygonisation, in pixels
BLOCK = 2048


def _small_clusters(
    data: np.ndarray, valid: np.ndarray, min_pixels: int
) -> tuple[np.ndarray, list[tuple[slice, slice]]]:
    """Label the clusters of small regions of ``data`` (0 elsewhere).

    A small region has fewer than ``min_pixels`` 4-connected pixels of one class; a cluster is a
    4-connected set of pixels of small regions (a small region merging into a small neighbour is
    decided together with it).

    Returns:
        The cluster label image and, per label ``k``, the ``(row, col)`` slices of its bounding
        box (index ``k - 1``).
    """
    small_px = np.zeros(data.shape, bool)
    for value in np.unique(data[valid]):
        lab, n = ndimage.label((data == value) & valid)
        if n:
            small = np.bincount(lab.ravel(), minlength=n + 1) < min_pixels
            small[0] = False
            small_px |= small[lab]
    labels, count = ndimage.label(small_px)
    return labels, list(ndimage.find_objects(labels)) if count else []


class _BlockSieve:
    """Sieves a raster block by block so that every small region is decided in one window.

    Blocks must come in row-major order. Each block is sieved in its window (the block plus a halo
    of ``2 * min_pixels + 16``); the sieved window of the previous block and the lower halo of the
    blocks of the previous block row are kept, so a block reads the decision of the block that owns
    a cluster of small regions straddling its top or left edge (the block holding the cluster's
    top-left corner). A cluster too large for the halo keeps each block's own decision.
    """

    def __init__(self, ds: rasterio.io.DatasetReader, nodata: float | None, min_pixels: int,
                 block: int) -> None:  # fmt: skip
        self.ds, self.nodata, self.min_pixels, self.block = ds, nodata, min_pixels, block
        self.halo = 2 * min_pixels + 16
        self.undecided = 0
        self.left: tuple[int, int, np.ndarray] | None = None
        self.above: dict[int, tuple[int, int, np.ndarray]] = {}
        self.below: dict[int, tuple[int, int, np.ndarray]] = {}

    def _owner_array(self, owner: tuple[int, int], here: int) -> tuple[int, int, np.ndarray] | None:
        """The owner's kept sieved pixels ``(top, left, array)``; None if not kept."""
        if owner[0] == here:
            return self.left
        return self.above.get(owner[1])

    def __call__(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """The sieved block rows ``r0:r1``, columns ``c0:c1``."""
        ds, h = self.ds, self.halo
        if c0 == 0:
            self.above, self.below, self.left = self.below, {}, None
        a0, a1 = max(0, r0 - h), min(ds.height, r1 + h)
        b0, b1 = max(0, c0 - h), min(ds.width, c1 + h)
        data = ds.read(1, window=Window(b0, a0, b1 - b0, a1 - a0))
        valid = data != self.nodata if self.nodata is not None else np.ones(data.shape, bool)
        out = sieve(data, self.min_pixels, mask=valid, connectivity=4)
        bi = r0 // self.block
        labels, boxes = _small_clusters(data, valid, self.min_pixels)
        for k, (rows, cols) in enumerate(boxes, start=1):
            top, left = rows.start + a0, cols.start + b0
            bottom, right = rows.stop + a0, cols.stop + b0
            if not (bottom > r0 and top < r1 and right > c0 and left < c1):
                continue  # not in this block
            owner = (top // self.block, left // self.block)
            if owner == (bi, c0 // self.block):
                continue
            kept = self._owner_array(owner, bi)
            cut = (top == a0 and a0 > 0) or (left == b0 and b0 > 0)
            cut = cut or (bottom == a1 and a1 < ds.height) or (right == b1 and b1 < ds.width)
            if kept is None or cut:
                self.undecided += 1
                continue
            k_top, k_left, arr = kept
            if top < k_top or left < k_left or bottom > k_top + arr.shape[0]:
                self.undecided += 1
                continue
            if right > k_left + arr.shape[1]:
                self.undecided += 1
                continue
            rr, cc = np.nonzero(labels[rows, cols] == k)
            rr, cc = rr + rows.start, cc + cols.start
            out[rr, cc] = arr[rr + a0 - k_top, cc + b0 - k_left]
        self.left = (a0, b0, out)
        self.below[c0 // self.block] = (r1, b0, out[r1 - a0 :])
        return np.asarray(out[r0 - a0 : r1 - a0, c0 - b0 : c1 - b0])


def _join(groups: list[list[shapely.Geometry]], touching: list[shapely.Geometry],
          edge: shapely.Geometry) -> list[list[shapely.Geometry]]:  # fmt: skip
    """Attach the new pieces ``touching`` the block's top/left ``edge`` to the pending regions.

    A region is a list of pieces (one per block it spans), kept apart rather than unioned: a new
    piece joins every region whose pieces share a stretch of the edge with it (a common segment of
    positive length: 4-connected across the edge; a shared corner point does not connect), and
    regions it bridges merge. Unjoined new pieces start regions of their own.
    """
    if not touching:
        return groups
    flat = [p for grp in groups for p in grp]
    owner = np.array([g for g, grp in enumerate(groups) for _ in grp], dtype=np.int64)
    parent = list(range(len(groups) + len(touching)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if flat:
        near = np.flatnonzero(shapely.intersects(flat, edge))
        if near.size:
            old_lines = shapely.intersection(np.array(flat, dtype=object)[near], edge)
            new_lines = shapely.intersection(np.array(touching, dtype=object), edge)
            a, b = shapely.STRtree(new_lines).query(old_lines, predicate="intersects")
            shared = shapely.length(shapely.intersection(old_lines[a], new_lines[b])) > 0
            for i, j in zip(a[shared], b[shared], strict=True):
                parent[root(int(owner[near[i]]))] = root(len(groups) + int(j))
    merged: dict[int, list[shapely.Geometry]] = {}
    for i, grp in enumerate(groups):
        merged.setdefault(root(i), []).extend(grp)
    for j, p in enumerate(touching):
        merged.setdefault(root(len(groups) + j), []).append(p)
    return list(merged.values())


def _regions(
    ds: rasterio.io.DatasetReader, nodata: float | None, block: int, min_pixels: int = 1
) -> Iterator[tuple[int, shapely.Geometry]]:
    """Yield ``(class value, polygon in pixel coordinates)`` for every whole connected region.

    A region crossing block edges is kept as its per-block pieces until no later block can reach
    it, then dissolved once: a region spanning the raster is not re-unioned (and copied) at every
    block, which made memory grow with the number of blocks.
    """
    sieved = _BlockSieve(ds, nodata, min_pixels, block) if min_pixels > 1 else None
    pending: dict[int, list[list[shapely.Geometry]]] = {}
    width, height = ds.width, ds.height
    for r0 in range(0, height, block):
        r1 = min(height, r0 + block)
        for c0 in range(0, width, block):
            c1 = min(width, c0 + block)
            if sieved is not None:
                data = sieved(r0, r1, c0, c1)
            else:
                data = np.asarray(ds.read(1, window=Window(c0, r0, c1 - c0, r1 - r0)))
            mask = data != nodata if nodata is not None else None
            new: dict[int, list[shapely.Geometry]] = {}
            for geom, value in shapes(data, mask=mask, transform=Affine.translation(c0, r0)):
                new.setdefault(int(value), []).append(shapely.geometry.shape(geom))
            # the frontier between the blocks done and the blocks to do, after this block
            lines = [[(c1, r0), (c1, r1)]] if c1 < width else []
            lines += [[(c1, r0), (width, r0)]] if c1 < width and r0 > 0 else []
            lines += [[(0, r1), (c1, r1)]] if r1 < height else []
            frontier = shapely.MultiLineString(lines)
            edge = shapely.MultiLineString([[(c0, r0), (c1, r0)], [(c0, r0), (c0, r1)]])
            nxt: dict[int, list[list[shapely.Geometry]]] = {}
            for value in sorted(set(pending) | set(new)):
                polys = new.get(value, [])
                hit = shapely.intersects(polys, edge) if polys else np.zeros(0, bool)
                groups = _join(
                    pending.get(value, []), [p for p, t in zip(polys, hit, strict=True) if t], edge
                )
                groups += [[p] for p, t in zip(polys, hit, strict=True) if not t]
                for grp in groups:
                    if lines and shapely.intersects(grp, frontier).any():
                        nxt.setdefault(value, []).append(grp)
                    else:
                        for p in _dissolve(grp):
                            yield value, p
            pending = nxt
    for value, groups in pending.items():
        for grp in groups:
            for p in _dissolve(grp):
                yield value, p


def _dissolve(pieces: list[shapely.Geometry]) -> list[shapely.Geometry]:
    """One region's pieces as polygons (one when they are 4-connected)."""
    return pieces if len(pieces) == 1 else _parts(shapely.union_all(pieces))


def vectorize_classes(
    raster: str | Path,
    task: TaskCard,
    dst: str | Path,
    *,
    layer: str | None = None,
    overwrite: bool = False,
    block: int = BLOCK,
    chunk: int = 5000,
    min_mapping_unit: int = MIN_MAPPING_UNIT,
) -> Path:
    """Polygonise a class raster into a styled GeoPackage.

    Args:
        raster: class raster (e.g. a ``dinogeo predict`` output).
        task: task card giving class names and colours.
        dst: output ``.gpkg`` (written to a temporary name, then renamed).
        layer: layer name (default: the raster's stem).
        overwrite: replace an existing ``dst``.
        block: side of the square blocks read and polygonised at a time, in pixels.
        chunk: features written per batch.
        min_mapping_unit: smallest region in pixels; smaller ones are merged into their largest
            neighbour (1 keeps every region).

    Returns:
        ``dst``.

    Raises:
        ConfigError: ``min_mapping_unit`` below 1.
    """
    check_min_mapping_unit(min_mapping_unit)
    dst = Path(dst)
    check_output_path(dst, overwrite=overwrite)
    layer = layer or Path(raster).stem
    names = {c.value: c.name for c in task.classes}
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}.gpkg")
    tmp.unlink(missing_ok=True)
    try:
        with rasterio.open(raster) as ds:
            t = ds.transform
            m = np.array([[t.a, t.d], [t.b, t.e]])
            shift = np.array([t.c, t.f])

            def affine(xy: np.ndarray) -> np.ndarray:
                return np.asarray(xy @ m + shift)

            b = ds.bounds
            laea = equal_area_crs(ds.crs, (b.left + b.right) / 2, (b.bottom + b.top) / 2)
            written = 0
            batch: list[tuple[int, shapely.Geometry]] = []

            def flush() -> None:
                nonlocal written
                geoms = shapely.transform(np.array([g for _, g in batch], dtype=object), affine)
                values = [v for v, _ in batch]
                gdf = gpd.GeoDataFrame(
                    {
                        "class": np.array(values, dtype=np.int32),
                        "class_name": [names.get(v, str(v)) for v in values],
                    },
                    geometry=gpd.GeoSeries(list(geoms), crs=ds.crs),
                )
                gdf["area_ha"] = gdf.geometry.to_crs(laea).area / 1e4 if len(gdf) else []
                pyogrio.write_dataframe(
                    gdf, tmp, layer=layer, driver="GPKG", append=written > 0,
                    geometry_type="Polygon", promote_to_multi=False,
                    dataset_options=GPKG_OPTIONS if not written else None,
                )  # fmt: skip
                written += len(gdf) or 1
                batch.clear()

            for item in _regions(ds, ds.nodata, int(block), int(min_mapping_unit)):
                batch.append(item)
                if len(batch) >= chunk:
                    flush()
            if batch or not written:
                flush()
        write_layer_style(tmp, layer, vector_qml(task), vector_sld(task, layer))
        Path(str(dst) + "-journal").unlink(missing_ok=True)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dst
