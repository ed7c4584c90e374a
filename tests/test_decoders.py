"""Tests for dinogeo.models.decoders (linear and DPT heads)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dinogeo.errors import ConfigError
from dinogeo.models import DPTDecoder, LinearDecoder, create_backbone, dpt_layer_indices


def test_layer_indices():
    assert dpt_layer_indices(24) == [5, 11, 17, 23]  # the spec's ViT-L layers
    assert dpt_layer_indices(12) == [2, 5, 8, 11]
    assert dpt_layer_indices(32) == [7, 15, 23, 31]
    assert dpt_layer_indices(4) == [0, 1, 2, 3]
    with pytest.raises(ConfigError):
        dpt_layer_indices(3)


@pytest.mark.parametrize(("h", "w"), [(1, 1), (2, 3), (5, 4)])
def test_linear_shapes_and_equivalence(h, w):
    torch.manual_seed(0)
    dec = LinearDecoder(32, 5, patch_size=16).eval()
    feat = torch.randn(2, 32, h, w)
    out = dec([torch.randn(2, 32, h, w), feat])  # only the last map is used
    assert out.shape == (2, 5, 16 * h, 16 * w)
    # upsampling logits equals classifying upsampled features (linear maps commute)
    up = F.interpolate(feat, size=(16 * h, 16 * w), mode="bilinear", align_corners=False)
    assert torch.allclose(out, dec.classifier(up), atol=1e-5)
    assert dec([feat], size=(20, 24)).shape == (2, 5, 20, 24)


def test_linear_batchnorm_and_gradients():
    dec = LinearDecoder(16, 3, batch_norm=True, dropout=0.1)
    feat = torch.randn(4, 16, 2, 2, requires_grad=True)
    dec([feat]).square().mean().backward()
    assert feat.grad is not None and feat.grad.abs().sum() > 0
    assert dec.classifier.weight.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match=r"expects \(B, 16, h, w\)"):
        dec([torch.randn(1, 8, 2, 2)])


@pytest.mark.parametrize(("h", "w"), [(1, 1), (2, 2), (3, 5), (4, 4)])
def test_dpt_shapes(h, w):
    dec = DPTDecoder(64, [0, 1, 2, 3], 7, features=16)
    feats = [torch.randn(2, 64, h, w) for _ in range(4)]
    assert dec(feats).shape == (2, 7, 16 * h, 16 * w)
    assert dec(feats, size=(17, 23)).shape == (2, 7, 17, 23)


def test_dpt_uses_every_layer_and_trains():
    torch.manual_seed(0)
    dec = DPTDecoder(32, [2, 5, 8, 11], 2, features=16, batch_norm=True, dropout=0.1)
    feats = [torch.randn(2, 32, 3, 3, requires_grad=True) for _ in range(4)]
    loss = dec(feats).square().mean()
    loss.backward()
    for f in feats:  # every layer contributes to the output
        assert f.grad is not None and f.grad.abs().sum() > 0
    assert all(p.grad is not None for p in dec.parameters() if p.requires_grad)
    # a few steps reduce a simple regression loss
    target = torch.rand(2, 2, 48, 48)
    inputs = [f.detach() for f in feats]
    opt = torch.optim.Adam(dec.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        step_loss = F.mse_loss(dec(inputs), target)
        step_loss.backward()
        opt.step()
        losses.append(step_loss.item())
    assert losses[-1] < 0.5 * losses[0]
    with pytest.raises(ConfigError, match="needs 4 layer indices"):
        DPTDecoder(32, [1, 2], 2)
    with pytest.raises(ConfigError, match="needs 4 feature map"):
        dec(inputs[:3])


@pytest.mark.parametrize("decoder", ["linear", "dpt"])
def test_tiny_backbone_end_to_end(decoder):
    torch.manual_seed(0)
    backbone = create_backbone("vit_test_patch16_dinov3", in_chans=5).eval()
    layers = dpt_layer_indices(backbone.depth)
    if decoder == "dpt":
        head = DPTDecoder(backbone.embed_dim, layers, 3, features=16)
    else:
        head = LinearDecoder(backbone.embed_dim, 3)
    for size in [(32, 32), (48, 80)]:
        x = torch.randn(2, 5, *size)
        with torch.no_grad():
            feats = backbone.get_intermediate_layers(x, layers)
        out = head(feats)
        assert out.shape == (2, 3, *size)
        assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in head.parameters())


def test_dpt_pyramid_stays_at_pixel_resolution_for_small_patches():
    from dinogeo.models.decoders import dpt_scales

    assert dpt_scales(16) == [4, 2, 1, 0.5]  # DPT's own, unchanged for ViT-S/16 .. ViT-7B
    assert dpt_scales(8) == [4, 2, 1, 0.5]
    assert dpt_scales(2) == [1, 0.5, 0.25, 0.125]
    # patch 16 keeps DPT's modules (bundles written before still load)
    kinds = [type(m).__name__ for m in DPTDecoder(64, [0, 1, 2, 3], 3, patch_size=16).resample]
    assert kinds == ["ConvTranspose2d", "ConvTranspose2d", "Identity", "Conv2d"]
    # patch 2 (the probe backbone): the finest fused map is at pixel resolution, not 4x above it
    dec = DPTDecoder(32, [0, 1, 2, 3], 3, features=8, patch_size=2)
    seen = []
    hook = dec.fusion[0].register_forward_hook(lambda m, i, o: seen.append(o.shape[-2:]))
    out = dec([torch.randn(1, 32, 16, 16) for _ in range(4)])
    hook.remove()
    assert out.shape == (1, 3, 32, 32) and tuple(seen[0]) == (32, 32)
