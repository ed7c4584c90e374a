"""ChangePairDataModule takes every LabeledChipDataModule argument: vector labels, fields, splits."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from jsonargparse import ArgumentParser

from dinogeo.errors import ConfigError
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
    assert data._scene_images() == [date]
    described = data.describe()
    assert described["label_field"] == "state" and described["chip_size"] == 32
    assert {k for k in described if k not in data.hparams} == {"train_chips", "val_chips"}
    with pytest.raises(ConfigError, match="date1 and .*date2 must list the same number"):
        ChangePairDataModule(date1=[date, date], date2=[date], labels="mask.tif")
