"""Prediction in 2-D blocks with halos equals the whole-raster pass, in memory bounded by the block."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

import dinogeo.inference.blocks as blocks_mod
from dinogeo.errors import ConfigError
from dinogeo.inference import load_model, predict_raster
from dinogeo.inference.blend import BandAccumulator
from dinogeo.inference.blocks import BlockGrid
from dinogeo.inference.encode import make_output_spec
from dinogeo.inference.inputs import open_for_card, window_reader
from dinogeo.inference.model import make_infer
from dinogeo.inference.stream import StreamSpec, stream_strips
from dinogeo.inference.tiling import TileGrid
from tests.data.inference import data as fx

TILE, OVERLAP, BATCH = 128, 32, 4


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return fx.write_bundle(tmp_path_factory.mktemp("bundle") / "lc.safetensors")


def _whole_raster_reference(model, path, spec):
    """The pre-block prediction: one strip as high as the raster, blended over the full width."""
    src = open_for_card(path, model.card)
    grid = TileGrid(src.height, src.width, TILE, OVERLAP, strip_rows=src.height)
    stream = StreamSpec(
        channels=spec.channels, bands=spec.bands, dtype=spec.dtype, fill=spec.nodata,
        margin=OVERLAP // 4, batch_size=BATCH, workers=0,
    )  # fmt: skip
    infer = make_infer(model, "cpu", spec.channels)
    ((_, out),) = stream_strips(
        grid, (0, 1), lambda: window_reader([src]), infer, spec.finish, stream
    )
    return out


@pytest.mark.parametrize("block", [200, 333])
def test_blocks_equal_the_whole_raster_pass_on_real_imagery(bundle, shared_data, tmp_path, block):
    """Blocks that do not divide the raster (791 x 718, nodata collar): bitwise the same bands."""
    path = shared_data / fx.RGB_BYTE
    model = load_model(bundle)
    spec = make_output_spec(model.task, probabilities=True, confidence=True)
    ref = _whole_raster_reference(model, path, spec)
    out = tmp_path / f"b{block}.tif"
    predict_raster(
        model, path, out, tile=TILE, overlap=OVERLAP, batch_size=BATCH, block=block,
        probabilities=True, confidence=True, progress=False, vectorize=False, workers=2,
    )  # fmt: skip
    with rasterio.open(out) as ds:
        got = ds.read()
        assert ds.count == len(spec.descriptions)
    assert got.shape == ref.shape
    assert (ref[0] != spec.nodata).mean() > 0.5, "the scene has valid pixels"
    assert len(np.unique(ref[0])) > 2, "the model predicts several classes"
    np.testing.assert_array_equal(got, ref)


def test_block_grid_covers_the_raster_once_and_halos_stay_small():
    grid = TileGrid(718, 791, TILE, OVERLAP)
    bgrid = BlockGrid(grid, 333)
    seen = np.zeros((718, 791), int)
    for b in bgrid.blocks:
        seen[b.row_off : b.row_off + b.height, b.col_off : b.col_off + b.width] += 1
        rows = grid.row_offsets[b.tile_rows[0]], grid.row_offsets[b.tile_rows[1]] + TILE
        cols = grid.col_offsets[b.tile_cols[0]], grid.col_offsets[b.tile_cols[1]] + TILE
        assert rows[0] <= b.row_off and b.row_off + b.height <= rows[1]
        assert cols[0] <= b.col_off and b.col_off + b.width <= cols[1]
        # at most one window of halo beyond what covers the block
        assert b.tile_rows[1] - b.tile_rows[0] + 1 <= -(-b.height // (TILE - OVERLAP)) + 2
    assert (seen == 1).all()
    assert [b.index for b in bgrid.blocks] == list(range(len(bgrid)))
    with pytest.raises(ConfigError, match="at least the tile"):
        BlockGrid(grid, TILE - 1)


def test_block_buffers_do_not_grow_with_the_raster_width(shared_data, tmp_path, monkeypatch):
    """The float accumulators are as wide as a block and its halo, whatever the raster width."""
    widths = []

    class Spy(BandAccumulator):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            widths.append(self.width)

    monkeypatch.setattr(blocks_mod, "BandAccumulator", Spy)
    model = fx.tiny_model("land_cover")
    predict_raster(
        model, shared_data / fx.RGB_BYTE, tmp_path / "o.tif", tile=TILE, overlap=OVERLAP,
        block=256, progress=False, vectorize=False,
    )  # fmt: skip
    assert widths and max(widths) <= 256 + 2 * TILE


def test_read_cache_follows_the_storage_blocks_not_the_width(shared_data):
    """The GDAL cache while predicting: twice the tiles a row of windows reads, whatever the width."""
    from dinogeo.data import open_source

    cog = open_source(shared_data / "aerial-rgb-korea-rasterio/cogeo.tif")  # 512 x 512 tiles
    assert cog.storage_block == (512, 512)
    # one 512-px row of windows over a 2048 block + one tile of halo each side: 2 x 7 tiles of 512^2
    expected = 2 * (2 * 512) * min(7 * 512, cog.width) * cog.count * np.dtype(cog.dtype).itemsize
    assert blocks_mod.read_cache_bytes([cog], tile=512, block=2048) == max(
        blocks_mod.MIN_READ_CACHE, expected
    )

    class Wide:
        storage_block = (512, 512)
        height, count, dtype = 2048, 10, np.dtype("uint16")

        def __init__(self, width: int) -> None:
            self.width = width

    narrow, wide = (blocks_mod.read_cache_bytes([Wide(w)], 512, 2048) for w in (4096, 65536))
    assert narrow == wide == 2 * 1024 * 3584 * 10 * 2  # ~70 MiB for 10-band uint16
    unknown = type("U", (Wide,), {"storage_block": None})(4096)
    assert blocks_mod.read_cache_bytes([unknown], 512, 2048) == blocks_mod.UNKNOWN_BLOCK_CACHE
