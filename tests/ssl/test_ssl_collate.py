import pytest
import torch

from dinogeo.errors import ConfigError
from dinogeo.ssl.augment import MultiCropAugmentation
from dinogeo.ssl.collate import collate_multicrop


def fake_sample(index, channels=2, g=32, l_size=16, n_local=3, gram=True):
    # every crop is constant: 100 * image index + crop index (+50 for locals, +80 for gram)
    sample = {
        "global": [torch.full((channels, g, g), 100.0 * index + c) for c in range(2)],
        "local": [
            torch.full((channels, l_size, l_size), 100.0 * index + 50 + c) for c in range(n_local)
        ],
    }
    if gram:
        sample["gram"] = [
            torch.full((channels, 2 * g, 2 * g), 100.0 * index + 80 + c) for c in range(2)
        ]
    return sample


def test_shapes_and_crop_major_order():
    batch = collate_multicrop(
        [fake_sample(i) for i in range(3)], patch_size=8, generator=torch.Generator().manual_seed(0)
    )
    assert batch["global_crops"].shape == (6, 2, 32, 32)
    assert batch["local_crops"].shape == (9, 2, 16, 16)
    assert batch["gram_crops"].shape == (6, 2, 64, 64)
    assert batch["global_crops"][:, 0, 0, 0].tolist() == [0, 100, 200, 1, 101, 201]
    assert batch["local_crops"][:, 0, 0, 0].tolist() == [50, 150, 250, 51, 151, 251, 52, 152, 252]
    assert batch["gram_crops"][:, 0, 0, 0].tolist() == [80, 180, 280, 81, 181, 281]
    assert batch["masks"].shape == (6, 16) and batch["masks"].dtype == torch.bool


def test_mask_bookkeeping():
    batch = collate_multicrop(
        [fake_sample(i, gram=False) for i in range(4)],
        patch_size=8,
        generator=torch.Generator().manual_seed(1),
    )
    masks = batch["masks"]
    assert "gram_crops" not in batch
    per_image = masks.sum(dim=1)
    # 8 crops, 4 masked with floor(16 * r), r = 0.2, 0.3, 0.4, 0.5
    assert sorted(per_image.tolist()) == [0, 0, 0, 0, 3, 4, 6, 8]
    flat = masks.flatten()
    assert torch.equal(batch["mask_indices"], flat.nonzero().flatten())
    assert batch["n_masked_patches"] == int(flat.sum()) == batch["masks_weight"].numel()
    rows = batch["mask_indices"] // 16
    torch.testing.assert_close(batch["masks_weight"], 1.0 / per_image[rows].float())
    # each masked image's weights sum to 1; the iBOT normaliser is the number of global crops
    assert batch["masks_weight"].sum().item() == pytest.approx(4.0)
    assert batch["n_masked_images"] == 8


def test_no_local_crops_and_real_augmentation():
    aug = MultiCropAugmentation(global_size=32, local_size=16, n_local=0)
    samples = [aug(torch.randn(3, 40, 40)) for _ in range(2)]
    batch = collate_multicrop(samples, patch_size=16)
    assert batch["local_crops"].shape == (0, 3, 0, 0)
    assert batch["global_crops"].shape == (4, 3, 32, 32)


def test_errors():
    with pytest.raises(ConfigError):
        collate_multicrop([fake_sample(0)], patch_size=7)
    with pytest.raises(ConfigError):
        collate_multicrop([], patch_size=8)
    with pytest.raises(ConfigError):
        collate_multicrop([fake_sample(0, n_local=2), fake_sample(1, n_local=3)], patch_size=8)
