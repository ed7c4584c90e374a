"""``feature_linear``: the head contains the linear probe of the frozen backbone and starts there.

With ``pixel_init`` the two linear terms (bands and upsampled features) start at the joint
softmax regression fitted on the training chips (LP-FT: linear probe, then the rest of the head
learns the residual), so an untrained head predicts what a linear probe of the backbone does.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dinogeo.errors import ConfigError
from dinogeo.labels import IGNORE_INDEX
from dinogeo.models.bundle import load_bundle
from dinogeo.models.heads import HeadConfig
from dinogeo.models.onnx_export import export_onnx
from dinogeo.trainers.baselines import fit_softmax_regression
from dinogeo.trainers.canopy_height import CanopyHeightTask
from dinogeo.trainers.land_cover import PROBE_PIXELS
from tests.trainers.conftest import RGB_IMAGERY


def _stack(dataset, every: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    samples = [dataset[i] for i in range(0, len(dataset), every)]
    return torch.stack([s["image"] for s in samples]), torch.stack([s["mask"] for s in samples])


def _upsampled(task, images: torch.Tensor) -> torch.Tensor:
    """(N, F, H, W) decoder-layer features bilinearly upsampled, computed from the backbone."""
    model = task.model
    layers = model.backbone.get_intermediate_layers(images, model.layers)
    tokens = torch.cat(list(layers), dim=1)
    return F.interpolate(tokens, size=images.shape[-2:], mode="bilinear", align_corners=False)


def test_land_cover_head_starts_at_the_joint_probe_on_real_imagery(
    aber_data, make_task, quiet_trainer
):
    data = aber_data(augment=False)
    data.setup("fit")
    task = make_task(feature_linear=True)
    assert task.model.feature_linear is not None
    assert task.model.feature_linear.in_channels == task.model.backbone.embed_dim * 4
    quiet_trainer(0).fit(task, data)  # the fit-start hooks only
    images, masks = _stack(data.train_set, max(1, len(data.train_set) // 64))
    # the joint probe fitted independently on the labelled training pixels of those chips
    with torch.no_grad():
        feats = _upsampled(task, images)
    y = masks.reshape(-1)
    keep = torch.nonzero(y != IGNORE_INDEX).ravel()
    assert len(keep) > PROBE_PIXELS  # the trainer's seeded sample of them
    keep = keep[torch.randperm(len(keep), generator=torch.Generator().manual_seed(0))]
    keep = keep[:PROBE_PIXELS]
    pixels = images.permute(0, 2, 3, 1).reshape(-1, images.shape[1])[keep]
    f = feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1])[keep]
    mean, std = f.mean(0), f.std(0).clamp_min(1e-6)
    joint = fit_softmax_regression(
        torch.cat([pixels, (f - mean) / std], 1).numpy(), y[keep].numpy(), 4, l2=1e-3
    )
    bands_only = fit_softmax_regression(pixels.numpy(), y[keep].numpy(), 4, l2=1e-3)
    vimages, vmasks = _stack(data.val_set)
    task.eval()
    with torch.no_grad():
        head = task(vimages)
        vf = _upsampled(task, vimages).permute(0, 2, 3, 1)
        vx = torch.cat([vimages.permute(0, 2, 3, 1), (vf - mean) / std], dim=-1)
        probe = joint(vx).permute(0, 3, 1, 2)
        # the joint probe fits the training pixels better than the bands alone
        xt = torch.cat([pixels, (f - mean) / std], 1)
        assert F.cross_entropy(joint(xt), y[keep]) < F.cross_entropy(bands_only(pixels), y[keep])
    # equal up to float rounding (the trainer runs the backbone chip by chip, this test batched)
    torch.testing.assert_close(head, probe, atol=1e-2, rtol=1e-2)
    assert (head.argmax(1) == probe.argmax(1)).float().mean() > 0.999


def test_height_head_with_feature_probe_starts_at_its_regression(swiss_data, quiet_trainer):
    data = swiss_data(augment=False, batch_size=4)
    data.setup("fit")
    task = CanopyHeightTask(imagery=RGB_IMAGERY, features=8, feature_linear=True)
    before = [p.clone() for p in task.model.feature_linear.parameters()]
    quiet_trainer(0).fit(task, data)
    weight = task.model.feature_linear.weight
    assert not torch.equal(weight, before[0]) and weight.abs().sum() > 0
    assert task.model.output_layer().weight.abs().sum() == 0  # the rest of the head starts at 0
    vimages, _ = _stack(data.val_set)
    with torch.no_grad():
        heights = task.eval()(vimages)
    assert torch.isfinite(heights).all() and heights.std() > 0


def test_change_heads_refuse_the_feature_probe():
    with pytest.raises(ConfigError, match="feature_linear"):
        HeadConfig(type="change", num_outputs=2, feature_linear=True)


def test_bundle_keeps_the_feature_probe(aber_data, make_task, quiet_trainer, tmp_path):
    data = aber_data(augment=False)
    data.setup("fit")
    path = tmp_path / "probe.safetensors"
    task = make_task(feature_linear=True, bundle_path=str(path))
    quiet_trainer(1).fit(task, data)
    bundle = load_bundle(path)
    assert bundle.head.feature_linear
    images, _ = _stack(data.val_set)
    with torch.no_grad():
        expected = task.eval()(images).softmax(1)
    torch.testing.assert_close(bundle.predict_batch(images), expected, atol=1e-5, rtol=1e-4)
    # and exports to ONNX (onnxruntime checked against torch within 1e-4 by the export)
    result = export_onnx(bundle, tmp_path / "probe.onnx", tile=32, overlap=8)
    assert (tmp_path / "probe.onnx").is_file() and result is not None
