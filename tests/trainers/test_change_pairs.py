"""ChangePairDataModule takes every LabeledChipDataModule argument: vector labels, fields, splits."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from jsonargparse import ArgumentParser
from shapely.geometry import box

from dinogeo.errors import ConfigError, LabelError
from dinogeo.labels.sources import LabelSource
from dinogeo.trainers import ChangePairDataModule, LabeledChipDataModule
from tests.data.labels import data as label_data

S2 = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]


def test_every_parent_argument_reaches_the_change_data():
    parser = ArgumentParser()
    parser.add_class_arguments(ChangePairDataModule, "data")
    options = {a.dest.split(".", 1)[1] for a in parser._actions if a.dest.startswith("data.")}
    parent = set(inspect.signature(LabeledChipDataModule).parameters) - {"image"}
    assert parent - options == set()  # nothing dropped: label_field, val_labels, split_by...
    assert {"date1", "date2"} <= options


def test_change_pairs_from_polygons_with_a_label_field(shared_data, tmp_path):
    triple = label_data.write_change_triple(tmp_path, shared_data)
    polygons = label_data.write_change_polygons(triple["mask"], tmp_path)
    common = dict(
        date1=[str(triple["date1"])], date2=[str(triple["date2"])], sensor="sentinel2_l2a",
        bands=S2, scale=1e-3, chip_size=32, block_size=64, val_fraction=0.25, seed=0, augment=False,
    )  # fmt: skip
    by_raster = ChangePairDataModule(labels=[str(triple["mask"])], **common)
    by_vector = ChangePairDataModule(
        labels=[str(polygons)], label_field="state", point_radius=0.0, **common
    )
    assert by_vector.hparams["label_field"] == "state"
    by_raster.setup("fit")
    by_vector.setup("fit")
    assert by_vector.train_set is not None and by_raster.train_set is not None
    assert by_vector.train_set.chips == by_raster.train_set.chips
    masks = [by_vector.train_set[i]["mask"].numpy() for i in range(0, len(by_vector.train_set), 7)]
    same = [by_raster.train_set[i]["mask"].numpy() for i in range(0, len(by_raster.train_set), 7)]
    assert all(np.array_equal(a, b) for a, b in zip(masks, same, strict=True))
    assert any((m == 1).any() for m in masks) and any((m == 0).any() for m in masks)
    sample = by_vector.train_set[0]
    assert sample["image1"].shape == sample["image2"].shape == (10, 32, 32)


def test_arguments_are_kept_once_in_hparams(shared_data):
    date = str(
        shared_data / "sentinel2-landcover-aberystwyth-rsgislib/sen2_20210527_aber_10band_crop.tif"
    )
    data = ChangePairDataModule(
        date1=date, date2=date, labels="mask.tif", label_field="state", chip_size=32, block_size=64
    )
    assert not hasattr(data, "cfg")  # no second copy of the arguments next to hparams
    parent = set(inspect.signature(LabeledChipDataModule).parameters)
    assert parent | {"date1", "date2"} <= set(data.hparams)
    assert (data.hparams["date1"], data.hparams["date2"]) == (date, date)
    assert data.scenes.grids == data.scenes.second == (date,)
    described = data.describe()
    assert described["label_field"] == "state" and described["chip_size"] == 32
    assert {k for k in described if k not in data.hparams} == {"train_chips", "val_chips"}
    with pytest.raises(ConfigError, match="date1 and .*date2 must list the same number"):
        ChangePairDataModule(date1=[date, date], date2=[date], labels="mask.tif")


def _pairs(shared: Path, folder: Path) -> tuple[dict[str, Any], Path, Path]:
    """Common options of a Rufiji change pair, its change mask, and a GeoPackage of two layers.

    The mask's polygons clipped to the west half of date 1 (layer ``west``, class in ``state``)
    and to the east half (layer ``east``, class in ``klass``; also alone in ``east.gpkg``):
    spatially separate training and validation labels.
    """
    triple = label_data.write_change_triple(folder, shared)
    polygons = gpd.read_file(label_data.write_change_polygons(triple["mask"], folder))
    with rasterio.open(triple["mask"]) as ds:
        left, bottom, right, top = ds.bounds
    middle = (left + right) / 2
    gpkg = folder / "halves.gpkg"
    west = gpd.clip(polygons, box(left, bottom, middle, top))
    east = gpd.clip(polygons, box(middle, bottom, right, top)).rename(columns={"state": "klass"})
    west.to_file(gpkg, layer="west", driver="GPKG")
    east.to_file(gpkg, layer="east", driver="GPKG", mode="a")
    east.to_file(folder / "east.gpkg", driver="GPKG")
    common = dict(
        date1=[str(triple["date1"])], date2=[str(triple["date2"])], sensor="sentinel2_l2a",
        bands=S2, scale=1e-3, chip_size=32, block_size=64, val_fraction=0.25, seed=0, augment=False,
    )  # fmt: skip
    return common, triple["mask"], gpkg


def test_change_pairs_validate_on_separate_labels(shared_data, tmp_path):
    """label_layer, label_field, val_labels, val_label_layer and val_label_field are all used."""
    common, mask, gpkg = _pairs(shared_data, tmp_path)
    data = ChangePairDataModule(
        labels=[str(gpkg)], label_layer="west", label_field="state",
        val_labels=[str(tmp_path / "east.gpkg")], val_label_field="klass", split_by="labelled",
        **common,
    )  # fmt: skip
    data.setup("fit")
    assert data.train_set is not None and data.val_set is not None
    assert data.train_set.labels[0].source.layer == "west"
    assert data.val_set.labels[0].source.path == tmp_path / "east.gpkg"
    assert (
        data.splits[0].val_blocks == frozenset()
    )  # separate validation labels: every block trains
    with rasterio.open(mask) as ds:
        reference = ds.read(1)
    middle = reference.shape[1] / 2  # the column where the two layers meet

    def labelled(dataset: Any) -> tuple[int, int, int]:
        """Labelled pixels west and east of the middle (1 px off), and those unlike the mask."""
        west = east = wrong = 0
        for i, chip in enumerate(dataset.chips):
            m = dataset[i]["mask"].numpy()
            rows, cols = np.nonzero(m != 255)
            row0, col0 = int(chip.window.row_off), int(chip.window.col_off)
            inside = (row0 + rows < reference.shape[0]) & (col0 + cols < reference.shape[1])
            rows, cols = rows[inside], cols[inside]
            ref = reference[row0 + rows, col0 + cols]
            wrong += int(((ref != m[rows, cols]) & (ref != 255)).sum())
            west += int((col0 + cols + 1 < middle).sum())
            east += int((col0 + cols > middle).sum())
        return west, east, wrong

    train_west, train_east, train_wrong = labelled(data.train_set)
    val_west, val_east, val_wrong = labelled(data.val_set)
    assert train_west > 0 and val_east > 0
    assert train_east == 0 and val_west == 0
    assert train_wrong <= train_west // 50 and val_wrong <= val_east // 50  # the mask's classes
    changed = [data.val_set[i]["mask"].numpy() for i in range(len(data.val_set))]
    assert any((m == 1).any() for m in changed)  # both classes read through val_label_field
    assert any((m == 0).any() for m in changed)
    # the validation layer of the training labels' file instead of a separate file
    by_layer = ChangePairDataModule(
        labels=[str(gpkg)], label_layer="west", label_field="state", val_label_layer="east",
        val_label_field="klass", **common,
    )  # fmt: skip
    by_layer.setup("fit")
    assert by_layer.val_set is not None
    assert by_layer.val_set.labels[0].source == LabelSource(gpkg, "east")
    assert by_layer.val_set.chips == data.val_set.chips


def test_change_pairs_refuse_what_their_options_forbid(shared_data, tmp_path):
    """Options that reach the module are checked: a dropped one would not raise."""
    common, _, gpkg = _pairs(shared_data, tmp_path)
    with pytest.raises(ConfigError, match="split_by: positive is for regression"):
        ChangePairDataModule(labels=[str(gpkg)], split_by="positive", **common)
    with pytest.raises(ConfigError, match=r"data.init_args.point_radius must be .* >= 0"):
        ChangePairDataModule(labels=[str(gpkg)], point_radius=-1.0, **common)
    wrong_field = ChangePairDataModule(
        labels=[str(gpkg)], label_layer="west", label_field="note", **common
    )
    with pytest.raises(LabelError, match="data.init_args.label_field"):
        wrong_field.setup("fit")
    wrong_layer = ChangePairDataModule(labels=[str(gpkg)], label_layer="north", **common)
    with pytest.raises(LabelError, match="north"):
        wrong_layer.setup("fit")
    wrong_val_field = ChangePairDataModule(
        labels=[str(gpkg)], label_layer="west", label_field="state", val_label_layer="east",
        val_label_field="state",
        **common,
    )  # fmt: skip
    with pytest.raises(LabelError, match="data.init_args.val_label_field"):
        wrong_val_field.setup("fit")
