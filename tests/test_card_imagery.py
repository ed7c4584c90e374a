"""Imagery opened for a weight card (dinogeo.models.card_imagery) on real Sentinel-2 dates."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window

from dinogeo.data.imagery_spec import ImagerySpec
from dinogeo.data.sensors import load_sensor
from dinogeo.errors import BandMismatchError, RasterReadError, SensorError
from dinogeo.models.backbone import create_backbone
from dinogeo.models.card import WeightCard
from dinogeo.models.card_imagery import CardImage, apply_card_stats, resolve_sensor
from tests.data.card_imagery import data as fx

#: the test files hold a subset of the sensor's bands, named in file order
FILE_IMAGERY = ImagerySpec(bands=fx.FILE_BANDS)

CARD_BANDS = ["B08", "B04", "B03"]  # not the file's order: reads must reorder
MEAN, STD = [0.3, 0.1, 0.08], [0.12, 0.06, 0.05]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    backbone = create_backbone("vit_test_patch16_dinov3", in_chans=len(CARD_BANDS)).eval()
    card = WeightCard.from_backbone(
        backbone, band_names=CARD_BANDS, sensor="sentinel2_l2a", mean=MEAN, std=STD, scale=1e-3
    )
    return backbone, card


def _file(path, window=None):
    """Raw bands of the file in card order, and GDAL's nodata-0 validity."""
    with rasterio.open(path) as ds:
        raw = ds.read(window=window).astype(np.float64)
    valid = (raw != 0).any(axis=0)
    return raw[[fx.FILE_BANDS.index(b) for b in CARD_BANDS]], valid


def test_two_dates_read_in_card_order_and_normalisation(tiny, shared_data):
    backbone, card = tiny
    d1 = CardImage(shared_data / fx.DATE1, card, FILE_IMAGERY)
    d2 = CardImage(shared_data / fx.DATE2, card, FILE_IMAGERY)
    assert d1.band_names == CARD_BANDS and list(d1.sensor.band_names) == CARD_BANDS
    assert d1.same_grid(d2) and d2.aligned_to(d1) is d2
    whole = Window(0, 0, d1.width, d1.height)
    for image, path in ((d1, fx.DATE1), (d2, fx.DATE2)):
        raw, valid = _file(shared_data / path)
        data, ok = image.read(whole)
        np.testing.assert_array_equal(data, raw)
        np.testing.assert_array_equal(ok, valid)
        norm, ok = image.read_normalized(whole)
        # the card's scale (1e-3, not the sensor's 1e-4) and the card's mean/std, in card order
        want = (raw * 1e-3 - np.array(MEAN)[:, None, None]) / np.array(STD)[:, None, None]
        np.testing.assert_allclose(norm[:, valid], want[:, valid], rtol=1e-5, atol=1e-5)
        assert (norm[:, ~valid] == 0).all() and norm.dtype == np.float32
    assert 0.3 < d1.valid(whole).mean() < 0.7 and d2.valid(whole).all()  # MANIFEST: 0.51, 1.00
    # boundless: outside pixels are invalid
    _, ok = d2.read(Window(-8, -8, 32, 32))
    assert not ok[:8].any() and not ok[:, :8].any() and ok[8:, 8:].all()
    # the tiny backbone encodes a chip of each date
    chips = [im.read_normalized(Window(32, 32, 64, 64))[0] for im in (d1, d2)]
    with torch.no_grad():
        tokens = backbone.forward_features(torch.from_numpy(np.stack(chips)))
    assert tokens["x_norm_patchtokens"].shape == (2, 16, backbone.embed_dim)
    assert torch.isfinite(tokens["x_norm_patchtokens"]).all()


def test_file_holding_exactly_the_card_bands(shared_data):
    """A file with the card's band count and no band names is read in card order."""
    spec = load_sensor("sentinel2_l2a").select(fx.FILE_BANDS)
    card = WeightCard(
        arch="vit_test_patch16_dinov3", patch_size=16, embed_dim=64, band_names=fx.FILE_BANDS,
        sensor="sentinel2_l2a", mean=[b.mean for b in spec.bands], std=[b.std for b in spec.bands],
        scale=1e-4,
    )  # fmt: skip
    image = CardImage(shared_data / fx.DATE2, card)
    explicit = CardImage(shared_data / fx.DATE2, card, FILE_IMAGERY)
    w = Window(10, 20, 48, 40)
    for a, b in zip(image.read_normalized(w), explicit.read_normalized(w), strict=True):
        np.testing.assert_array_equal(a, b)


