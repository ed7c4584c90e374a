import numpy as np
import pytest
import rasterio
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from dinogeo.errors import ConfigError, LabelError
from dinogeo.labels import IGNORE_INDEX, LabelRaster, block_split, chip_windows
from dinogeo.models.task_card import load_task_card
from tests.data.labels import data as label_data

ABER = "sentinel2-landcover-aberystwyth-rsgislib"
SWISS = "swissimage-lidar-chm-detectree"


def _grid(path):
    with rasterio.open(path) as ds:
        return ds.crs, ds.transform, ds.width, ds.height


def test_class_raster_same_grid_and_reprojected(shared_data, tmp_path):
    task = load_task_card("land_cover_aberystwyth")
    cls_path = shared_data / ABER / "sen2_20210527_aber_cls_crop.tif"
    crs, transform, w, h = _grid(shared_data / ABER / "sen2_20210527_aber_10band_crop.tif")
    direct = LabelRaster(cls_path, task).read(crs, transform, w, h)
    with rasterio.open(cls_path) as ds:
        raw = ds.read(1)
    np.testing.assert_array_equal(direct, np.where(raw == 0, IGNORE_INDEX, raw - 1))
    # boundless chip: the part outside the raster is unlabelled
    chip = LabelRaster(cls_path, task).read(
        crs, window_transform(Window(-4, 500, 16, 16), transform), 16, 16
    )
    assert (chip[:, :4] == IGNORE_INDEX).all() and (chip[:12, 4:] == direct[500:512, :12]).all()
    # the same map in EPSG:4326 (another grid) read back with nearest resampling
    moved = LabelRaster(label_data.write_resampled_classes(tmp_path, shared_data), task)
    back = moved.read(crs, transform, w, h)
    both = (back != IGNORE_INDEX) & (direct != IGNORE_INDEX)
    assert both.mean() > 0.95
    assert (back[both] == direct[both]).mean() > 0.9


def test_height_raster_average_resampling(shared_data):
    task = load_task_card("canopy_height")
    fine = shared_data / SWISS / "chm_0.5m_on_ref-img_grid_derived.tif"
    coarse = shared_data / SWISS / "chm_1m_derived_from_lidar.tif"
    crs, t1, w1, h1 = _grid(coarse)
    # the 0.5 m CHM is the 1 m CHM replicated 2x2: averaging it back onto the 1 m grid is exact
    avg = LabelRaster(fine, task).read(crs, t1, w1, h1)
    ref = LabelRaster(coarse, task).read(crs, t1, w1, h1)
    ok = np.isfinite(avg) & np.isfinite(ref)
    assert ok.mean() > 0.98
    np.testing.assert_allclose(avg[ok], ref[ok], atol=1e-4)
    assert avg.dtype == np.float32


def test_unknown_class_codes(shared_data):
    task = load_task_card("land_cover_nc1996")  # 7 classes: the Aberystwyth codes 1-4 are fine
    crs, transform, w, h = _grid(shared_data / ABER / "sen2_20210527_aber_cls_crop.tif")
    three = load_task_card("land_cover_rufiji1997")  # classes 1-3 only: code 4 is unknown
    LabelRaster(shared_data / ABER / "sen2_20210527_aber_cls_crop.tif", task).read(
        crs, transform, w, h
    )
    with pytest.raises(
        LabelError, match=r"value\(s\) \[4\] are not classes of task card 'land_cover_rufiji1997'"
    ):
        LabelRaster(shared_data / ABER / "sen2_20210527_aber_cls_crop.tif", three).read(
            crs, transform, w, h
        )


def test_block_split_is_spatial():
    split = block_split(500, 300, block_size=100, val_fraction=0.3, seed=1)
    assert split.shape == (3, 5)
    val, train = split.mask("val"), split.mask("train")
    assert not (val & train).any() and (val | train).all()
    assert 0.2 <= val.mean() <= 0.4
    for b in split.blocks("val"):
        for w in chip_windows(split.block_window(b), 64, 16):
            assert val[w.row_off : w.row_off + 64, w.col_off : w.col_off + 64].all()
    with pytest.raises(ConfigError):
        block_split(10, 10, block_size=0, val_fraction=0.2)
    edge = chip_windows(Window(96, 0, 4, 100), 32, 8)  # an edge block narrower than a chip
    assert {w.col_off for w in edge} == {96}
