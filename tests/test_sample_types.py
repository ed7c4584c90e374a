"""The sample dicts of datasets, collate functions and trainers match their TypedDicts, on real imagery."""

from __future__ import annotations

import typing

import pytest
import torch
from torch import Tensor
from torchgeo.samplers import GridGeoSampler

from dinogeo.data.dataset import ChipDataset, SourceGeoDataset, dataloader
from dinogeo.data.opener import open_source
from dinogeo.data.sample_types import ChipBatch, ChipSample, GeoSample, LabeledSample
from dinogeo.data.samplers import GridChipSampler
from dinogeo.trainers.feature_cache import CachedFeatureDataModule, FeatureCache
from tests.trainers.conftest import aber_pairs, head, scene_chips


def _matches(value: object, hint: object) -> bool:
    """Whether ``value`` has the (runtime-checkable part of the) annotated type."""
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    return isinstance(value, hint)  # type: ignore[arg-type]


def check(sample: typing.Mapping[str, object], kind: type) -> None:
    """Fail unless ``sample`` has every required key of ``kind``, no other, of the right types."""
    hints = typing.get_type_hints(kind)
    required: frozenset[str] = kind.__required_keys__  # type: ignore[attr-defined]
    assert required <= set(sample), (kind.__name__, sorted(required - set(sample)))
    assert set(sample) <= set(hints), (kind.__name__, sorted(set(sample) - set(hints)))
    for key, value in sample.items():
        assert _matches(value, hints[key]), (kind.__name__, key, type(value))


def test_check_rejects_a_wrong_sample():
    good = {"mask": torch.zeros(2, 2), "valid": torch.ones(2, 2, dtype=torch.bool)}
    check(good, LabeledSample)
    for bad in ({"mask": good["mask"]}, {**good, "label": good["mask"]}, {**good, "valid": 1}):
        with pytest.raises(AssertionError):
            check(bad, LabeledSample)


def test_chip_samples_and_batches(shared_data):
    src = open_source(shared_data / "landsat7-rgb-bahamas-rasterio/RGB.byte.tif")
    sampler = GridChipSampler([src], size=64, min_valid=0.5)
    dataset = ChipDataset([src], queries=list(sampler))
    sample = dataset[0]
    check(sample, ChipSample)
    assert sample["image"].shape == (3, 64, 64) and sample["valid"].dtype == torch.bool
    batch = next(iter(dataloader(dataset, sampler, batch_size=3)))
    check(batch, ChipBatch)
    assert batch["image"].shape == (3, 3, 64, 64) and len(batch["path"]) == 3
    geo = SourceGeoDataset([src])
    check(geo[next(iter(GridGeoSampler(geo, 64, 64)))], GeoSample)


def test_labelled_samples_and_batches(shared_data):
    data = scene_chips(shared_data, "aber")
    data.setup("fit")
    check(data.train_set[0], LabeledSample)
    assert "image" in data.train_set[0]
    batch = next(iter(data.train_dataloader()))
    check(batch, LabeledSample)
    assert batch["image"].shape == (4, 10, 32, 32) and batch["mask"].dtype == torch.int64
    cache = FeatureCache(head().model)
    cached = CachedFeatureDataModule(data, cache, pool_size=4, batch_size=2, log=None)
    cached.setup("fit")
    feats = next(iter(cached.train_dataloader()))
    check(feats, LabeledSample)
    assert isinstance(feats["features"], list) and isinstance(feats["features"][0], Tensor)


def test_change_samples(shared_data):
    dm = aber_pairs(shared_data, patch_min=6, patch_max=12, chips_per_epoch=4, val_chips=2)
    dm.setup("fit")
    sample = dm.train_set[0]
    check(sample, LabeledSample)
    assert {"image1", "image2"} <= set(sample) and "image" not in sample
