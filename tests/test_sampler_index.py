"""Samplers over an indexed archive: coarse masks from the index footprints, no raster opened."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import rasterio
import rasterio.features
import shapely
from affine import Affine
from rasterio.windows import Window

from dinogeo.data import handles
from dinogeo.data.dataset import ChipDataset
from dinogeo.data.index import build_index, load_index, write_index
from dinogeo.data.index_sources import index_footprints, open_index_sources
from dinogeo.data.opener import open_source
from dinogeo.data.samplers import GridChipSampler, RandomChipSampler
from dinogeo.data.validity import Footprint, ValidityIndex, footprint_mask
from dinogeo.errors import ConfigError
from dinogeo.ssl.datamodule import SSLDataModule

RUFIJI = "sentinel2-timeseries-rufiji-rsgislib"
VIRGINIA = "sentinel2-l1c-virginia-sattestdata/S2_18SVG_20160112_10m_B02-B03-B04-B08_crop.tif"
OTHERS = [
    VIRGINIA,  # no nodata: mask "none"
    "landsat7-rgb-bahamas-rasterio/RGB.byte.tif",  # rotated scene, nodata collar
    "drone-ortho-pix4d-riotiler/pix4d_alpha_nodata.tif",  # alpha band
]
S2_BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]


@pytest.fixture(scope="module")
def archive(shared_data, tmp_path_factory):
    """An index of the 21 Rufiji dates (clouds = nodata 0) and three other real rasters."""
    files = sorted((shared_data / RUFIJI).glob("SEN2_*.tif")) + [shared_data / f for f in OTHERS]
    out = tmp_path_factory.mktemp("archive") / "index.parquet"
    write_index(build_index(files, workers=2, progress=False), out)
    return out


def test_footprint_masks_match_read_masks(archive):
    frame = load_index(archive)
    sources = open_index_sources(frame)
    fps = index_footprints(frame)
    assert all(isinstance(fp, Footprint) and fp.crs == "EPSG:4326" for fp in fps)
    from_index = ValidityIndex(sources, 64, fps)
    read = ValidityIndex(sources, 64)
    assert from_index.n_from_footprints == len(sources) and read.n_from_footprints == 0
    for src, a, b in zip(sources, from_index.masks, read.masks, strict=True):
        assert a.shape == b.shape and max(a.shape) <= 64
        assert abs(a.mean() - b.mean()) < 0.01, src.path.name
        assert (a & b).sum() / max((a | b).sum(), 1) > 0.95, src.path.name
    fracs = [m.mean() for m in from_index.masks]
    assert min(fracs) < 0.1 and max(fracs) == 1.0  # the test covers cloudy and clear dates
    full = [i for i, fp in enumerate(fps) if fp.full]
    assert full and all(from_index.masks[i].all() for i in full)
    # all-valid masks of one shape are one shared, read-only array (100k clear files: one mask)
    shared = {id(m) for m in from_index.masks if m.all() and m.shape == (64, 64)}
    assert len(shared) == 1 and not from_index.masks[full[0]].flags.writeable


def test_footprint_mask_equals_rasterize_on_rotated_grids_and_odd_shapes():
    transform = Affine(9.7, 2.3, 500_000.0, 1.9, -10.2, 4_000_000.0)  # rotated and sheared
    width, height = 640, 500
    cell = transform @ Affine.scale(width / 64, height / 50)

    def world(coords):  # pixel coordinates of the coarse grid -> CRS coordinates
        return [cell @ (x + 0.013, y + 0.029) for x, y in coords]

    holed = shapely.Polygon(
        world([(3, 2), (60, 5), (55, 47), (6, 40)]), [world([(20, 15), (40, 18), (30, 30)])]
    )
    second = shapely.Polygon(world([(-10, 30), (12, 44), (-4, 60)]))  # partly outside the grid
    shapes = [
        holed,
        shapely.MultiPolygon([holed, second]),
        shapely.GeometryCollection([second, shapely.LineString(world([(0, 0), (64, 50)])), holed]),
    ]
    for geom in shapes:
        got = footprint_mask(Footprint(geom, "EPSG:32633"), "EPSG:32633", transform, width, height)
        polys = [g for g in shapely.get_parts(geom) if g.geom_type == "Polygon"]
        ref = rasterio.features.rasterize(polys, out_shape=(50, 64), transform=cell, dtype="uint8")
        assert got.shape == (50, 64) and 0.2 < got.mean() < 0.9
        np.testing.assert_array_equal(got, ref.astype(bool))


def test_footprint_mask_on_a_known_polygon(shared_data):
    src = open_source(shared_data / VIRGINIA)
    b = src.bounds
    left = shapely.box(b.left, b.bottom, (b.left + b.right) / 2, b.top)
    m = footprint_mask(Footprint(left, src.crs), src.crs, src.transform, src.width, src.height)
    assert m.shape == (64, 64) and m[:, :32].all() and not m[:, 32:].any()
    empty = Footprint(shapely.Polygon(), "EPSG:4326")
    assert not footprint_mask(empty, src.crs, src.transform, src.width, src.height, 16).any()
    with pytest.raises(ValueError, match="one per source"):
        ValidityIndex([src], 64, [])


def test_sampler_from_index_opens_no_raster(archive, count_opens):
    frame = load_index(archive)
    sources = open_index_sources(frame)  # headers from the rows
    fps = index_footprints(frame)
    assert count_opens == []
    s = RandomChipSampler(sources, 32, length=100, min_valid=0.5, footprints=fps)
    assert count_opens == [] and s.validity.n_from_footprints == len(sources)
    g = GridChipSampler(sources, 32, min_valid=0.5, footprints=fps)
    assert count_opens == []
    assert abs(len(g) - len(GridChipSampler(sources, 32, min_valid=0.5))) <= 0.03 * len(g)
    handles.close_handles()
    count_opens.clear()
    RandomChipSampler(sources, 32, length=100, min_valid=0.5)
    masked = [str(src.path) for src in sources if src.mask_kind != "none"]
    assert sorted(count_opens) == sorted(masked)  # the read path opens every file with a mask


def test_mismatched_validity_rule_reads_that_file(archive, shared_data, count_opens):
    frame = load_index(archive)
    fps = index_footprints(frame)
    row = frame.index[frame["path"].str.endswith(VIRGINIA.split("/")[-1])][0]
    # the L1C sensor's nodata (0) is not in the file, so its footprint does not describe validity
    l1c = open_source(shared_data / VIRGINIA, sensor="sentinel2_l1c", bands=["B02", "B03", "B04"])
    warped = open_source(frame["path"][0], target_crs="EPSG:3857")  # Rufiji, nodata kept
    count_opens.clear()
    v = ValidityIndex([l1c, warped], 64, [fps[row], fps[0]])
    assert v.n_from_footprints == 1 and count_opens == [str(l1c.path)]
    read = ValidityIndex([warped], 64).masks[0]
    assert (v.masks[1] & read).sum() / (v.masks[1] | read).sum() > 0.95


def test_chips_from_index_meet_min_valid(archive):
    frame = load_index(archive)
    sources, fps = open_index_sources(frame), index_footprints(frame)
    s = RandomChipSampler(sources, 32, length=120, min_valid=0.6, seed=4, footprints=fps)
    exact = np.array([sources[q.source].read(Window(q.col, q.row, 32, 32))[1].mean() for q in s])
    assert exact.mean() > 0.8 and (exact >= 0.5).mean() > 0.9
    chips = ChipDataset(sources, min_valid=0.6, validity=s.validity)
    for q in list(s)[:40]:
        _, _, valid = chips.read_raw_chip(q)
        assert valid.mean() >= 0.6


def test_changed_file_falls_back_to_read(shared_data, tmp_path):
    src = shared_data / RUFIJI / "SEN2_20160829_T37MEM_20m_10band.tif"
    copy = tmp_path / src.name
    shutil.copyfile(src, copy)
    frame = build_index([copy], progress=False)
    assert index_footprints(frame)[0] is not None
    os.utime(copy, (1e9, 1e9))
    with pytest.warns(UserWarning, match="re-run `dinogeo index`"):
        assert index_footprints(frame) == [None]
    assert index_footprints(frame, check_files=False)[0] is not None


def _tiny(**kwargs):
    base = {"sensor": "sentinel2_l2a", "samples_per_epoch": 8, "batch_size": 4, "num_workers": 0}
    base.update(global_size=32, local_size=16, n_local=2, chip_size=48)
    return SSLDataModule(**{**base, **kwargs})


def test_datamodule_index_uses_footprints(shared_data, tmp_path, count_opens):
    files = sorted((shared_data / RUFIJI).glob("SEN2_2016*.tif"))
    index = tmp_path / "rufiji.parquet"
    write_index(build_index(files, progress=False), index)
    dm = _tiny(index=str(index), bands=S2_BANDS, scale=1e-3, offset=0.0)
    count_opens.clear()
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert count_opens == []  # sources from the index rows, masks from the footprints
    # the 2016-08-29 date has no 48-px chip with half its pixels valid: the archive skips it
    assert len(dm.archive.sources) == len(files) - 1
    assert loader.sampler.base.validity.n_from_footprints == len(dm.archive.sources)
    batch = dm.on_after_batch_transfer(next(iter(loader)), 0)
    assert batch["global_crops"].shape == (8, 10, 32, 32)


@pytest.mark.parametrize("align", [16, 32])
def test_datamodule_chip_align(shared_data, align):
    dm = _tiny(
        sources=[str(shared_data / VIRGINIA)],
        sensor="sentinel2_l1c",
        bands=["B02", "B03", "B04", "B08"],
        chip_align=align,
        samples_per_epoch=40,
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    queries = [q for _, _, q in loader.sampler]
    assert len(queries) == 40 and loader.sampler.base.align == align
    assert all(q.row % align == 0 and q.col % align == 0 for q in queries)
    assert len({(q.row, q.col) for q in queries}) > 10  # still random, on the tile grid
    read_q, _, _ = loader.dataset.chips.read_raw_chip(queries[0])  # fully valid: no redraw
    assert read_q == queries[0]


@pytest.mark.parametrize("bad", [0, -256, 2.5, True])
def test_chip_align_must_be_a_positive_int(shared_data, bad):
    with pytest.raises(ConfigError, match="chip_align"):
        _tiny(sources=[str(shared_data / VIRGINIA)], chip_align=bad)
