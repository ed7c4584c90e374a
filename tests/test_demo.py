"""`dinogeo demo` end to end on the real NC Landsat 7 sample (short time budgets)."""

import json
import sqlite3
import xml.etree.ElementTree as ET

import rasterio

from dinogeo.cli.main import main


def test_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    status = main(
        ["demo", "-o", str(out), "--pretrain-minutes", "0.15", "--fit-minutes", "0.15", "-q"]
    )
    assert status == 0
    report = capsys.readouterr().out
    assert "validation on the 1996 points" in report

    with (
        rasterio.open(out / "nc_landsat7_2000.tif") as scene,
        rasterio.open(out / "nc_landcover.tif") as pred,
    ):
        assert pred.crs == scene.crs
        assert pred.transform == scene.transform
        assert pred.dtypes[0] == "uint8"
        classes = set(int(v) for v in pred.read(1, out_shape=(64, 64)).ravel()) - {pred.nodata}
        assert classes and classes <= set(range(1, 8))

    metrics = json.loads((out / "metrics.json").read_text())
    for side in ("head", "per_pixel_linear"):
        assert 0.0 <= metrics[side]["miou"] <= 1.0
        assert metrics[side]["pixels"] > 500  # most of the 1000 points fall on valid pixels

    # the accuracy tables and the points layer QGIS users expect
    table = (out / "validation" / "class_accuracy.csv").read_text().splitlines()
    assert table[0].startswith("class_value,class_name") and len(table) == 8
    with sqlite3.connect(out / "validation" / "validation_points.gpkg") as db:
        n = db.execute("select count(*) from validation_points").fetchone()[0]
    assert n == metrics["head"]["pixels"]

    names = {el.get("label") for el in ET.parse(out / "nc_landcover.qml").iter("paletteEntry")}
    assert {"forest", "water", "developed"} <= {n.lower() for n in names if n}
    with sqlite3.connect(out / "nc_landcover.gpkg") as db:
        assert db.execute("select count(*) from layer_styles where useAsDefault").fetchone()[0] == 1
    assert (out / "pretrain_curves.png").stat().st_size > 1000
    assert (out / "nc_features_pca.png").stat().st_size > 1000
    assert (out / "backbone.safetensors").is_file()
