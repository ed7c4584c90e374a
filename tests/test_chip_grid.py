"""``chip_align: auto``: chips snapped to each real file's storage tiles, any offset for strips."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from dinogeo.data.chip_grid import ChipGrid, chip_grids, describe_grids, parse_chip_align
from dinogeo.data.index import build_index, load_index, write_index
from dinogeo.data.index_sources import open_index_sources
from dinogeo.data.ingest import ingest
from dinogeo.data.opener import open_source
from dinogeo.data.readers import RasterSource
from dinogeo.data.samplers import RandomChipSampler
from dinogeo.data.zarr_source import open_zarr_store
from dinogeo.errors import ConfigError
from dinogeo.ssl.datamodule import SSLDataModule

TILED = "landsat8-3band-quebec-riotiler/mosaic_cog1.tif"  # 779 x 790, 256-px tiles
TILED_512 = "aerial-rgb-korea-rasterio/cogeo.tif"  # 1024 x 1024, 512-px tiles
STRIPED = "sentinel2-l1c-virginia-sattestdata/S2_18SVG_20160112_10m_B02-B03-B04-B08_crop.tif"
BAHAMAS = "landsat7-rgb-bahamas-rasterio/RGB.byte.tif"  # 3-row strips
RUFIJI = "sentinel2-timeseries-rufiji-rsgislib/SEN2_20160710_T37MEM_20m_10band.tif"


def _queries(sources, grids, size, n=60):
    sampler = RandomChipSampler(sources, size, n, min_valid=0.0, seed=3, align=grids)
    return list(sampler)


def test_auto_resolves_to_the_tiles_of_a_cog_and_to_one_for_a_striped_file(shared_data):
    sources = [open_source(shared_data / p) for p in (TILED, TILED_512, STRIPED)]
    assert [s.storage_block for s in sources] == [(256, 256), (512, 512), (2, 512)]
    grids = chip_grids(sources, "auto")
    assert grids[0] == ChipGrid(256, 256, snap=True, reason="tiled 256x256")
    assert grids[1] == ChipGrid(512, 512, snap=True, reason="tiled 512x512")
    assert (grids[2].rows, grids[2].cols, grids[2].snap) == (1, 1, False)
    line = describe_grids(grids, sources, 256)
    assert line.startswith("chip_align auto (256-px chips): ")
    assert "tiled 256x256, e.g. mosaic_cog1.tif: chips snapped to the tiles" in line
    assert "striped (2-row strips), e.g. S2_18SVG" in line and "chips at any pixel offset" in line
    # a number keeps its meaning for every file
    assert chip_grids(sources, 64) == [ChipGrid(64, 64, reason="chip_align 64")] * 3


def test_snapped_chips_decode_the_fewest_tiles_and_reach_every_offset(shared_data):
    src = open_source(shared_data / TILED)
    grids = chip_grids([src], "auto")
    for size, span in ((256, 1), (96, 1), (448, 2), (300, 2)):
        queries = _queries([src], grids, size, n=200)
        for q in queries:
            for start in (q.row, q.col):
                assert start >= 0 and start + size <= 790
                tiles = (start + size - 1) // 256 - start // 256 + 1
                assert tiles == span, (size, start)
        starts = {q.row % 256 for q in queries} | {q.col % 256 for q in queries}
        if size % 256:
            assert len(starts) > 20  # chips still move inside their tiles
        else:
            assert starts == {0}
    # chips of a whole number of tiles draw exactly as chip_align: 256
    assert _queries([src], grids, 256) == _queries([src], 256, 256)


def test_striped_file_draws_as_any_offset(shared_data):
    src = open_source(shared_data / STRIPED)
    assert _queries([src], chip_grids([src], "auto"), 96) == _queries([src], 1, 96)


def test_index_rows_carry_the_block_and_old_indexes_fall_back(shared_data, tmp_path):
    out = tmp_path / "index.parquet"
    write_index(build_index([shared_data / TILED, shared_data / STRIPED], progress=False), out)
    frame = load_index(out)
    assert list(frame["block_height"]) == [256, 2] and list(frame["block_width"]) == [256, 512]
    sources = open_index_sources(frame)  # built from the rows, no file opened
    assert [s.storage_block for s in sources] == [(256, 256), (2, 512)]
    old = frame.drop(columns=["block_height", "block_width"])
    old_path = tmp_path / "old.parquet"
    old.to_parquet(old_path)
    grids = chip_grids(open_index_sources(load_index(old_path)), "auto")
    assert [g.reason for g in grids] == ["storage grid unknown"] * 2
    assert not any(g.snap for g in grids)


def test_warped_source_has_no_storage_grid(shared_data):
    src = RasterSource(shared_data / TILED, target_crs="EPSG:4326")
    assert src.warped and src.storage_block is None
    assert chip_grids([src], "auto")[0].reason == "warped"


def test_zarr_chunks_are_the_grid(shared_data, tmp_path):
    store = ingest(
        [str(shared_data / RUFIJI)],
        tmp_path / "s.zarr",
        chunk=64,
        scheduler="synchronous",
        progress=False,
    )
    (src,) = open_zarr_store(store)
    assert src.storage_block == (64, 64)
    assert chip_grids([src], "auto")[0] == ChipGrid(64, 64, snap=True, reason="tiled 64x64")
    frame = build_index([store], progress=False)
    assert (int(frame["block_height"][0]), int(frame["block_width"][0])) == (64, 64)
    queries = _queries([src], chip_grids([src], "auto"), 64)
    assert all(q.row % 64 == 0 and q.col % 64 == 0 for q in queries)


def test_datamodule_defaults_to_auto_and_says_so(shared_data, caplog):
    dm = SSLDataModule(
        sources=[str(shared_data / TILED_512), str(shared_data / BAHAMAS)],
        sensor="rgb_uint8",
        batch_size=4,
        num_workers=0,
        samples_per_epoch=40,
        global_size=32,
        local_size=16,
        n_local=2,
        chip_size=64,
        patch_size=16,
    )
    assert dm.chip_align == "auto"
    dm.setup("fit")
    with caplog.at_level(logging.INFO):
        loader = dm.train_dataloader()
    assert "chip_align auto (64-px chips): 1 tiled 512x512, e.g. cogeo.tif" in caplog.text
    assert "1 striped (3-row strips), e.g. RGB.byte.tif: chips at any pixel offset" in caplog.text
    grids = loader.sampler.base.grids
    assert [g.snap for g in grids] == [True, False]
    tiled = [q for _, _, q in loader.sampler if q.source == 0]
    assert tiled and all(q.row // 512 == (q.row + 63) // 512 for q in tiled)
    assert all(q.col // 512 == (q.col + 63) // 512 for q in tiled)
    batch = dm.on_after_batch_transfer(next(iter(loader)), 0)
    assert batch["global_crops"].shape == (8, 3, 32, 32)


@pytest.mark.parametrize("bad", [0, -256, 2.5, True, "tiles", None])
def test_bad_chip_align_is_refused(bad):
    with pytest.raises(ConfigError, match="chip_align.*'auto'"):
        parse_chip_align(bad)


def test_snap_offsets_are_uniform_inside_a_tile():
    grid = ChipGrid(256, 256, snap=True)
    rng = np.random.default_rng(0)
    offsets = pd.Series([grid.position(rng, (4096, 4096), (64, 64))[0] % 256 for _ in range(4000)])
    assert offsets.max() == 192 and offsets.min() == 0
    assert offsets.between(0, 96).mean() == pytest.approx(97 / 193, abs=0.05)
