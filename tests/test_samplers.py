"""Chip samplers: valid-area weighting, rejection, grid coverage, sharding, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from torch.utils.data import DistributedSampler

from dinogeo.data.chips import ChipQuery, redraw_chip
from dinogeo.data.opener import open_source
from dinogeo.data.samplers import GridChipSampler, RandomChipSampler
from dinogeo.data.validity import ValidityIndex
from dinogeo.errors import NoValidDataError
from tests.data.rasters import data as fixtures

RUFIJI = "sentinel2-timeseries-rufiji-rsgislib"


@pytest.fixture(scope="module")
def sources(shared_data):
    files = [
        "landsat7-rgb-bahamas-rasterio/RGB.byte.tif",  # nodata collar, ~67 % valid
        f"{RUFIJI}/SEN2_20160829_T37MEM_20m_10band.tif",  # 5 % valid (clouds masked)
        f"{RUFIJI}/SEN2_20160710_T37MEM_20m_10band.tif",  # fully valid, small
        "drone-ortho-pix4d-riotiler/pix4d_alpha_nodata.tif",  # alpha band
    ]
    return [open_source(shared_data / f) for f in files]


def test_random_weights_follow_valid_area(sources):
    s = RandomChipSampler(sources, 64, length=400, seed=3)
    areas = np.array([src.valid_fraction(64) * src.width * src.height for src in sources])
    np.testing.assert_allclose(s.weights, areas / areas.sum(), rtol=1e-6)
    counts = np.bincount([q.source for q in s], minlength=len(sources)) / 400
    assert np.abs(counts - s.weights).max() < 0.08
    assert isinstance(s, DistributedSampler)


def test_random_prechecks_valid_fraction(sources):
    s = RandomChipSampler(sources[:1], 96, length=60, min_valid=0.8, seed=0)
    est = [s.validity.chip_fraction(q) for q in s]
    assert min(est) >= 0.8
    exact = [sources[0].read(_win(q))[1].mean() for q in s]
    assert np.mean(exact) > 0.85  # the coarse estimate is close to the truth
    assert all(q.seed >= 0 for q in s)


def _win(q):
    from rasterio.windows import Window

    return Window(q.col, q.row, q.width, q.height)


def test_random_deterministic_and_epoch_reshuffles(sources):
    a = list(RandomChipSampler(sources, 32, length=50, seed=11))
    b = list(RandomChipSampler(sources, 32, length=50, seed=11))
    assert a == b
    s = RandomChipSampler(sources, 32, length=50, seed=11)
    s.set_epoch(1)
    assert list(s) != a
    s.set_epoch(0)
    assert list(s) == a
    assert list(RandomChipSampler(sources, 32, length=50, seed=12)) != a


def test_explicit_ranks_get_disjoint_equal_shards(sources):
    full = list(RandomChipSampler(sources, 32, length=51, seed=5))
    shards = [
        list(RandomChipSampler(sources, 32, length=51, seed=5, rank=r, world_size=3))
        for r in range(3)
    ]
    assert [len(x) for x in shards] == [17, 17, 17]
    assert sorted(q for sh in shards for q in sh) == sorted(full)
    grid = GridChipSampler(sources, 64, 48)
    gshards = [list(GridChipSampler(sources, 64, 48, rank=r, world_size=2)) for r in range(2)]
    assert len(gshards[0]) == len(gshards[1]) == (len(grid.chips) + 1) // 2
    assert set(gshards[0]) | set(gshards[1]) == set(grid.chips)


def test_grid_covers_every_pixel_with_overlap(sources):
    g = GridChipSampler(sources, (64, 80), (48, 60))
    cover = [np.zeros((s.height, s.width), np.int32) for s in sources]
    for q in g:
        cover[q.source][max(q.row, 0) : q.row + q.height, max(q.col, 0) : q.col + q.width] += 1
        assert q.seed == -1
    for c, s in zip(cover, sources):
        assert c.min() >= 1, s.path
        if s.width > 80 and s.height > 64:
            assert c.max() >= 2  # overlapping strides
    starts = sorted({q.row for q in g if q.source == 0})
    assert starts[0] == 0 and starts[-1] == sources[0].height - 64
    assert all(b - a <= 48 for a, b in zip(starts, starts[1:]))


def test_grid_min_valid_and_shuffle(sources):
    all_chips = GridChipSampler(sources[:2], 32).chips
    kept = GridChipSampler(sources[:2], 32, min_valid=0.5).chips
    assert 0 < len(kept) < len(all_chips)
    g = GridChipSampler(sources[:2], 32, shuffle=True, seed=1)
    e0 = list(g)
    g.set_epoch(1)
    assert list(g) != e0 and sorted(list(g)) == sorted(e0)


def test_all_nodata_raises(shared_data, tmp_path):
    empty = open_source(
        fixtures.write_all_nodata(shared_data, tmp_path),
        "sentinel2_l1c",
        ["blue", "green", "red", "nir"],
    )
    with pytest.raises(NoValidDataError, match="no valid pixels"):
        RandomChipSampler([empty], 32)
    with pytest.raises(NoValidDataError):
        GridChipSampler([empty], 32, min_valid=0.1)


def test_validity_index_and_redraw(sources):
    v = ValidityIndex(sources[:1], 64)
    src = sources[0]
    assert v.chip_fraction(ChipQuery(0, -1000, -1000, 32, 32)) == 0.0
    assert v.chip_fraction(ChipQuery(0, src.height // 2, src.width // 2, 32, 32)) > 0.9
    q = ChipQuery(0, 0, 0, 48, 48, seed=99)  # the corner is collar
    r1 = redraw_chip(q, 0, (src.height, src.width), v.masks[0])
    assert r1 == redraw_chip(q, 0, (src.height, src.width), v.masks[0])
    assert r1 != redraw_chip(q, 1, (src.height, src.width), v.masks[0])
    fr = [
        src.read(_win(redraw_chip(q, a, (src.height, src.width), v.masks[0])))[1].mean()
        for a in range(10)
    ]
    assert np.mean(fr) > 0.6
