"""Ingest real rasters into one zarr store: pixel-exact, georeferenced, resumable, verified."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
import zarr

import dinogeo.data.ingest_copy as copy_mod
from dinogeo.cli.main import main as cli
from dinogeo.data.index import build_index, write_index
from dinogeo.data.ingest import ingest
from dinogeo.data.store_verify import verify_store
from dinogeo.data.zarr_source import open_zarr_source, open_zarr_store
from dinogeo.errors import NoValidDataError, OutputExistsError, RasterReadError

RASTERS = [
    "landsat7-rgb-bahamas-rasterio/RGB.byte.tif",  # uint8, nodata 0 collar
    "drone-ortho-pix4d-riotiler/pix4d_alpha_nodata.tif",  # RGB + alpha band
    "landsat8-sr-portovelho-scikiteo/LC08_232066_20190727.tif",  # int16, nodata -9999
]


@pytest.fixture(scope="module")
def index(shared_data):
    return build_index([shared_data / r for r in RASTERS], progress=False)


@pytest.fixture(scope="module")
def store(index, tmp_path_factory):
    out = tmp_path_factory.mktemp("ingest") / "archive.zarr"
    return ingest(index, out, chunk=128, scheduler="synchronous", progress=False)


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_round_trip_pixels_and_georeferencing(store, shared_data):
    meta = json.loads((store / "zarr.json").read_text())["attributes"]["dinogeo"]
    assert meta["complete"] is True and meta["chunk"] == 128
    assert meta["rasters"] == ["RGB.byte", "pix4d_alpha_nodata", "LC08_232066_20190727"]
    root = zarr.open_group(store, mode="r")
    for rel, name in zip(RASTERS, meta["rasters"]):
        g = root[name]
        with rasterio.open(shared_data / rel) as src:
            alpha = [i + 1 for i, c in enumerate(src.colorinterp) if c.name == "alpha"]
            bands = [i for i in range(1, src.count + 1) if i not in alpha]
            expected = src.read(bands)
            data = g["data"]
            assert data.dtype == expected.dtype and data.chunks == (len(bands), 128, 128)
            assert np.array_equal(data[...], expected)
            assert data.metadata.dimension_names == ("band", "y", "x")
            assert data.attrs["grid_mapping"] == "spatial_ref"
            if alpha:
                assert np.array_equal(g["valid"][...], (src.read(alpha[0]) > 0).astype("uint8"))
            else:
                assert "valid" not in g
            info = g.attrs["dinogeo"]
            assert rasterio.crs.CRS.from_wkt(info["crs_wkt"]) == src.crs
            assert info["transform"] == list(src.transform)[:6]
            assert info["source"] == str(shared_data / rel)
            assert info["nodata"] == src.nodata
            gt = [float(v) for v in g["spatial_ref"].attrs["GeoTransform"].split()]
            assert gt == list(src.transform.to_gdal())
            assert g["x"][0] == pytest.approx(src.xy(0, 0)[0])
            assert g["y"][0] == pytest.approx(src.xy(0, 0)[1])
    assert verify_store(store, sources=True) == []


def test_xarray_and_rioxarray_read_the_georeferencing(store, shared_data):
    import rioxarray  # noqa: F401 - registers the .rio accessor

    ds = xr.open_zarr(store, group="RGB.byte", decode_coords="all", consolidated=False)
    with rasterio.open(shared_data / RASTERS[0]) as src:
        assert ds["data"].rio.crs == src.crs
        assert ds["data"].rio.transform() == src.transform


def test_interrupted_ingest_resumes_to_identical_store(index, store, tmp_path, monkeypatch):
    real = copy_mod.copy_task
    calls = {"n": 0}

    def crash_after_five(task):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-run
        return real(task)

    out = tmp_path / "resumed.zarr"
    monkeypatch.setattr(copy_mod, "copy_task", crash_after_five)
    with pytest.raises(KeyboardInterrupt):
        ingest(index, out, chunk=128, scheduler="synchronous", progress=False)
    monkeypatch.setattr(copy_mod, "copy_task", real)
    blocks = zarr.open_group(out, mode="r")["RGB.byte/_blocks"][...]
    assert 0 < (blocks >= 0).sum() < blocks.size  # partly written
    with pytest.raises(RasterReadError, match="unfinished"):
        open_zarr_store(out)

    written = []
    monkeypatch.setattr(copy_mod, "copy_task", lambda t: written.append(t) or real(t))
    ingest(index, out, chunk=128, scheduler="synchronous", progress=False)
    total = sum(-(-h // 128) for h in index["height"])  # one task per chunk-row here
    assert len(written) == total - 5  # only the unfinished tasks ran again
    assert _tree(out) == _tree(store)  # byte-identical to the uninterrupted store
    assert verify_store(out) == []


def test_existing_store_rules(index, store, tmp_path):
    # a finished store of the same inputs is returned untouched
    before = _tree(store)
    assert ingest(index, store, chunk=128, scheduler="synchronous", progress=False) == store
    assert _tree(store) == before
    with pytest.raises(OutputExistsError, match="other inputs"):
        ingest(index.iloc[:1], store, chunk=128, scheduler="synchronous", progress=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(OutputExistsError, match="not a zarr store"):
        ingest(index, other, overwrite=True, scheduler="synchronous", progress=False)
    assert (other / "keep.txt").exists()


def test_verify_detects_a_damaged_chunk(index, tmp_path):
    out = ingest(
        index.iloc[:1], tmp_path / "one.zarr", chunk=128, scheduler="synchronous", progress=False
    )
    chunk_dir = out / "RGB.byte" / "data" / "c" / "0"
    a, b = chunk_dir / "2" / "2", chunk_dir / "2" / "3"
    a.write_bytes(b.read_bytes())  # a valid chunk, but the wrong one
    problems = verify_store(out)
    assert problems == [f"{out}/RGB.byte: chunk (2, 2) CRC mismatch"]


def test_distributed_client_and_cli(index, shared_data, tmp_path):
    from distributed import Client, LocalCluster

    with LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as lc:
        with Client(lc) as client:
            out = ingest(
                index.iloc[2:], tmp_path / "d.zarr", chunk=64, scheduler=client, progress=False
            )
    src = open_zarr_source(out)
    with rasterio.open(shared_data / RASTERS[2]) as ref:
        raw, valid = src.read(rasterio.windows.Window(0, 0, ref.width, ref.height))
        assert np.array_equal(raw, ref.read())
        assert np.array_equal(valid, (ref.read() != -9999).any(axis=0))

    idx = write_index(index.iloc[:1], tmp_path / "i.parquet")
    args = ["ingest", str(idx), "-o", str(tmp_path / "c.zarr"), "--scheduler", "synchronous"]
    assert cli([*args, "--chunk", "256", "-q", "--verify"]) == 0
    assert cli([*args, "--chunk", "64", "-q"]) == 1  # other chunk size: needs --overwrite
    assert cli([*args, "--chunk", "64", "-q", "--overwrite"]) == 0


def test_store_without_georeferencing_is_rejected(tmp_path):
    root = zarr.open_group(tmp_path / "plain.zarr", mode="w")
    root.create_array("data", shape=(2, 8, 8), dtype="uint8", chunks=(2, 8, 8))
    with pytest.raises(RasterReadError, match="without georeferencing") as err:
        open_zarr_source(tmp_path / "plain.zarr")
    assert "plain.zarr" in str(err.value) and "GeoTransform" in str(err.value)


def test_index_lists_the_rasters_of_a_store(store, index, tmp_path):
    zindex = build_index([store], progress=False)
    names = ["RGB.byte", "pix4d_alpha_nodata", "LC08_232066_20190727"]
    assert list(zindex["path"]) == [f"{store}/{n}" for n in names]
    assert set(zindex["format"]) == {"zarr"}
    assert list(zindex["native_crs"]) == list(index["native_crs"])
    assert list(zindex["mask"]) == ["nodata", "alpha", "nodata"]
    assert np.allclose(zindex["area_km2"], index["area_km2"])  # footprints carried over
    assert np.allclose(zindex["valid_fraction"], index["valid_fraction"])
    with pytest.raises(NoValidDataError, match="nothing to ingest"):
        ingest(zindex, tmp_path / "again.zarr", scheduler="synchronous", progress=False)


def test_one_bad_raster_does_not_stop_the_others(shared_data, tmp_path):
    good = tmp_path / "good.tif"
    bad = tmp_path / "bad.tif"
    source = shared_data / RASTERS[2]  # striped: a cut file still opens, its rows fail
    good.write_bytes(source.read_bytes())
    bad.write_bytes(source.read_bytes())
    idx = build_index([good, bad], progress=False)
    intact = bad.read_bytes()
    bad.write_bytes(intact[: len(intact) // 3])  # damaged after indexing
    out = tmp_path / "partial.zarr"
    with pytest.raises(RasterReadError, match="1 raster\\(s\\) failed") as err:
        ingest(idx, out, chunk=64, scheduler="synchronous", progress=False)
    assert str(bad) in str(err.value) and str(good) not in str(err.value)
    root = zarr.open_group(out, mode="r")
    assert (root["good/_blocks"][...] >= 0).all()  # the good raster was fully written
    bad.write_bytes(intact)  # repaired: the same command resumes and finishes
    ingest(idx, out, chunk=64, scheduler="synchronous", progress=False)
    assert verify_store(out, sources=True) == []
