"""Heads trained on cached frozen-backbone features (dinogeo.trainers.feature_cache), real imagery."""

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer, seed_everything

from dinogeo.trainers.canopy_height import CanopyHeightTask
from dinogeo.trainers.change import ChangeTask
from dinogeo.trainers.datamodule import LabeledChipDataModule
from dinogeo.trainers.feature_cache import CachedFeatureDataModule, FeatureCache
from dinogeo.trainers.land_cover import LandCoverTask
from dinogeo.trainers.synthetic_change import SyntheticChangeDataModule

ABER = "sentinel2-landcover-aberystwyth-rsgislib"
S2 = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]
COMMON = {"sensor": "sentinel2_l2a", "bands": S2, "scale": 1e-3, "offset": 0.0}


def _aber(shared_data, **extra):
    folder = shared_data / ABER
    return LabeledChipDataModule(
        image=str(folder / "sen2_20210527_aber_10band_crop.tif"),
        labels=str(folder / "sen2_20210527_aber_cls_crop.tif"),
        task="land_cover_aberystwyth",
        backbone="vit_test_patch16_dinov3",
        chip_size=32,
        block_size=128,
        train_stride=32,
        batch_size=4,
        **COMMON,
        **extra,
    )


def _task(cls=LandCoverTask, **extra):
    seed_everything(0, verbose=False)
    args = {"backbone": "vit_test_patch16_dinov3", "features": 8, **COMMON, **extra}
    if cls is LandCoverTask:
        args.setdefault("task", "land_cover_aberystwyth")
    return cls(**args)


def _trainer(steps):
    return Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )


def test_cached_features_give_the_backbone_path_output(shared_data, tmp_path):
    data = _aber(shared_data)
    data.setup("fit")
    task = _task().eval()
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
    other = _task()
    seed_everything(1, verbose=False)
    for p in other.model.backbone.parameters():
        torch.nn.init.normal_(p, std=0.02)
    assert FeatureCache(other.model, tmp_path).digest != cache.digest


def test_change_heads_use_both_dates_cached_features(shared_data, tmp_path):
    folder = shared_data / ABER
    data = SyntheticChangeDataModule(
        images=[str(folder / "sen2_20210527_aber_10band_crop.tif")],
        task="change",
        backbone="vit_test_patch16_dinov3",
        chip_size=32,
        chips_per_epoch=8,
        val_chips=4,
        batch_size=4,
        **COMMON,
    )
    task = _task(ChangeTask, task="change")
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
    _trainer(2).fit(task, cached)


def test_augmentation_turns_images_masks_and_features_together(shared_data, tmp_path):
    data = _aber(shared_data)
    task = _task()
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


def test_fit_hooks_see_the_wrapped_data(shared_data, tmp_path):
    """'auto' class weights and the canopy bin prior are computed through the wrapper."""
    data = _aber(shared_data)
    task = _task(class_weights="auto")
    cached = CachedFeatureDataModule(data, FeatureCache(task.model), pool_size=16, log=None)
    _trainer(2).fit(task, cached)
    counts = data.class_frequencies()
    expected = 1 / np.sqrt(counts / counts.sum())
    assert np.allclose(task.class_weight.numpy(), expected / expected.mean(), rtol=1e-4)
    folder = shared_data / "swissimage-lidar-chm-detectree"
    swiss = LabeledChipDataModule(
        image=str(folder / "ref-img.tif"),
        labels=str(folder / "chm_0.5m_on_ref-img_grid_derived.tif"),
        task="canopy_height",
        backbone="vit_test_patch16_dinov3",
        sensor="rgb_uint8",
        chip_size=32,
        block_size=128,
        train_stride=32,
    )
    height = _task(CanopyHeightTask, sensor="rgb_uint8", bands=None, scale=None, offset=None)
    bias = height.model.output_layer().bias.detach().clone()
    cached = CachedFeatureDataModule(swiss, FeatureCache(height.model), pool_size=16, log=None)
    _trainer(0).fit(height, cached)
    assert not torch.allclose(height.model.output_layer().bias, bias)  # the prior was set


def test_trainable_backbones_are_not_cached():
    from dinogeo.errors import ConfigError

    task = _task(unfreeze_last_blocks=1)
    with pytest.raises(ConfigError, match="frozen backbone"):
        FeatureCache(task.model)
