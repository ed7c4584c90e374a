"""Heads trained on cached frozen-backbone features (dinogeo.trainers.feature_cache), real imagery."""

import numpy as np
import pytest
import torch
from lightning.pytorch import seed_everything

from dinogeo.trainers.canopy_height import CanopyHeightTask
from dinogeo.trainers.change import ChangeTask
from dinogeo.trainers.feature_cache import CachedFeatureDataModule, FeatureCache
from tests.trainers.conftest import RGB_IMAGERY


def test_cached_features_give_the_backbone_path_output(aber_data, make_task, tmp_path):
    data = aber_data()
    data.setup("fit")
    task = make_task().eval()
    cache = FeatureCache(task.model, tmp_path)
    chips = torch.stack([data.train_set[i]["image"] for i in range(3)])
    feats = cache.features(list(chips))
    assert cache.computed == 3 and feats[0].dtype == torch.float16
    batch = [
        torch.stack(layer) for layer in zip(*(f.float().unbind(0) for f in feats), strict=True)
    ]
    with torch.no_grad():
        direct, cached = task(chips), task(chips, features=batch)
    assert torch.allclose(direct, cached, atol=2e-2)  # float16 storage
    # a second cache on the same folder reads the files instead of running the backbone
    again = FeatureCache(task.model, tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(again.features(list(chips)), feats, strict=True))
    assert again.computed == 0 and again.loaded == 3
    # another backbone (other weights) never gets these features
    other = make_task()
    seed_everything(1, verbose=False)
    for p in other.model.backbone.parameters():
        torch.nn.init.normal_(p, std=0.02)
    assert FeatureCache(other.model, tmp_path).digest != cache.digest


def test_change_heads_use_both_dates_cached_features(
    aber_change_data, make_task, quiet_trainer, tmp_path
):
    data = aber_change_data(chips_per_epoch=8, val_chips=4, batch_size=4)
    task = make_task(ChangeTask)
    cached = CachedFeatureDataModule(
        data, FeatureCache(task.model, tmp_path), batch_size=4, steps_per_epoch=2, log=None
    )
    cached.setup("fit")
    batch = next(iter(cached.val_dataloader()))
    assert {"features1", "features2"} <= set(batch)
    task.eval()
    with torch.no_grad():
        direct = task(batch["image1"], batch["image2"])
        via_cache = task(batch["image1"], batch["image2"], features=task.cached_features(batch))
    assert torch.allclose(direct, via_cache, atol=2e-2)
    quiet_trainer(2).fit(task, cached)


def test_augmentation_turns_images_masks_and_features_together(aber_data, make_task):
    data = aber_data()
    task = make_task()
    cached = CachedFeatureDataModule(data, FeatureCache(task.model), pool_size=4, log=None)
    cached.setup("fit")
    assert cached.train_pool is not None
    plain = cached.train_pool.samples[0]
    torch.manual_seed(3)
    seen = set()
    for _ in range(12):
        turned = cached.train_pool[0]
        for k in range(4):
            for flip in (False, True):
                image = torch.rot90(plain["image"], k, dims=(-2, -1))
                image = image.flip(-1) if flip else image
                if torch.equal(image, turned["image"]):
                    seen.add((k, flip))
                    feats = torch.rot90(plain["features"].float(), k, dims=(-2, -1))
                    feats = feats.flip(-1) if flip else feats
                    assert torch.equal(torch.stack(turned["features"]), feats)
                    mask = torch.rot90(plain["mask"], k, dims=(-2, -1))
                    assert torch.equal(turned["mask"], mask.flip(-1) if flip else mask)
    assert len(seen) > 2  # several of the 8 transforms, each applied to all three alike


def test_fit_hooks_see_the_wrapped_data(aber_data, swiss_data, make_task, quiet_trainer):
    """'auto' class weights and the canopy bin prior are computed through the wrapper."""
    data = aber_data()
    task = make_task(class_weights="auto")
    cached = CachedFeatureDataModule(data, FeatureCache(task.model), pool_size=16, log=None)
    quiet_trainer(2).fit(task, cached)
    counts = data.class_frequencies()
    expected = 1 / np.sqrt(counts / counts.sum())
    assert np.allclose(task.class_weight.numpy(), expected / expected.mean(), rtol=1e-4)
    swiss = swiss_data(train_stride=32)
    height = make_task(CanopyHeightTask, imagery=RGB_IMAGERY)
    bias = height.model.output_layer().bias.detach().clone()
    cached = CachedFeatureDataModule(swiss, FeatureCache(height.model), pool_size=16, log=None)
    quiet_trainer(0).fit(height, cached)
    assert not torch.allclose(height.model.output_layer().bias, bias)  # the prior was set


def test_trainable_backbones_are_not_cached(make_task):
    from dinogeo.errors import ConfigError

    task = make_task(unfreeze_last_blocks=1)
    with pytest.raises(ConfigError, match="frozen backbone"):
        FeatureCache(task.model)
