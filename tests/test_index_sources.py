"""Sources built from index rows: no file opened, and read exactly as sources opened from paths."""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from dinogeo.data.header import header_from_row, read_header
from dinogeo.data.index import build_index, load_index, write_index
from dinogeo.data.index_sources import open_index_sources
from dinogeo.data.opener import open_source
from dinogeo.data.readers import RasterSource
from dinogeo.data.sensors import load_sensor
from dinogeo.errors import BandMismatchError, RasterReadError, SensorError
from tests.data.rasters import data as fixtures

RUFIJI = "sentinel2-timeseries-rufiji-rsgislib"
VIRGINIA = "sentinel2-l1c-virginia-sattestdata/S2_18SVG_20160112_10m_B02-B03-B04-B08_crop.tif"
BAHAMAS = "landsat7-rgb-bahamas-rasterio/RGB.byte.tif"
KOREA = "aerial-rgb-korea-rasterio/cogeo.tif"
OTHERS = [
    VIRGINIA,  # uint16, no nodata: mask "none", band descriptions
    BAHAMAS,  # uint8 nodata collar
    "drone-ortho-pix4d-riotiler/pix4d_alpha_nodata.tif",  # alpha band
    KOREA,  # internal mask, EPSG:3857
    "landsat8-sr-portovelho-scikiteo/LC08_232066_20190727.tif",  # int16, nodata -9999
    "landsat8-s1-peru-scikiteo/LC08_003069_20180906_clip.tif",  # float32
]
RUFIJI_DATES = ["20160312", "20160829", "20170615", "20180725"]
S2_BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]


@pytest.fixture(scope="module")
def archive(shared_data, tmp_path_factory):
    """An index of real rasters plus generated world-file PNG, tiny COG and VRT fixtures."""
    folder = tmp_path_factory.mktemp("index_sources")
    files = [shared_data / RUFIJI / f"SEN2_{d}_T37MEM_20m_10band.tif" for d in RUFIJI_DATES]
    files += [shared_data / f for f in OTHERS]
    files.append(fixtures.write_world_file_image(shared_data, folder / "fixtures", "png")[0])
    files += [fixtures.write_tiny_cog(shared_data, folder / "fixtures")]
    files += [fixtures.write_vrt(shared_data, folder / "fixtures")]
    index = build_index(files, workers=2, progress=False)
    assert not index.attrs["skipped"] and len(index) == len(files)
    out = folder / "index.parquet"
    write_index(index, out)
    return out


