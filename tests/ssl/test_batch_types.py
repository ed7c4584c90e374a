"""Pretraining batches match their TypedDicts on both augmentation paths, on real Sentinel-2 chips."""

import torch

from dinogeo.ssl.batch_types import MultiCropBatch, RawBatch
from dinogeo.ssl.datamodule import SSLDataModule
from tests.ssl.test_device_augment import S2_10M
from tests.test_sample_types import check

ARGS = dict(
    sensor="sentinel2_l1c", bands=["B02", "B03", "B04", "B08"], samples_per_epoch=8,
    batch_size=4, num_workers=0, chip_size=48, patch_size=8, global_size=32, local_size=16,
    n_local=2, gram_size=32,
)  # fmt: skip


def _batch(shared_data, augment_on):
    dm = SSLDataModule(sources=[str(shared_data / S2_10M)], augment_on=augment_on, **ARGS)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    return batch, dm.on_after_batch_transfer(batch, 0)


def test_workers_and_device_batches_have_the_multicrop_keys(shared_data):
    on_workers, passed = _batch(shared_data, "workers")
    assert passed is on_workers  # already augmented: passes through
    raw, on_device = _batch(shared_data, "device")
    check(raw, RawBatch)
    assert raw["raw"].shape == (4, 4, 48, 48)
    for batch in (on_workers, on_device):
        check(batch, MultiCropBatch)
        assert batch["global_crops"].shape == (8, 4, 32, 32)
        assert batch["local_crops"].shape == (8, 4, 16, 16)  # n_local * B
        assert batch["gram_crops"].shape == (8, 4, 32, 32)
        assert batch["masks"].dtype == torch.bool and batch["masks"].shape == (8, 16)
        assert batch["n_masked_patches"] == int(batch["masks"].sum())
        assert batch["n_masked_images"] == 8
