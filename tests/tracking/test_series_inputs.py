"""The three series layouts read the same values: dated files, and a zarr store from `dinogeo ingest`."""

from __future__ import annotations

import numpy as np
from rasterio.windows import Window

from dinogeo.data.ingest import ingest
from dinogeo.tracking import open_series
from tests.data.tracking.data import rufiji_files


def test_zarr_store_reads_like_the_files(tmp_path):
    files = rufiji_files()[:4]
    store = ingest(files, tmp_path / "rufiji.zarr", progress=False)
    from_zarr = open_series(store, sensor="sentinel2_sr_x1000")
    from_files = open_series(files, sensor="sentinel2_sr_x1000")
    assert from_zarr.dates == from_files.dates  # dated by the raster groups' names
    assert (from_zarr.width, from_zarr.height) == (169, 140)
    w = Window(-1, -1, 40, 30)
    a, b = from_zarr.read(w), from_files.read(w)
    np.testing.assert_allclose(a, b, equal_nan=True)
    assert 0.05 < np.isnan(a).mean() < 0.6  # the halo and the cloud-masked (0) pixels
    assert np.nanmax(a) < 1.5  # reflectance, scaled by 1e-3
