"""A land-cover head contains, and starts at, the per-pixel classifier on the raw bands.

Before, a DPT head (with or without its image branch) started from random weights and, after the
benchmark's 100-300 steps, stayed below a per-pixel softmax regression on the same pixels
(Aberystwyth mIoU 0.66-0.70 vs 0.786). Now the head has a per-pixel linear term, started at that
regression's fit on the training chips, and the rest of its output starts at 0.
"""

import numpy as np
import torch

from dinogeo.labels import IGNORE_INDEX
from dinogeo.trainers.baselines import fit_softmax_regression
from dinogeo.trainers.metrics import TaskMetrics


def _data(aber_data):
    data = aber_data(augment=False)
    data.setup("fit")
    return data


def _miou(scores: torch.Tensor, masks: torch.Tensor, task) -> float:
    metrics = TaskMetrics(task)
    metrics.update(scores, masks)
    return float(metrics.compute()["miou"])


def test_the_head_starts_at_the_per_pixel_classifier_on_real_imagery(
    aber_data, make_task, quiet_trainer
):
    data = _data(aber_data)
    task = make_task()
    assert task.hparams["image_skip"] > 0 and task.model.pixel_linear is not None  # defaults on
    quiet_trainer(0).fit(task, data)  # runs the fit-start hooks only
    # the per-pixel classifier fitted independently on the same training chips
    train = [data.train_set[i] for i in range(len(data.train_set))]
    step = max(1, len(train) // 64)
    images = torch.stack([s["image"] for s in train[::step]])
    masks = torch.stack([s["mask"] for s in train[::step]])
    x = images.permute(0, 2, 3, 1).reshape(-1, images.shape[1])
    y = masks.reshape(-1)
    keep = y != IGNORE_INDEX
    layer = fit_softmax_regression(x[keep].numpy(), y[keep].numpy(), 4, l2=1e-3)
    val = [data.val_set[i] for i in range(len(data.val_set))]
    vimages = torch.stack([s["image"] for s in val])
    vmasks = torch.stack([s["mask"] for s in val])
    task.eval()
    with torch.no_grad():
        head = task(vimages)
        pixel = layer(vimages.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    assert torch.allclose(head, pixel, atol=1e-4)
    miou = _miou(head, vmasks, task.task_card)
    assert miou == _miou(pixel, vmasks, task.task_card) and miou > 0.7
    # the old start: a random head far below the per-pixel classifier
    old = make_task(image_skip=0, pixel_linear=False).eval()
    with torch.no_grad():
        assert _miou(old(vimages), vmasks, task.task_card) < miou - 0.3
    assert np.isfinite(miou)


def test_a_change_head_starts_at_the_per_pixel_change_classifier(
    aber_change_data, make_task, quiet_trainer
):
    from dinogeo.models.heads import change_pixels
    from dinogeo.trainers.change import ChangeTask

    data = aber_change_data(chips_per_epoch=16, val_chips=8, batch_size=4)
    task = make_task(ChangeTask)
    quiet_trainer(0).fit(task, data)  # runs the set-up hooks only
    linear = task.model.pixel_linear
    assert linear is not None and linear.weight.abs().sum() > 0
    val = [data.val_set[i] for i in range(len(data.val_set))]
    one = torch.stack([s["image1"] for s in val])
    two = torch.stack([s["image2"] for s in val])
    task.eval()
    with torch.no_grad():
        head = task(one, two)
        pixel = linear(change_pixels(one, two))
    assert torch.allclose(head, pixel, atol=1e-4)  # the rest of the head starts at 0
    masks = torch.stack([s["mask"] for s in val])
    metrics = TaskMetrics(task.task_card)
    metrics.update(head, masks)
    assert metrics.compute()["change_f1"] > 0.5  # |d1 - d2| finds the pasted patches
