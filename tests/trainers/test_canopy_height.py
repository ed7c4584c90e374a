"""The canopy-height head must not collapse to a flat ~0 m map on the real Swiss CHM.

Before the bin-logit prior and the bin cross-entropy, the soft-argmax head dropped from its ~8.8 m
initial output to the lowest bins within ~10 steps (91.6 % of the reference pixels are 0 m), the
softmax saturated, the head's gradient vanished and every pixel, canopy included, was predicted
~0.01 m (spatial std ~0.003 m). Both tests below fail on that head.
"""

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer

from dinogeo.errors import ConfigError
from dinogeo.models.heads import height_bin_centres
from dinogeo.trainers.canopy_height import (
    CanopyHeightTask,
    bin_indices,
    height_bin_prior,
)
from tests.trainers.conftest import RGB_IMAGERY


def test_bin_indices_and_prior():
    centres = height_bin_centres(256, 1e-3, 96.0)
    heights = torch.tensor([0.0, 1e-3, 1.0, 24.0, 96.0, 500.0])
    index = bin_indices(heights, centres)
    assert index[0] == 0 and index[1] == 0 and index[4] == 255 and index[5] == 255
    for h, i in zip(heights[2:4], index[2:4], strict=True):
        assert centres[i] == pytest.approx(float(h), rel=0.05)  # nearest log bin
    prior = height_bin_prior(np.array([0.0, 0.0, 0.0, 10.0, np.nan]), centres)
    assert prior.sum() == pytest.approx(1.0)
    assert prior[0] == pytest.approx(0.75, abs=0.02) and prior.argmax() == 0
    assert prior.min() > 0  # every bin keeps a floor: none starts dead


def _swiss(swiss_data, make_task, quiet_trainer, steps=30, **loss):
    data = swiss_data(val_fraction=0.25, split_by="positive", batch_size=4, chips_per_epoch=120)
    task = make_task(CanopyHeightTask, imagery=RGB_IMAGERY, features=16, image_skip=8, **loss)
    if not steps:  # only the fit-time initialisation (data setup + bin prior)
        data.setup("fit")
        trainer = Trainer(accelerator="cpu", logger=False)
        task.trainer = trainer
        trainer.datamodule = data
        task.setup("fit")
        return task, data
    quiet_trainer(steps).fit(task, data)
    return task, data


def test_prior_starts_at_the_data_on_real_swiss_chips(swiss_data, make_task, quiet_trainer):
    task, data = _swiss(swiss_data, make_task, quiet_trainer, steps=0)
    chips = [data.train_set[i] for i in range(0, len(data.train_set), 8)]
    image = torch.stack([c["image"] for c in chips])
    target = torch.stack([c["mask"] for c in chips])
    with torch.no_grad():
        pred = task(image)[:, 0]
    ref = target[torch.isfinite(target)].mean()
    # the old head started at ~8.8 m everywhere (uniform weights over log-spaced bins)
    assert abs(float(pred.mean() - ref)) < 0.5


def test_bin_cross_entropy_keeps_a_saturated_head_trainable():
    """All mass on the lowest bin, reference 10 m: L1 + SILog give the canopy bins ~no gradient."""
    task = CanopyHeightTask(imagery=RGB_IMAGERY, bins=64)
    centres = task.model.bin_centres
    target = torch.full((1, 4, 4), 10.0)
    grads = {}
    for weight in (0.0, 5.0):
        task._ce_weight = weight
        logits = torch.full((1, 64, 4, 4), -20.0)
        logits[:, 0] = 20.0
        logits.requires_grad_(True)
        task._logits = logits
        prob = logits.softmax(1)
        heights = torch.einsum("bkhw,k->bhw", prob, centres).unsqueeze(1)
        task.loss(heights, {"mask": target}).backward()
        grads[weight] = logits.grad[0, :, 0, 0].abs().max().item()
    assert grads[0.0] < 1e-6  # the collapse: saturated softmax, vanishing gradient
    assert grads[5.0] > 1e-2


def test_loss_weights_choose_the_terms():
    """Each term is on only when weighted; the cross-entropy alone is the bin fit's own loss."""
    task = CanopyHeightTask(imagery=RGB_IMAGERY, bins=32, l1_weight=0.0, silog_weight=0.0)
    centres = task.model.bin_centres
    logits = torch.randn(2, 32, 4, 4, generator=torch.Generator().manual_seed(0))
    target = torch.rand(2, 4, 4) * 20
    target[0, 0, 0] = float("nan")  # unknown reference: ignored by every term
    task._logits = logits
    heights = torch.einsum("bkhw,k->bhw", logits.softmax(1), centres).unsqueeze(1)
    index = bin_indices(target.nan_to_num(), centres)
    index[0, 0, 0] = -100
    ce = torch.nn.functional.cross_entropy(logits, index, ignore_index=-100)
    assert float(task.loss(heights, {"mask": target})) == pytest.approx(5.0 * float(ce), rel=1e-6)
    task._l1_weight = 2.0
    keep = torch.isfinite(target)
    l1 = (heights[:, 0][keep] - target[keep]).abs().mean()
    expected = 2.0 * float(l1) + 5.0 * float(ce)
    assert float(task.loss(heights, {"mask": target})) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    "weights", [{"l1_weight": -1.0}, {"l1_weight": 0.0, "silog_weight": 0.0, "bin_ce_weight": 0.0}]
)
def test_loss_weights_are_checked(weights):
    with pytest.raises(ConfigError, match="bin_ce_weight: 5.0"):
        CanopyHeightTask(imagery=RGB_IMAGERY, bins=32, **weights)
