"""RasterSource and ZarrSource both meet the public Source protocol, on real imagery."""

from __future__ import annotations

import typing
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from rasterio.coords import BoundingBox
from rasterio.crs import CRS
from rasterio.windows import Window

from dinogeo.data import Source
from dinogeo.data.dataset import ChipDataset
from dinogeo.data.index import build_index
from dinogeo.data.index_sources import open_index_sources
from dinogeo.data.ingest import ingest
from dinogeo.data.opener import open_source
from dinogeo.data.readers import RasterSource
from dinogeo.data.samplers import GridChipSampler
from dinogeo.data.sensors import Sensor
from dinogeo.data.source import Grid
from dinogeo.data.zarr_source import ZarrSource

RASTER = "landsat7-rgb-bahamas-rasterio/RGB.byte.tif"  # nodata collar: valid fraction < 1

#: the runtime type of each data member of the protocol
MEMBER_TYPES = {
    "path": Path,
    "sensor": Sensor,
    "crs": CRS,
    "transform": Affine,
    "width": int,
    "height": int,
    "bounds": BoundingBox,
    "dtype": np.dtype,
    "mask_kind": str,
}


@pytest.fixture(scope="module")
def both(shared_data, tmp_path_factory):
    path = shared_data / RASTER
    store = ingest(
        build_index([path], progress=False), tmp_path_factory.mktemp("src") / "s.zarr",
        chunk=128, scheduler="synchronous", progress=False,
    )  # fmt: skip
    zarr = open_source(store)
    raster = open_source(path, zarr.sensor)  # the sensor ingest recorded (with its statistics)
    assert type(raster) is RasterSource and type(zarr) is ZarrSource
    return raster, zarr


def test_protocol_names_every_member():
    members = set(typing.get_type_hints(Source)) | {
        n for n in vars(Source) if not n.startswith("_")
    }
    assert set(MEMBER_TYPES) | {"nodata"} <= members
    assert {"res", "count", "read", "read_normalized", "coarse_valid_mask", "valid_fraction"} <= (
        members
    )


def test_both_sources_meet_the_protocol(both):
    for src in both:
        assert isinstance(src, Source), type(src)
        for name, kind in MEMBER_TYPES.items():
            assert isinstance(getattr(src, name), kind), (type(src).__name__, name)
        assert src.nodata is None or isinstance(src.nodata, float)
        assert src.mask_kind in ("alpha", "nodata", "internal", "none")
        assert src.count == len(src.sensor.bands) == 3
        assert src.res == (abs(src.transform.a), abs(src.transform.e))


def test_protocol_members_agree_between_raster_and_zarr(both):
    raster, zarr = both
    grid = ("crs", "transform", "width", "height", "bounds", "res", "count", "dtype", "nodata")
    assert {g: getattr(raster, g) for g in grid} == {g: getattr(zarr, g) for g in grid}
    window = Window(-16, 560, 96, 80)  # crosses the left edge (boundless) into valid pixels
    for read in ("read", "read_normalized"):
        (a, va), (b, vb) = getattr(raster, read)(window), getattr(zarr, read)(window)
        assert a.shape == b.shape == (3, 80, 96) and va.shape == (80, 96)
        np.testing.assert_array_equal(va, vb)
        np.testing.assert_array_equal(a, b)
        assert not va[:, :16].any() and va.any()
    assert read_normalized_dtype(raster, zarr, window) == np.float32
    ma, mb = raster.coarse_valid_mask(64), zarr.coarse_valid_mask(64)
    assert ma.dtype == bool and ma.shape == mb.shape and max(ma.shape) <= 64
    fa, fb = raster.valid_fraction(64), zarr.valid_fraction(64)
    assert 0.3 < fa < 1.0 and abs(fa - fb) < 0.02


def read_normalized_dtype(raster: Source, zarr: Source, window: Window) -> np.dtype:
    """The dtype both sources normalise to (they must agree)."""
    a, b = raster.read_normalized(window)[0], zarr.read_normalized(window)[0]
    assert a.dtype == b.dtype
    return a.dtype


def test_seams_take_any_source(both, shared_data):
    raster, zarr = both
    indexed = open_index_sources(build_index([shared_data / RASTER], progress=False))
    assert len(indexed) == 1 and isinstance(indexed[0], Source)
    sampler = GridChipSampler([raster, zarr], size=64, stride=256, min_valid=0.5)
    queries = list(sampler)
    assert {q.source for q in queries} == {0, 1}
    dataset = ChipDataset([raster, zarr], queries=queries)
    by_source = {q.source: dataset[i]["image"] for i, q in enumerate(queries)}
    assert by_source[0].shape == by_source[1].shape == (3, 64, 64)


def test_an_incomplete_object_is_not_a_source(both):
    raster, _ = both

    class NoReads:
        def __init__(self) -> None:
            for name in MEMBER_TYPES:
                setattr(self, name, getattr(raster, name))
            self.nodata, self.res, self.count = raster.nodata, raster.res, raster.count

    assert not isinstance(NoReads(), Source)


def test_grid_and_crs_like(both, shared_data):
    raster, zarr = both
    assert isinstance(raster, Grid) and isinstance(zarr, Grid)
    path = shared_data / RASTER
    by_int = open_source(path, target_crs=32617)  # an EPSG code
    by_str = open_source(path, target_crs="EPSG:32617")
    assert by_int.crs == by_str.crs == CRS.from_epsg(32617) != raster.crs
    assert (by_int.width, by_int.height, by_int.transform) == (
        by_str.width, by_str.height, by_str.transform,
    )  # fmt: skip
    with pytest.raises(ValueError, match="target_crs"):
        open_source(path, target_crs="EPSG:not-a-code")
