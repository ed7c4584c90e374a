"""Tracking the real Myanmar Sentinel-1 stack against its 150 dated reference points."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import rasterio

from dinogeo.tracking import open_series


def test_series_from_multiband_and_csv(myanmar):
    s = open_series(myanmar["stack"], dates_csv=myanmar["dates"])
    assert len(s) == 85 and s.sensor.name == "sentinel1_grd_db100"
    assert str(s.dates[0]) == "2014-10-12" and str(s.dates[-1]) == "2018-12-26"
    assert s.layers[1].bands == (3, 4)  # band 2k-1 = VV, 2k = VH of date k
    from rasterio.windows import Window

    x = s.read(Window(-1, -1, 4, 4))  # a halo outside the grid reads as invalid
    assert x.shape == (85, 2, 4, 4) and np.isnan(x[:, :, 0, :]).all()
    vh = x[:, 1, 1:, 1:]
    assert -25 < np.nanmean(vh) < -8  # dB, scaled from dB x 100
    # the band descriptions name the dates too: no CSV needed
    s2 = open_series(myanmar["stack"])
    assert s2.dates == s.dates and s2.layers[5].bands == s.layers[5].bands


def test_products(myanmar_run):
    out = myanmar_run.output
    for name in ("loss_date.tif", "confidence.tif", "magnitude.tif", "alerts.gpkg", "loss_by_period.csv",
                 "loss_by_period.png", "loss_date.qml", "confidence.qml", "metrics.json", "accuracy.md"):
        assert (out / name).is_file(), name
    assert not out.with_name(out.name + ".partial").exists()
    with rasterio.open(out / "loss_date.tif") as ds:
        loss = ds.read(1)
        assert ds.dtypes[0] == "int32" and ds.crs.to_epsg() == 32646
    with rasterio.open(out / "confidence.tif") as ds:
        conf = ds.read(1)
        assert ds.dtypes[0] == "uint8" and ds.nodata == 255
    assert set(np.unique(conf)) <= {0, 1, 2, 255}
    alerted = loss > 0
    assert (alerted == np.isin(conf, [1, 2])).all()
    assert loss[alerted].min() >= 20160101 and loss.max() <= 20181226
    import geopandas as gpd

    alerts = gpd.read_file(out / "alerts.gpkg", layer="alerts")
    assert len(alerts) == myanmar_run.alerts > 0
    assert set(alerts.confidence) <= {"low", "high"}
    assert (alerts.first_date <= alerts.last_date).all()
    assert alerts.lat.between(19.3, 19.45).all() and alerts.lon.between(95.9, 96.0).all()
    # every alert pixel is in a polygon: 30 m pixels are 0.09 ha (UTM is near equal-area here)
    assert abs(alerts.area_ha.sum() - alerted.sum() * 0.09) / (alerted.sum() * 0.09) < 0.01
    styles = sqlite3.connect(out / "alerts.gpkg").execute("SELECT f_table_name FROM layer_styles").fetchall()
    assert styles == [("alerts",)]


def test_accuracy_against_nrt(myanmar_run):
    m = json.loads((myanmar_run.output / "metrics.json").read_text())
    methods = m["methods"]
    assert m["points"] == 150 and m["disturbed"] == 75
    for mon in ("CCDC", "EWMA", "CuSum", "MoSum"):
        for idx in ("VH", "VV/VH"):
            assert f"nrt {mon} ({idx})" in methods
    for name, r in methods.items():
        c = r["confusion"]
        assert c["tp"] + c["fn"] == 75 and c["fp"] + c["tn"] == 75, name
    # EWMA with nrt defaults flags every point on this stack (the trivial F1 of 2/3)
    assert methods["nrt EWMA (VH)"]["confusion"]["fp"] == 75
    crit = m["done_criterion"]
    dino = methods["dinogeo (cross-validated)"]
    best = methods[crit["best_nrt"]]
    assert dino["f1"] >= best["f1"] + 0.05, (dino["f1"], crit)
    assert dino["lag_days"]["median"] <= best["lag_days"]["median"]
    assert crit["met"] is True
    assert len(m["calibration"]["fold_thresholds"]) == 5
    import pandas as pd

    table = pd.read_csv(myanmar_run.output / "reference_points.csv", keep_default_na=False)
    assert len(table) == 150 and table.disturbed.sum() == 75
    hits = (table["nrt MoSum (VH) alert date"] != "") & table.disturbed
    assert hits.sum() == methods["nrt MoSum (VH)"]["confusion"]["tp"]
