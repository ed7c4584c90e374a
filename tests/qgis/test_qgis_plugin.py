"""The dinogeo Processing plugin in real QGIS 3.22 (qgis_process and QGIS's own Python).

Everything runs on real imagery: the North Carolina Landsat 7 scene and its 1996 land-cover
polygons (../shared/data). The head is trained by the plugin's fit algorithm itself.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pyogrio
import pytest

from tests.qgis.conftest import NC_IMAGE, NC_POINTS, NC_POLYGONS, PLUGIN_PATH

pytestmark = [pytest.mark.qgis, pytest.mark.slow]

ALGORITHMS = {"predict", "embed", "fit", "validate", "track", "adapt"}
MYANMAR = "sentinel1-disturbance-myanmar-ddl8s1ts"
NC_CLASSES = ["agriculture", "developed", "forest", "herbaceous", "sediment", "shrubland", "water"]


def test_provider_loads_and_lists_its_algorithms(qgis):
    plugins = qgis.process("plugins").stdout
    assert re.search(r"^\*\s+dinogeo_processing$", plugins, re.M), plugins
    listed = qgis.process("list").stdout
    names = set(re.findall(r"^\s*dinogeo:(\w+)\t", listed, re.M))
    assert ALGORITHMS <= names, listed
    helptext = qgis.process("help", "dinogeo:fit").stdout
    for param in ("INPUT", "LABELS", "FIELD", "BACKBONE", "VAL_LABELS", "STEPS", "OUTPUT"):
        assert f"{param}:" in helptext


def test_fit_trains_a_head_with_the_layer_classes_and_reports_progress(nc_bundle):
    results = nc_bundle["results"]
    assert Path(results["OUTPUT"]).stat().st_size > 0
    card = json.loads(Path(results["TASK_CARD"]).read_text())
    assert [c["name"] for c in card["classes"]] == NC_CLASSES
    assert [c["value"] for c in card["classes"]] == list(range(1, 8))
    from dinogeo.models.bundle import load_bundle

    bundle = load_bundle(results["OUTPUT"])
    assert bundle.task.class_names == NC_CLASSES
    assert bundle.card.band_names == ["B1", "B2", "B3", "B4", "B5", "B7"]


def test_predict_from_qgis_loads_styled_into_the_project(qgis, nc_bundle, shared_data, tmp_path):
    output = tmp_path / "nc_landcover.tif"
    params = {
        "INPUT": str(shared_data / NC_IMAGE),
        "MODEL": nc_bundle["results"]["OUTPUT"],
        "TILE": 256,
        "OVERLAP": 32,
        "OUTPUT": str(output),
    }
    ran = qgis.python("run", "dinogeo:predict", json.dumps(params))
    assert ran["error"] is None, ran
    polygons = tmp_path / "nc_landcover.gpkg"
    assert ran["results"] == {"OUTPUT": str(output), "OUTPUT_POLYGONS": str(polygons)}
    # progress reached QGIS: the bar moved to 100 % and the text said what ran
    assert ran["progress"] and max(ran["progress"]) == pytest.approx(100.0)
    assert any(t.startswith("predict ") and "tile" in t for t in ran["texts"]), ran["texts"]
    assert str(polygons) in ran["layers_to_load"]
    # loaded into the project as the dialog loads them, with their default styles
    loaded = ran["loaded"]
    assert loaded[str(output)]["renderer"] == "paletted"
    assert loaded[str(output)]["classes"] == NC_CLASSES
    assert loaded[str(polygons)]["renderer"] == "categorizedSymbol"
    # what a QGIS user sees: a paletted raster with the class names, categorised polygons
    seen = qgis.python("layers", str(output), str(polygons))
    assert seen["raster_valid"] and seen["raster_renderer"] == "paletted"
    card = json.loads(Path(nc_bundle["results"]["TASK_CARD"]).read_text())
    assert [(c["value"], c["label"], c["color"]) for c in seen["raster_classes"]] == [
        (c["value"], c["name"], c["color"]) for c in card["classes"]
    ]
    assert seen["vector_valid"] and seen["vector_features"] > 0
    assert seen["vector_renderer"] == "categorizedSymbol"
    assert set(seen["vector_categories"]) == set(NC_CLASSES)
    assert {"class", "class_name", "area_ha"} <= set(seen["vector_fields"])


def test_model3_chains_predict_into_zonal_statistics(qgis, nc_bundle, shared_data, tmp_path):
    model = PLUGIN_PATH / "dinogeo_processing" / "models" / "landcover_per_zone.model3"
    out = tmp_path / "zones.gpkg"
    qgis.process(
        "run",
        str(model),
        "--",
        f"image={shared_data / NC_IMAGE}",
        f"model={nc_bundle['results']['OUTPUT']}",
        f"zones={shared_data / NC_POLYGONS}",
        f"zonal:zones_landcover={out}",
    )
    zones = pyogrio.read_dataframe(out)
    assert len(zones) == 34
    # two polygons cover no pixel centre of the scene, three lie where the scene's band 7 is
    # missing (pixels missing a band are not predicted)
    counted = zones[zones["lc_count"] > 0]
    assert len(counted) >= 29
    assert set(counted["lc_majority"].astype(int)) <= set(range(1, 8))


@pytest.mark.parametrize("fmt", ["gpkg", "shp", "geojson", "csv"])
def test_labels_exported_by_qgis_train_a_head(qgis, tiny_backbone, shared_data, tmp_path, fmt):
    paths = qgis.python("write-labels", str(shared_data / NC_POLYGONS), str(tmp_path))
    source = paths[fmt]
    if fmt == "csv":  # as QGIS's "Add Delimited Text Layer" opens a CSV with a WKT column
        source = f"delimitedtext://file://{source}?type=csv&wktField=WKT&crs=EPSG:3358"
    params = {
        "INPUT": str(shared_data / NC_IMAGE),
        "LABELS": source,
        "FIELD": "label",
        "BACKBONE": str(tiny_backbone),
        "STEPS": 1,
        "CHIP_SIZE": 32,
        "BATCH_SIZE": 2,
        "OUTPUT": str(tmp_path / f"from_{fmt}.safetensors"),
    }
    ran = qgis.python("run", "dinogeo:fit", json.dumps(params))
    assert ran["error"] is None, ran
    assert Path(ran["results"]["OUTPUT"]).stat().st_size > 0
    card = json.loads(Path(ran["results"]["TASK_CARD"]).read_text())
    assert [c["name"] for c in card["classes"]] == NC_CLASSES


def test_fit_with_training_and_validation_layers_of_one_geopackage(
    qgis, tiny_backbone, shared_data, tmp_path
):
    sources = qgis.python(
        "write-two-layers",
        str(shared_data / NC_POLYGONS),
        str(shared_data / NC_POINTS),
        str(tmp_path / "labels.gpkg"),
    )
    tables = pyogrio.list_layers(tmp_path / "labels.gpkg")[:, 0].tolist()
    assert {"training", "validation", "layer_styles"} <= set(tables)
    params = {
        "INPUT": str(shared_data / NC_IMAGE),
        "LABELS": sources["training"],
        "VAL_LABELS": sources["validation"],
        "FIELD": "label",
        "BACKBONE": str(tiny_backbone),
        "STEPS": 1,
        "CHIP_SIZE": 32,
        "BATCH_SIZE": 2,
        "OUTPUT": str(tmp_path / "two_layers.safetensors"),
    }
    ran = qgis.python("run", "dinogeo:fit", json.dumps(params))
    assert ran["error"] is None, ran
    from dinogeo.models.bundle import load_bundle

    data = load_bundle(ran["results"]["OUTPUT"]).training_config["data"]
    assert data["label_layer"] == "training" and data["val_label_layer"] == "validation"
    assert data["val_chips"] > 0


def test_validate_from_qgis_writes_the_accuracy_tables_and_points(
    qgis, nc_bundle, shared_data, tmp_path
):
    params = {
        "MODEL": nc_bundle["results"]["OUTPUT"],
        "INPUT": str(shared_data / NC_IMAGE),
        "LABELS": str(shared_data / NC_POINTS),
        "FIELD": "label",
        "CHIP_SIZE": 256,
        "OUTPUT": str(tmp_path / "report"),
    }
    ran = qgis.python("run", "dinogeo:validate", json.dumps(params))
    assert ran["error"] is None, ran
    results = ran["results"]
    metrics = json.loads(Path(results["METRICS"]).read_text())["metrics"]
    assert results["ACCURACY"] == pytest.approx(metrics["accuracy"])
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["pixels"] > 500
    for key in ("POINTS", "CLASS_ACCURACY", "ERROR_MATRIX"):
        assert results[key] in ran["layers_to_load"], key
    table = Path(results["CLASS_ACCURACY"]).read_text()
    assert all(name in table for name in NC_CLASSES)
    points = pyogrio.read_dataframe(results["POINTS"], layer="validation_points")
    assert len(points) == metrics["pixels"]


def test_cancel_in_qgis_stops_dinogeo(qgis, tiny_backbone, shared_data, tmp_path):
    params = {
        "INPUT": str(shared_data / NC_IMAGE),
        "LABELS": str(shared_data / NC_POLYGONS),
        "FIELD": "label",
        "BACKBONE": str(tiny_backbone),
        "STEPS": 100000,
        "CHIP_SIZE": 32,
        "BATCH_SIZE": 2,
        "OUTPUT": str(tmp_path / "long.safetensors"),
    }
    ran = qgis.python("run", "dinogeo:fit", json.dumps(params), "2")  # 2 s into training
    assert ran["error"] is not None and "cancelled" in ran["error"]
    assert ran["seconds"] < 120
    assert not (tmp_path / "long.safetensors").exists()
    alive = subprocess.run(["pgrep", "-f", str(tmp_path / "long_fit")], capture_output=True)
    assert alive.returncode == 1, f"dinogeo still runs after cancel: {alive.stdout!r}"
    assert any(t.startswith("fit step") for t in ran["texts"]), ran["texts"]


def test_track_from_qgis_writes_styled_alerts(qgis, shared_data, tmp_path):
    series = shared_data / MYANMAR
    answer = qgis.run_json(
        "dinogeo:track",
        {
            "INPUT": series / "S1_VV_VH_dBx100_85dates_2014-2018.tif",
            "DATES_CSV": series / "S1_dates.csv",
            "MONITOR_START": "2016-01-01",
            "REFERENCE": series / "reference_points_dev.geojson",
            "OUTPUT": tmp_path / "track",
        },
    )
    results = answer["results"]
    assert results["ALERT_COUNT"] > 0
    seen = qgis.python("layers", results["CONFIDENCE"], results["ALERTS"])
    assert seen["raster_renderer"] == "paletted"
    assert [c["label"] for c in seen["raster_classes"]] == ["low", "high"]
    assert seen["vector_features"] == results["ALERT_COUNT"]
    assert {"first_date", "confidence", "area_ha"} <= set(seen["vector_fields"])
    table = Path(results["ACCURACY"]).read_text().splitlines()
    assert table[0].startswith("method,UA,PA,F1") and len(table) > 1


def test_embed_and_adapt_from_qgis(qgis, tiny_backbone, shared_data, tmp_path):
    params = {
        "INPUT": str(shared_data / NC_IMAGE),
        "BACKBONE": str(tiny_backbone),
        "TILE": 256,
        "OVERLAP": 32,
        "OUTPUT": str(tmp_path / "features.tif"),
    }
    ran = qgis.python("run", "dinogeo:embed", json.dumps(params))
    assert ran["error"] is None, ran
    pca = ran["results"]["OUTPUT_PCA"]
    assert pca == str(tmp_path / "features_pca.tif") and pca in ran["layers_to_load"]
    import rasterio

    with rasterio.open(tmp_path / "features.tif") as features, rasterio.open(pca) as picture:
        assert features.count == 64 and picture.count == 3  # the tiny ViT's width; RGB
        assert features.crs == picture.crs
    adapted = tmp_path / "s2.safetensors"
    answer = qgis.run_json(
        "dinogeo:adapt",
        {"BACKBONE": tiny_backbone, "SENSOR": "sentinel2_l2a", "OUTPUT": adapted},
    )
    assert answer["results"]["OUTPUT"] == str(adapted)
    from dinogeo.models import load_backbone

    _, card = load_backbone(adapted)
    assert card.sensor == "sentinel2_l2a" and "B08" in card.band_names


def test_model3_trains_maps_and_validates(qgis, tiny_backbone, shared_data, tmp_path):
    """fit -> predict -> validate chained in a graphical model, run by qgis_process."""
    model = PLUGIN_PATH / "dinogeo_processing" / "models" / "train_map_validate.model3"
    landcover, report = tmp_path / "landcover.tif", tmp_path / "report"
    qgis.process(
        "run",
        str(model),
        "--",
        f"image={shared_data / NC_IMAGE}",
        f"labels={shared_data / NC_POLYGONS}",
        "field=label",
        f"validation={shared_data / NC_POINTS}",
        f"backbone={tiny_backbone}",
        "steps=2",
        f"predict:landcover={landcover}",
        f"validate:report={report}",
    )
    import rasterio

    with rasterio.open(landcover) as src:
        assert src.colormap(1)[1][:3] != (0, 0, 0)  # the palette of the fitted classes
    metrics = json.loads((report / "metrics.json").read_text())["metrics"]
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["pixels"] > 500
    assert (report / "error_matrix.csv").is_file() and (report / "validation_points.gpkg").is_file()


def test_shipped_models_are_what_make_models_writes(qgis, tmp_path):
    script = PLUGIN_PATH / "tools" / "make_models.py"
    env = {**qgis.env, "QT_HASH_SEED": "0"}
    done = subprocess.run(
        ["/usr/bin/python3", str(script), str(tmp_path)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    shipped = PLUGIN_PATH / "dinogeo_processing" / "models"
    for name in ("landcover_per_zone.model3", "train_map_validate.model3"):
        assert (tmp_path / name).read_bytes() == (shipped / name).read_bytes(), name
