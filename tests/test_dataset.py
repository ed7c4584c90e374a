"""ChipDataset, collate, DataLoader workers, Lightning sampler handling and the torchgeo adapter."""

from __future__ import annotations

import glob

import numpy as np
import pytest
import torch
from rasterio.windows import Window

from dinogeo.data.chips import ChipQuery
from dinogeo.data.dataset import ChipDataset, SourceGeoDataset, collate_samples, dataloader
from dinogeo.data.opener import open_source
from dinogeo.data.samplers import GridChipSampler, RandomChipSampler
from dinogeo.errors import NoValidDataError

RUFIJI = "sentinel2-timeseries-rufiji-rsgislib"


@pytest.fixture(scope="module")
def s2_sources(shared_data):
    files = sorted(glob.glob(str(shared_data / RUFIJI / "SEN2_*_10band.tif")))[:6]
    bands = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]
    return [open_source(f, "sentinel2_l2a", bands) for f in files]


def test_sample_dict_and_rejection_redraws(s2_sources):
    ds = ChipDataset(s2_sources, min_valid=0.6)
    # a chip entirely outside the raster is rejected and redrawn inside, deterministically
    q = ChipQuery(0, 5000, 5000, 32, 32, seed=4)
    a, b = ds[q], ds[q]
    assert a["valid"].float().mean() >= 0.6
    assert torch.equal(a["image"], b["image"]) and a["bounds"] == b["bounds"]
    assert a["image"].shape == (10, 32, 32) and a["image"].dtype == torch.float32
    assert a["valid"].dtype == torch.bool
    assert a["crs"] == s2_sources[0].crs and a["path"].endswith(".tif")
    left, bottom, right, top = a["bounds"]
    assert right - left == pytest.approx(32 * 20) and top - bottom == pytest.approx(32 * 20)
    src = s2_sources[0]
    assert src.bounds.left <= left and right <= src.bounds.right
    # grid chips (seed -1) are never redrawn
    g = ds[ChipQuery(0, 5000, 5000, 32, 32)]
    assert not g["valid"].any() and (g["image"] == 0).all()


def test_image_matches_normalised_read(s2_sources):
    ds = ChipDataset(s2_sources, min_valid=0.0)
    s = ds[ChipQuery(2, 10, 20, 40, 30, seed=1)]
    raw, valid = s2_sources[2].read(Window(20, 10, 30, 40))
    expected = s2_sources[2].sensor.normalize(raw)
    np.testing.assert_allclose(s["image"].numpy()[:, valid], expected[:, valid], rtol=1e-6)
    left, _, _, top = s["bounds"]
    assert (left, top) == pytest.approx(s2_sources[2].transform @ (20, 10))


def test_rejection_gives_up_on_empty_source(shared_data, tmp_path):

    from tests.data.rasters import data as fixtures

    empty = open_source(
        fixtures.write_all_nodata(shared_data, tmp_path),
        "sentinel2_l1c",
        ["blue", "green", "red", "nir"],
    )
    ds = ChipDataset([empty], max_retries=3)
    with pytest.raises(NoValidDataError, match="all_nodata.tif"):
        ds[ChipQuery(0, 0, 0, 16, 16, seed=1)]


def test_dataloader_with_workers_random_and_grid(s2_sources):
    sampler = RandomChipSampler(s2_sources, 48, length=24, seed=0, min_valid=0.5)
    ds = ChipDataset(s2_sources, min_valid=0.5, validity=sampler.validity)
    loader = dataloader(ds, sampler, batch_size=8, num_workers=2)
    batches = list(loader)
    assert len(batches) == 3
    b = batches[0]
    assert b["image"].shape == (8, 10, 48, 48) and b["valid"].shape == (8, 48, 48)
    assert len(b["crs"]) == 8 and len(b["bounds"]) == 8 and len(b["path"]) == 8
    assert all(bt["valid"].float().mean(dim=(1, 2)).min() >= 0.5 for bt in batches)
    # same chips as reading in the main process
    single = [ds[q] for q in sampler][:8]
    assert torch.equal(torch.stack([s["image"] for s in single]), b["image"])
    grid = GridChipSampler(s2_sources[:2], 64, 48)
    n = sum(bt["image"].shape[0] for bt in dataloader(ds, grid, batch_size=5, num_workers=2))
    assert n == len(grid.chips)


