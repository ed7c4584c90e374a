"""Synthetic change pairs on real Sentinel-2 imagery: what changes, and reproducibility."""

from __future__ import annotations

import torch

from dinogeo.trainers import SyntheticChangeDataModule


def _datamodule(aber_change_data) -> SyntheticChangeDataModule:
    dm = aber_change_data(patch_min=6, patch_max=12, chips_per_epoch=8, val_chips=4)
    dm.setup("fit")
    return dm


def _draw(dataset, n=3):
    return [dataset[i] for i in range(n)]


def test_pairs_differ_exactly_where_the_mask_says(aber_change_data):
    """Outside the mask date 2 is date 1 under a per-band gain and offset (the no-change
    nuisance); inside it holds pasted content that no such map explains."""
    dm = _datamodule(aber_change_data)
    for sample in _draw(dm.train_set, 4) + _draw(dm.val_set, 4):
        mask = sample["mask"].bool()
        assert mask.any() and not mask.all()
        pasted = []
        for a, b in zip(sample["image1"].double(), sample["image2"].double(), strict=True):
            design = torch.stack([a[~mask], torch.ones_like(a[~mask])], dim=1)
            coef = torch.linalg.lstsq(design, b[~mask].unsqueeze(1)).solution.squeeze(1)
            residual = b - (coef[0] * a + coef[1])
            assert residual[~mask].abs().max() < 1e-4
            pasted.append(residual[mask].abs().mean())
        assert max(pasted) > 1e-2


def test_training_pairs_follow_torch_seed_and_validation_pairs_are_fixed(aber_change_data):
    dm = _datamodule(aber_change_data)
    torch.manual_seed(3)
    first = _draw(dm.train_set)
    torch.manual_seed(3)
    again = _draw(dm.train_set)
    fresh = _draw(dm.train_set)
    for a, b in zip(first, again, strict=True):
        for key in ("image1", "image2", "mask"):
            assert torch.equal(a[key], b[key])
    assert any(not torch.equal(a["mask"], c["mask"]) for a, c in zip(first, fresh, strict=True))
    val = _draw(dm.val_set)
    torch.manual_seed(99)
    for a, b in zip(val, _draw(dm.val_set), strict=True):
        assert torch.equal(a["mask"], b["mask"]) and torch.equal(a["image2"], b["image2"])