def test_second_date_on_a_shifted_grid_aligns_exactly(tiny, shared_data, tmp_path):
    _, card = tiny
    d1 = CardImage(shared_data / fx.DATE1, card, FILE_IMAGERY)
    moved = fx.write_shifted(shared_data / fx.DATE1, tmp_path / "shifted.tif")
    other = CardImage(moved, card, FILE_IMAGERY)
    assert not other.same_grid(d1)
    aligned = other.aligned_to(d1)
    assert aligned.same_grid(d1) and aligned.bounds == d1.bounds
    assert aligned.aligned_to(d1) is aligned
    whole = Window(0, 0, d1.width, d1.height)
    data, valid = aligned.read(whole)
    raw, raw_valid = _file(shared_data / fx.DATE1)
    keep = slice(0, d1.width - fx.CUT)
    # whole-pixel shift: bilinear resampling reproduces every pixel
    np.testing.assert_array_equal(valid[:, keep], raw_valid[:, keep])
    np.testing.assert_array_equal(data[:, :, keep], raw[:, :, keep])
    assert not valid[:, d1.width - fx.CUT :].any(), "outside the copy's footprint is invalid"
    # normalised reads match date 1's own, window by window (also boundless)
    for w in (whole, Window(-5, -3, 40, 30), Window(100, 90, 64, 64)):
        a, va = aligned.read_normalized(w)
        b, vb = d1.read_normalized(w)
        cols = slice(0, max(0, d1.width - fx.CUT - int(w.col_off)))
        np.testing.assert_array_equal(va[:, cols], vb[:, cols])
        np.testing.assert_array_equal(a[:, :, cols], b[:, :, cols])
    # a pickled copy (a DataLoader worker's) reopens its own handles and reads the same
    again = pickle.loads(pickle.dumps(aligned))
    for a, b in zip(again.read(whole), aligned.read(whole), strict=True):
        np.testing.assert_array_equal(a, b)


def test_second_date_in_another_crs_aligns_within_resampling_error(tiny, shared_data, tmp_path):
    _, card = tiny
    d2 = CardImage(shared_data / fx.DATE2, card, FILE_IMAGERY)
    moved = fx.write_reprojected(shared_data / fx.DATE2, tmp_path / "utm36s.tif")
    other = CardImage(moved, card, FILE_IMAGERY)
    assert other.crs != d2.crs and not other.same_grid(d2)
    aligned = other.aligned_to(d2)
    whole = Window(0, 0, d2.width, d2.height)
    a, va = aligned.read_normalized(whole)
    b, vb = d2.read_normalized(whole)
    assert a.shape == b.shape and va.mean() > 0.97  # only a border pixel ring may be lost
    both = va & vb
    for band, name in enumerate(CARD_BANDS):
        x, y = a[band][both], b[band][both]
        assert np.corrcoef(x, y)[0, 1] > 0.95, name
        # two bilinear resamplings blur, but less than a one-pixel misalignment would change it
        step = np.median(np.abs(np.diff(b[band], axis=1)))
        assert np.median(np.abs(x - y)) < 0.75 * step, name


def test_sensor_resolution_and_card_stats(tiny, shared_data):
    _, card = tiny
    spec = resolve_sensor(card)
    assert spec is not None and spec.name == "sentinel2_l2a" and spec.scale == 1e-3
    named = ImagerySpec(sensor="sentinel2_l2a")
    assert resolve_sensor(card, named).scale == 1e-4  # a named sensor's own scale
    scaled = ImagerySpec(sensor="sentinel2_l2a", scale=2.0, offset=-0.1)
    assert resolve_sensor(card, scaled).offset == -0.1
    other = WeightCard(**{**card.__dict__, "sensor": "my_drone"})
    assert resolve_sensor(other) is None  # the reader infers a generic sensor
    with pytest.raises(SensorError, match="my_drone"):
        resolve_sensor(card, ImagerySpec(sensor="my_drone"))
    stats = apply_card_stats(load_sensor("sentinel2_l2a"), card)
    assert [stats.bands[stats.index(b)].mean for b in CARD_BANDS] == MEAN
    with pytest.raises(SensorError, match="B08"):
        apply_card_stats(load_sensor("rgb_uint8"), card)


def test_errors_name_the_file_and_the_fix(tiny, shared_data):
    _, card = tiny
    path = shared_data / fx.DATE2
    with pytest.raises(
        BandMismatchError, match=r"name the file's 10 bands in order with bands=\["
    ) as err:
        CardImage(path, card)  # 10 unnamed bands of a 12-band sensor
    assert path.name in str(err.value)
    with pytest.raises(BandMismatchError, match="lacks") as err:
        without = ["B01", "B02", "B03", "B05", "B06", "B07", "B8A", "B09", "B11", "B12"]
        CardImage(path, card, ImagerySpec(bands=without))
    assert path.name in str(err.value) and "['B08', 'B04', 'B03']" in str(err.value)


def test_zarr_date_reads_the_same_and_refuses_to_warp(tiny, shared_data, tmp_path):
    from dinogeo.data.ingest import ingest

    _, card = tiny
    tif = shared_data / fx.DATE2
    store = ingest([tif], tmp_path / "a.zarr", scheduler="synchronous", progress=False)
    z = CardImage(store, card, FILE_IMAGERY)
    t = CardImage(tif, card, FILE_IMAGERY)
    assert z.same_grid(t)
    w = Window(-4, 30, 64, 48)
    for a, b in zip(z.read_normalized(w), t.read_normalized(w), strict=True):
        np.testing.assert_array_equal(a, b)
    moved = CardImage(fx.write_shifted(tif, tmp_path / "s.tif"), card, FILE_IMAGERY)
    assert moved.aligned_to(z).same_grid(t)  # a file warps onto a zarr date's grid
    with pytest.raises(RasterReadError, match="zarr raster .* cannot be resampled") as err:
        z.aligned_to(moved)
    assert "a.zarr" in str(err.value) and "same grid" in str(err.value)