def test_collate_keeps_non_tensors():
    s = {"image": torch.zeros(2, 3, 3), "crs": "EPSG:4326", "path": "a"}
    out = collate_samples([s, s])
    assert out["image"].shape == (2, 2, 3, 3) and out["crs"] == ["EPSG:4326"] * 2


def test_torchgeo_samplers_query_our_sources(s2_sources):
    from torchgeo.datasets import stack_samples
    from torchgeo.samplers import GridGeoSampler, RandomGeoSampler

    tg = SourceGeoDataset(s2_sources[:3])
    assert tg.res == pytest.approx((20.0, 20.0))
    rs = RandomGeoSampler(tg, 32, length=4)
    samples = [tg[q] for q in rs]
    batch = stack_samples(samples)
    assert batch["image"].shape == (4, 10, 32, 32) and batch["valid"].shape == (4, 32, 32)
    grid = list(GridGeoSampler(tg, 64, 64))
    s = tg[grid[0]]
    assert s["image"].shape[1:] == (64, 64)
    # the mosaic equals our own read where the first source is valid
    x, y, _ = grid[0]
    src = s2_sources[0]
    col, row = ~src.transform @ (x.start, y.stop)
    img, valid = src.read_normalized(Window(round(col), round(row), 64, 64))
    np.testing.assert_allclose(s["image"].numpy()[:, valid], img[:, valid], rtol=1e-6)
    with pytest.raises(ValueError, match="target_crs"):
        SourceGeoDataset([src, open_source(src.path, target_crs="EPSG:4326")])


def test_batched_read_is_zero_copy_and_equal(s2_sources):
    sampler = RandomChipSampler(s2_sources, 32, length=6, seed=2)
    ds = ChipDataset(s2_sources, validity=sampler.validity)
    queries = list(sampler)
    batch = ds.__getitems__(queries)
    for q, s in zip(queries, batch):
        single = ds[q]
        assert torch.equal(single["image"], s["image"]) and torch.equal(single["valid"], s["valid"])
        assert single["bounds"] == s["bounds"]
    out = collate_samples(batch)
    assert out["image"].shape == (6, 10, 32, 32)
    assert (
        out["image"].untyped_storage().data_ptr() == batch[0]["image"].untyped_storage().data_ptr()
    )
    # a transform that replaces the image falls back to stacking
    ds_t = ChipDataset(s2_sources, transforms=lambda s: {**s, "image": s["image"] * 2})
    out_t = collate_samples(ds_t.__getitems__(queries))
    torch.testing.assert_close(out_t["image"], out["image"] * 2)
    # mixed chip sizes in one batch also work (per-chip path)
    mixed = ds.__getitems__([ChipQuery(0, 0, 0, 16, 16, 1), ChipQuery(1, 0, 0, 24, 24, 1)])
    assert [m["image"].shape[1] for m in mixed] == [16, 24]


def test_aligned_random_chips(s2_sources, shared_data):
    src = open_source(shared_data / "landsat7-rgb-bahamas-rasterio/RGB.byte.tif")
    s = RandomChipSampler([src], 64, length=40, seed=0, align=64, min_valid=0.3)
    assert all(q.row % 64 == 0 and q.col % 64 == 0 for q in s)
    assert all(q.row + 64 <= src.height and q.col + 64 <= src.width for q in s)
    with pytest.raises(ValueError, match="align"):
        RandomChipSampler([src], 64, align=0)
