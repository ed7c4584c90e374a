"""``dinogeo predict`` end to end on real imagery, through the CLI as a user runs it."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pyogrio
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.warp import reproject

from dinogeo.cli.main import main
from dinogeo.data.opener import open_source
from dinogeo.inference.inputs import all_bands_valid
from dinogeo.models.task_card import TaskCard, load_task_card
from tests.data.inference import data as fx

FAST = ["--tile", "256", "--overlap", "32", "--batch-size", "4", "--quiet"]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    d = tmp_path_factory.mktemp("bundles")
    uint16_height = TaskCard.from_dict(
        {"name": "canopy_height_cm", "kind": "regression", "target": "canopy height", "units": "m",
         "dtype": "uint16", "nodata": 65535, "valid_range": [0.0, 60.0]}
    )  # fmt: skip
    landsat = {"sensor": "landsat89_oli_l1", "bands": ("red", "green", "blue")}
    return {
        "rgb": fx.write_bundle(d / "lc_rgb.safetensors"),
        "height": fx.write_bundle(d / "height.safetensors", "canopy_height"),
        "height16": fx.write_bundle(d / "height16.safetensors", uint16_height),
        "s2": fx.write_bundle(
            d / "lc_s2.safetensors", sensor="sentinel2_l1c", bands=("B02", "B03", "B04", "B08")
        ),
        "landsat": fx.write_bundle(d / "lc_landsat.safetensors", **landsat),
        "change": fx.write_bundle(d / "change.safetensors", "change", **landsat),
    }


def predict(*args: object) -> int:
    return main(["predict", *[str(a) for a in args]])


def _valid_mask(path, sensor, bands):
    """Pixels valid in every band (a pixel missing one band is not predicted)."""
    src = open_source(path, sensor, list(bands))
    raw, valid = src.read(rasterio.windows.Window(0, 0, src.width, src.height))
    return all_bands_valid(raw, valid, src.nodata), src


CASES = {
    # input (relative to shared data or generated), bundle, sensor, bands
    "utm18n-uint8-nodata0": (fx.RGB_BYTE, "rgb", "rgb_uint8", ("red", "green", "blue")),
    "utm50s-alpha-band": (fx.PIX4D, "rgb", "rgb_uint8", ("red", "green", "blue")),
    "webmercator-jpeg-cog": (fx.KOREA, "rgb", "rgb_uint8", ("red", "green", "blue")),
    "utm18n-uint16-4band": (fx.S2_10M, "s2", "sentinel2_l1c", ("B02", "B03", "B04", "B08")),
    "utm18n-uint16-nodata0": (fx.QUEBEC, "landsat", "landsat89_oli_l1", ("red", "green", "blue")),
    "world-file-png": (None, "rgb", "rgb_uint8", ("red", "green", "blue")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_outputs_keep_georeferencing_nodata_and_dtype(case, bundles, shared_data, tmp_path):
    rel, bundle, sensor, bands = CASES[case]
    src_path = (
        fx.write_world_file_png(shared_data / fx.RGB_BYTE, tmp_path / "in")
        if rel is None
        else shared_data / rel
    )
    out = tmp_path / "pred.tif"
    assert predict("--model", bundles[bundle], src_path, "-o", out, "--no-vectorize", *FAST) == 0
    valid, src = _valid_mask(src_path, sensor, bands)
    with rasterio.open(out) as ds:
        assert ds.crs == src.crs
        assert ds.transform.almost_equals(src.transform)
        assert (ds.width, ds.height, ds.count) == (src.width, src.height, 1)
        assert ds.dtypes[0] == "uint8" and ds.nodata == 0
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.block_shapes[0] == (512, 512) or max(ds.width, ds.height) <= 512
        assert ds.compression is not None
        if max(ds.width, ds.height) > 512:
            assert ds.overviews(1), "COG overviews"
        pred = ds.read(1)
        values = set(np.unique(pred[valid]).tolist())
    classes = set(load_task_card("land_cover").class_values)
    assert values <= classes and values
    assert (pred[~valid] == 0).all(), "no prediction where the input has no data"
    assert (pred[valid] != 0).all(), "a prediction wherever the input has data"
    if case == "utm50s-alpha-band":
        assert (~valid).sum() > 1000, "the alpha band masks a collar"
    assert not list(tmp_path.glob(".*")) and not list(tmp_path.glob("*.dinogeo-partial"))


def test_height_outputs_float32_and_scaled_uint16(bundles, shared_data, tmp_path):
    src = shared_data / fx.HRO
    out = tmp_path / "h.tif"
    assert predict("--model", bundles["height"], src, "-o", out, *FAST) == 0
    with rasterio.open(out) as ds:
        assert ds.dtypes[0] == "float32" and ds.nodata == -9999.0
        h = ds.read(1)
        assert 0.0 <= h.min() and h.max() <= 96.0
    assert not out.with_suffix(".gpkg").exists(), "no polygons for a regression task"
    qml = ET.parse(out.with_suffix(".qml")).getroot()
    shader = qml.find(".//colorrampshader")
    assert (
        shader is not None and qml.find(".//rasterrenderer").get("type") == "singlebandpseudocolor"
    )
    assert all(i.get("label").endswith(" m") for i in shader.findall("item"))
    out16 = tmp_path / "h16.tif"
    assert predict("--model", bundles["height16"], src, "-o", out16, *FAST) == 0
    with rasterio.open(out16) as ds:
        assert ds.dtypes[0] == "uint16" and ds.nodata == 65535
        assert math.isclose(ds.scales[0], 60.0 / 65534, rel_tol=1e-9) and ds.offsets[0] == 0.0
        metres = ds.read(1).astype(np.float64) * ds.scales[0] + ds.offsets[0]
    np.testing.assert_allclose(metres, np.clip(h, 0, 60), atol=60.0 / 65534)


def test_probability_and_confidence_bands(bundles, shared_data, tmp_path):
    out = tmp_path / "p.tif"
    args = ("--model", bundles["rgb"], shared_data / fx.HRO, "-o", out, "--no-vectorize")
    assert predict(*args, "--probabilities", "--confidence", *FAST) == 0
    task = load_task_card("land_cover")
    with rasterio.open(out) as ds:
        assert ds.count == 1 + len(task.classes) + 1
        assert (
            ds.descriptions[1] == f"p({task.classes[0].name})"
            and ds.descriptions[-1] == "confidence"
        )
        raw = ds.read().astype(np.float64)
        probs = (
            raw[1:-1] * np.array(ds.scales[1:-1])[:, None, None]
            + np.array(ds.offsets[1:-1])[:, None, None]
        )
        conf = raw[-1] * ds.scales[-1] + ds.offsets[-1]
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=len(task.classes) / 254)
    np.testing.assert_allclose(conf, probs.max(axis=0), atol=1 / 254)
    # the class band is the most probable class (up to the 1/254 quantisation of the bands)
    lut = {v: i for i, v in enumerate(task.class_values)}
    chosen = np.take_along_axis(probs, np.vectorize(lut.get)(raw[0].astype(int))[None], axis=0)[0]
    assert (chosen >= probs.max(axis=0) - 1.5 / 254).all()


def test_geopackage_qml_and_aux_xml_are_valid(bundles, shared_data, tmp_path):
    out = tmp_path / "lc.tif"
    args = ("--model", bundles["rgb"], shared_data / fx.HRO, "-o", out, "--min-mapping-unit", "1")
    assert predict(*args, *FAST) == 0  # every region kept: areas match pixel counts
    task = load_task_card("land_cover")
    names = {c.value: c.name for c in task.classes}
    gpkg = out.with_suffix(".gpkg")
    layers = [name for name, _ in pyogrio.list_layers(gpkg)]
    assert "lc" in layers
    gdf = pyogrio.read_dataframe(gpkg, layer="lc")
    with rasterio.open(out) as ds:
        pred = ds.read(1)
        assert gdf.crs == ds.crs
        pixel_m2 = abs(ds.transform.a * ds.transform.e)
    assert set(gdf.columns) >= {"class", "class_name", "area_ha", "geometry"}
    assert (gdf.geom_type == "Polygon").all() and gdf.is_valid.all()
    assert {names[v] for v in gdf["class"]} == set(gdf["class_name"])
    # polygons tile the valid area exactly: areas agree with pixel counts per class (UTM scale <1%)
    for value, group in gdf.groupby("class"):
        expected_ha = (pred == value).sum() * pixel_m2 / 1e4
        assert math.isclose(group["area_ha"].sum(), expected_ha, rel_tol=0.01)
        assert math.isclose(group.area.sum() / 1e4, expected_ha, rel_tol=1e-6)
    con = sqlite3.connect(gpkg)
    rows = con.execute(
        "SELECT f_table_name, f_geometry_column, styleQML, styleSLD, useAsDefault FROM layer_styles"
    ).fetchall()
    con.close()
    assert len(rows) == 1 and rows[0][0] == "lc" and rows[0][4] == 1
    gcol = pyogrio.read_info(gpkg, layer="lc")["geometry_name"]
    assert rows[0][1] == gcol
    style = ET.fromstring(rows[0][2].split("\n", 1)[1])
    assert [c.get("label") for c in style.iter("category")] == task.class_names
    ET.fromstring(rows[0][3])
    qml = ET.parse(out.with_suffix(".qml")).getroot()
    entries = qml.findall(".//colorPalette/paletteEntry")
    assert [e.get("label") for e in entries] == task.class_names
    assert [e.get("color") for e in entries] == task.class_colors
    aux = ET.parse(str(out) + ".aux.xml").getroot()
    cats = [c.text or "" for c in aux.iter("Category")]
    assert all(cats[v] == n for v, n in names.items())
    mdi = {m.get("key"): float(m.text) for m in aux.iter("MDI")}
    assert mdi["STATISTICS_MINIMUM"] >= 10 and mdi["STATISTICS_VALID_PERCENT"] == 100.0
    with rasterio.open(out) as ds:  # GDAL reads the sidecar and the embedded palette
        assert ds.colormap(1)[10][:3] == (0, 100, 0)


def test_several_inputs_mosaic_and_overwrite_refusal(bundles, shared_data, tmp_path):
    crops = fx.write_crops(shared_data / fx.RGB_BYTE, tmp_path / "in")
    outdir = tmp_path / "out"
    args = ("--model", bundles["rgb"], tmp_path / "in", "-o", outdir, "--mosaic", "--no-vectorize")
    assert predict(*args, *FAST) == 0
    outs = sorted(outdir.glob("*_land_cover.tif"))
    assert [p.name for p in outs] == [f"{c.stem}_land_cover.tif" for c in crops]
    vrt = outdir / "land_cover_mosaic.vrt"
    with rasterio.open(vrt) as ds, rasterio.open(outs[0]) as a, rasterio.open(outs[1]) as b:
        assert ds.crs == a.crs and ds.width == 512 and ds.height == 256
        mosaic = ds.read(1)
        np.testing.assert_array_equal(mosaic[:, :256], a.read(1))
        np.testing.assert_array_equal(mosaic[:, 256:], b.read(1))
    assert vrt.with_suffix(".qml").is_file()
    # refusal to overwrite: error, exit status 1, file untouched
    before = outs[0].stat().st_mtime_ns
    assert predict(*args, *FAST) == 1
    assert outs[0].stat().st_mtime_ns == before
    assert predict(*args, "--overwrite", *FAST) == 0


def test_change_detection_warps_date2_onto_date1(bundles, shared_data, tmp_path):
    t1, t2 = shared_data / fx.QUEBEC, shared_data / fx.QUEBEC2
    out = tmp_path / "change.tif"
    assert predict("--model", bundles["change"], t1, t2, "-o", out, *FAST) == 0
    v1, s1 = _valid_mask(t1, "landsat89_oli_l1", ("red", "green", "blue"))
    with rasterio.open(t2) as d2, rasterio.open(t1) as d1:
        assert d2.transform != d1.transform, "the two dates are on different grids"
    with rasterio.open(out) as ds:
        assert ds.transform.almost_equals(s1.transform) and (ds.width, ds.height) == (
            s1.width,
            s1.height,
        )
        assert ds.dtypes[0] == "uint8" and ds.nodata == 255
        pred = ds.read(1)
    assert set(np.unique(pred).tolist()) <= {0, 1, 255}
    assert (pred[~v1] == 255).all()
    # valid exactly where both dates have data: date 2's mask warped onto date 1's grid
    v2 = np.zeros(v1.shape, np.uint8)
    with rasterio.open(t2) as d2:
        reproject(
            d2.dataset_mask(), v2, src_transform=d2.transform, src_crs=d2.crs,
            dst_transform=s1.transform, dst_crs=s1.crs, resampling=Resampling.nearest,
        )  # fmt: skip
    both = v1 & (v2 > 0)
    assert both.sum() > 10000 and (~both).sum() > 10000
    assert ((pred != 255) == both).mean() > 0.995
    gdf = pyogrio.read_dataframe(out.with_suffix(".gpkg"), layer="change")
    assert set(gdf["class_name"]) <= {"no change", "change"}
    assert predict("--model", bundles["change"], t1, "-o", tmp_path / "x.tif", *FAST) == 1


def test_clear_errors_before_any_work(bundles, shared_data, tmp_path, capsys):
    out = tmp_path / "out" / "x.tif"
    out.parent.mkdir()
    rgb = bundles["rgb"]
    cases = {
        "band": (rgb, shared_data / fx.S2_10M, out),
        "crs": (rgb, fx.write_no_crs(shared_data / fx.RGB_BYTE, tmp_path / "in"), out),
        "corrupt": (rgb, fx.write_corrupt(tmp_path / "in"), out),
        "missing": (rgb, tmp_path / "nope.tif", out),
        "folder": (rgb, shared_data / fx.HRO, tmp_path / "no_such_dir" / "x.tif"),
    }
    for what, (model, src, dst) in cases.items():
        assert predict("--model", model, src, "-o", dst, *FAST) == 1, what
        err = capsys.readouterr().err
        named = (Path(src).name, str(Path(dst).parent))
        assert "error" in err and any(n in err for n in named), (what, err)
        assert not list(out.parent.iterdir()), f"{what}: nothing may be written"


def test_zarr_store_input_gives_the_same_prediction(bundles, shared_data, tmp_path):
    from dinogeo.data.ingest import ingest

    src = shared_data / fx.HRO
    store = ingest([src], tmp_path / "archive.zarr", scheduler="synchronous", progress=False)
    from_tif, from_zarr = tmp_path / "tif.tif", tmp_path / "zarr.tif"
    assert predict("--model", bundles["rgb"], src, "-o", from_tif, "--no-vectorize", *FAST) == 0
    assert predict("--model", bundles["rgb"], store, "-o", from_zarr, "--no-vectorize", *FAST) == 0
    with rasterio.open(from_tif) as a, rasterio.open(from_zarr) as b:
        assert a.crs == b.crs and a.transform.almost_equals(b.transform)
        np.testing.assert_array_equal(a.read(), b.read())
