"""Unit tests of the maths: window grids, blend weights, the strip accumulator, sharding, encoding."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio.windows import Window

import dinogeo.inference.stream as stream_mod
from dinogeo.errors import ConfigError
from dinogeo.inference.blend import BandAccumulator, blend_weights, ramp_1d
from dinogeo.inference.encode import make_output_spec
from dinogeo.inference.stream import StreamSpec, stream_strips
from dinogeo.inference.tiling import TileGrid, shard_strips, tile_offsets
from dinogeo.models.task_card import TaskCard, load_task_card


@pytest.mark.parametrize(
    ("size", "tile", "overlap"), [(100, 32, 8), (64, 64, 16), (20, 32, 8), (1000, 256, 64)]
)
def test_tile_offsets_cover_the_axis(size, tile, overlap):
    offs = tile_offsets(size, tile, overlap)
    covered = np.zeros(max(size, tile), bool)
    for o in offs:
        covered[o : o + tile] = True
    assert covered[:size].all()
    assert offs[0] == 0
    assert offs[-1] < size <= offs[-1] + tile
    assert (np.diff(offs) == tile - overlap).all(), "neighbours overlap by exactly `overlap`"


def test_tile_offsets_reject_bad_overlap():
    with pytest.raises(ConfigError):
        tile_offsets(100, 32, 32)


def _coverage(height, width, tile, overlap, margin, valid=None):
    """Sum of blend weights (times valid) over the raster."""
    grid = TileGrid(height, width, tile, overlap)
    total = np.zeros((height + tile, width + tile))
    for w in grid.windows():
        wt = blend_weights(tile, overlap, margin, w.edges).astype(np.float64)
        if valid is not None:
            v = np.zeros((tile, tile))
            sub = valid[w.row_off : w.row_off + tile, w.col_off : w.col_off + tile]
            v[: sub.shape[0], : sub.shape[1]] = sub
            wt = wt * v
        total[w.row_off : w.row_off + tile, w.col_off : w.col_off + tile] += wt
    return total[:height, :width]


@pytest.mark.parametrize(
    ("h", "w", "tile", "overlap", "margin"),
    [(300, 421, 64, 32, 8), (97, 200, 48, 16, 0), (64, 64, 64, 16, 4)],
)
def test_blend_weights_are_positive_everywhere_and_normalise_to_one(h, w, tile, overlap, margin):
    total = _coverage(h, w, tile, overlap, margin)
    assert (total > 0).all(), "every pixel must get a positive summed weight"
    # normalised weights of the tiles covering a pixel sum to one
    grid = TileGrid(h, w, tile, overlap)
    norm_sum = np.zeros((h + tile, w + tile))
    for win in grid.windows():
        wt = blend_weights(tile, overlap, margin, win.edges)
        sl = (slice(win.row_off, win.row_off + tile), slice(win.col_off, win.col_off + tile))
        norm_sum[sl] += wt / np.pad(total, ((0, tile), (0, tile)), constant_values=1)[sl]
    np.testing.assert_allclose(norm_sum[:h, :w], 1.0, rtol=1e-6)


def test_blend_weights_zero_over_nodata_and_ramp_is_smooth():
    valid = np.ones((200, 200), bool)
    valid[50:80, 60:150] = False
    total = _coverage(200, 200, 64, 32, 8, valid)
    assert (total[~valid] == 0).all() and (total[valid] > 0).all()
    r = ramp_1d(128, 32, 0, False, False)
    assert (r > 0).all() and r.max() == 1.0
    assert np.abs(np.diff(r)).max() < 0.1, "the ramp has no jumps"
    edge = ramp_1d(64, 32, 0, True, True)
    assert (edge == 1).all(), "raster-border edges keep full weight"


def test_band_accumulator_hands_out_final_blocks():
    acc = BandAccumulator(2, 10, 4, 2)
    assert acc.nbytes == 3 * (2 * 2 * 10 + 4 * 4) * 4
    acc.start_row(last=False)
    ones = np.ones((2, 4, 4), np.float32)
    sums, weights, c0 = acc.add(ones, np.full((4, 4), 0.5, np.float32), 0, False)
    assert (c0, sums.shape, weights.shape) == (0, (2, 2, 2), (2, 2))
    np.testing.assert_allclose(weights, 0.5)
    sums, weights, c0 = acc.add(ones, np.ones((4, 4), np.float32), 2, False)
    np.testing.assert_allclose(weights, 1.5), "the right overlap of the previous window is kept"
    with pytest.raises(ConfigError):
        acc.add(ones, np.ones((4, 4), np.float32), 8, False)
    with pytest.raises(ConfigError):
        BandAccumulator(1, 10, 4, 3)


def _synthetic_reader(img, valid):
    h, w = valid.shape

    def factory():
        def read(win: Window):
            r0, c0, hh, ww = int(win.row_off), int(win.col_off), int(win.height), int(win.width)
            out = np.zeros((img.shape[0], hh, ww), np.float32)
            v = np.zeros((hh, ww), bool)
            rr, cc = slice(max(r0, 0), min(r0 + hh, h)), slice(max(c0, 0), min(c0 + ww, w))
            out[:, rr.start - r0 : rr.stop - r0, cc.start - c0 : cc.stop - c0] = img[:, rr, cc]
            v[rr.start - r0 : rr.stop - r0, cc.start - c0 : cc.stop - c0] = valid[rr, cc]
            out[:, ~v] = 0
            return (out,), v

        return read

    return factory


def _mean_finish(sums, weights):
    out = np.full(sums.shape, np.nan, np.float32)
    ok = weights > 0
    out[:, ok] = sums[:, ok] / weights[ok]
    return out


def test_accumulator_memory_depends_on_width_not_raster_height(monkeypatch):
    """The only per-raster float buffers are the overlap rows (full width) and one tile."""
    seen = []

    class Spy(BandAccumulator):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            seen.append(self)

    monkeypatch.setattr(stream_mod, "BandAccumulator", Spy)
    spec = StreamSpec(channels=2, bands=2, dtype="float32", fill=np.nan, batch_size=4, workers=0)
    sizes = {}
    for height in (128, 1024):
        img = np.random.default_rng(0).normal(size=(2, height, 96)).astype(np.float32)
        grid = TileGrid(height, 96, 32, 8, strip_rows=32)
        strips = list(
            stream_strips(grid, (0, grid.n_strips), _synthetic_reader(img, np.ones((height, 96), bool)),
                          lambda x: x[0], _mean_finish, spec)
        )  # fmt: skip
        assert max(a.shape[1] for _, a in strips) == 32
        sizes[height] = seen[-1].nbytes
    assert sizes[128] == sizes[1024] == (2 + 1) * (2 * 8 * 96 + 32 * 32) * 4


def test_identity_model_reproduces_the_input_and_resume_ranges_are_bitwise_equal():
    rng = np.random.default_rng(1)
    img = rng.normal(size=(3, 150, 170)).astype(np.float32)
    valid = np.ones((150, 170), bool)
    valid[:10, :25] = False
    spec = StreamSpec(
        channels=3, bands=3, dtype="float32", fill=np.nan, margin=4, batch_size=3, workers=2
    )
    grid = TileGrid(150, 170, 48, 16, strip_rows=32)
    full = dict(
        stream_strips(
            grid,
            (0, grid.n_strips),
            _synthetic_reader(img, valid),
            lambda x: x[0] * 2,
            _mean_finish,
            spec,
        )
    )
    out = np.concatenate([full[s] for s in range(grid.n_strips)], axis=1)
    np.testing.assert_allclose(out[:, valid], 2 * img[:, valid], rtol=1e-6)
    assert np.isnan(out[:, ~valid]).all()
    part = dict(
        stream_strips(
            grid,
            (2, grid.n_strips),
            _synthetic_reader(img, valid),
            lambda x: x[0] * 2,
            _mean_finish,
            spec,
        )
    )
    assert sorted(part) == list(range(2, grid.n_strips))
    for s, a in part.items():
        assert np.array_equal(a, full[s], equal_nan=True)


@pytest.mark.parametrize(("n", "world"), [(10, 3), (2, 4), (7, 1), (0, 2)])
def test_shard_strips_cover_each_strip_once(n, world):
    seen = []
    for rank in range(world):
        a, b = shard_strips(n, world, rank)
        seen += list(range(a, b))
    assert seen == list(range(n))


def test_encode_classes_probabilities_and_scaled_heights():
    task = load_task_card("change")  # nodata 255, classes 0/1
    spec = make_output_spec(task, probabilities=True, confidence=True)
    sums = np.array([[[0.2, 0.0]], [[0.8, 0.0]]], np.float32)
    weights = np.array([[1.0, 0.0]], np.float32)
    out = spec.finish(sums, weights)
    assert out.dtype == np.uint8 and out.shape == (4, 1, 2)
    assert out[:, 0, 1].tolist() == [255] * 4
    assert out[0, 0, 0] == 1
    probs = out[1:3, 0, 0] * np.array(spec.scales[1:3]) + np.array(spec.offsets[1:3])
    np.testing.assert_allclose(probs, [0.2, 0.8], atol=1 / 254)
    height = TaskCard.from_dict(
        {"name": "h", "kind": "regression", "target": "height", "units": "m", "dtype": "uint16",
         "nodata": 65535, "valid_range": [0, 50]}
    )  # fmt: skip
    hs = make_output_spec(height)
    o = hs.finish(np.array([[[12.34, 80.0]]], np.float32), np.ones((1, 2), np.float32))
    decoded = o[0, 0] * hs.scales[0] + hs.offsets[0]
    np.testing.assert_allclose(decoded, [12.34, 50.0], atol=1e-3)
    with pytest.raises(ConfigError):
        make_output_spec(load_task_card("canopy_height"), probabilities=True)