def _same(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


def assert_reads_alike(a: RasterSource, b: RasterSource) -> None:
    """Same grid, bands, validity rule, windows, masks and valid fractions."""
    for attr in ("crs", "transform", "width", "height", "bounds", "res", "dtype", "mask_kind"):
        assert getattr(a, attr) == getattr(b, attr), (a.path.name, attr)
    assert _same(a.nodata, b.nodata) and a.warped == b.warped and a.sensor == b.sensor
    assert a._read_indexes == b._read_indexes and a._alpha_index == b._alpha_index
    w, h = a.width, a.height
    windows = [
        Window(w // 3, h // 3, 64, 48),
        Window(w - 20, h - 10, 64, 48),
        Window(-8, -8, 32, 32),
    ]
    for win in windows:
        (ra, va), (rb, vb) = a.read(win), b.read(win)
        assert ra.dtype == rb.dtype
        np.testing.assert_array_equal(ra, rb)
        np.testing.assert_array_equal(va, vb)
        np.testing.assert_array_equal(a.read_normalized(win)[0], b.read_normalized(win)[0])
    np.testing.assert_array_equal(a.coarse_valid_mask(64), b.coarse_valid_mask(64))
    assert a.valid_fraction(64) == b.valid_fraction(64)


def test_row_header_equals_file_header(archive):
    frame = load_index(archive)
    for i, row in enumerate(frame.itertuples(index=False)):
        with rasterio.open(row.path) as ds:
            from_file = read_header(ds, Path(row.path))
        from_row = header_from_row(row)
        assert from_row == dataclasses.replace(from_file, crs_in_file=False), row.path
        # a Series (``row.count`` would be its method) and a dict give the same header
        assert header_from_row(frame.iloc[i]) == from_row
        assert header_from_row(frame.iloc[i].to_dict()) == from_row
        assert from_row.mask == row.mask


def test_index_sources_open_nothing_and_read_like_path_sources(archive, count_opens):
    frame = load_index(archive)
    sources = open_index_sources(frame)
    assert count_opens == []  # headers come from the rows
    assert all(isinstance(s, RasterSource) for s in sources)
    kinds = {s.mask_kind for s in sources}
    assert kinds == {"alpha", "nodata", "internal", "none"}
    for src, row in zip(sources, frame.itertuples(index=False), strict=True):
        by_path = open_source(row.path, sensor=row.sensor if isinstance(row.sensor, str) else None)
        assert_reads_alike(src, by_path)
    assert sorted(set(count_opens)) == sorted(frame["path"])  # opened lazily, on read
    clone = pickle.loads(pickle.dumps(sources[0]))  # as DataLoader workers get them
    win = Window(10, 20, 32, 32)
    np.testing.assert_array_equal(clone.read(win)[0], sources[0].read(win)[0])


def test_explicit_sensor_bands_and_warp_match(archive, shared_data, count_opens):
    frame = load_index(archive)
    rufiji = frame.iloc[0]
    a = RasterSource.from_index_row(rufiji, "sentinel2_l2a", S2_BANDS)
    s2 = load_sensor("sentinel2_l2a").select(S2_BANDS)  # as the SSL datamodule passes it
    b = RasterSource.from_index_row(rufiji, s2, ["B04", "B03", "B02", "nir"])
    png = frame[frame["path"].str.endswith(".png")].iloc[0]
    c = RasterSource.from_index_row(png, target_crs="EPSG:4326")  # CRS from the .prj, warped
    korea = frame[frame["path"].str.endswith("cogeo.tif")].iloc[0]
    d = RasterSource.from_index_row(korea, target_crs="EPSG:32652", target_res=0.5)
    assert count_opens == []
    assert c.warped and d.warped and d.mask_kind == "alpha"  # the warp adds an alpha band
    assert_reads_alike(a, RasterSource(rufiji["path"], "sentinel2_l2a", S2_BANDS))
    assert_reads_alike(b, RasterSource(rufiji["path"], s2, ["B04", "B03", "B02", "nir"]))
    assert b._read_indexes == [3, 2, 1, 7]
    assert_reads_alike(c, RasterSource(png["path"], target_crs="EPSG:4326"))
    assert_reads_alike(d, RasterSource(korea["path"], target_crs="EPSG:32652", target_res=0.5))


def test_row_checks_raise_like_file_checks(archive, count_opens):
    frame = load_index(archive)
    virginia = frame[frame["path"].str.endswith(VIRGINIA.split("/")[-1])].iloc[0]
    bahamas = frame[frame["path"].str.endswith("RGB.byte.tif")].iloc[0]
    with pytest.raises(BandMismatchError, match="has 3 data bands") as from_row:
        RasterSource.from_index_row(bahamas, "sentinel2_l2a")
    with pytest.raises(BandMismatchError) as from_file:
        RasterSource(bahamas["path"], "sentinel2_l2a")
    assert str(from_row.value) == str(from_file.value)
    with pytest.raises(SensorError, match="B99"):
        RasterSource.from_index_row(virginia, "sentinel2_l1c", ["B04", "B99"])
    broken = virginia.copy()
    broken["native_crs_wkt"] = "not a CRS"
    with pytest.raises(RasterReadError, match="re-run `dinogeo index`"):
        RasterSource.from_index_row(broken, check_file=False)
    store = virginia.copy()
    store["format"] = "zarr"
    with pytest.raises(ValueError, match="open_source"):
        RasterSource.from_index_row(store)
    assert count_opens == [bahamas["path"]]  # only the path-built source opened its file


def test_changed_files_are_reopened_with_one_warning(shared_data, tmp_path, count_opens):
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    shutil.copyfile(shared_data / BAHAMAS, a)
    shutil.copyfile(shared_data / BAHAMAS, b)
    frame = build_index([a, b], progress=False)
    count_opens.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # unchanged files: no warning, no open
        open_index_sources(frame)
    assert count_opens == []
    shutil.copyfile(shared_data / KOREA, a)  # another 3-band raster under the indexed name
    os.utime(b, (1e9, 1e9))
    with pytest.warns(UserWarning, match=r"2 of 2 .*a\.tif, .*b\.tif.*re-run `dinogeo index`"):
        new_a, _ = open_index_sources(frame)
    assert sorted(count_opens) == [str(a), str(b)]
    assert_reads_alike(
        new_a, open_source(a, frame["sensor"][0])
    )  # the file's header, not the row's
    assert new_a.mask_kind == "internal" and new_a.width != frame["width"][0]
    with pytest.warns(UserWarning, match=r"a\.tif: changed .*re-run `dinogeo index`"):
        assert RasterSource.from_index_row(frame.iloc[0]).width == new_a.width
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert RasterSource.from_index_row(frame.iloc[0], check_file=False).width == 791


def test_changed_file_that_no_longer_fits_warns_before_failing(shared_data, tmp_path):
    a = tmp_path / "a.tif"
    shutil.copyfile(shared_data / BAHAMAS, a)
    frame = build_index([a], progress=False)  # guessed sensor: 3-band rgb
    shutil.copyfile(shared_data / VIRGINIA, a)
    with pytest.warns(UserWarning, match="re-run `dinogeo index`"):
        with pytest.raises(BandMismatchError, match="4 data bands"):
            open_index_sources(frame)
