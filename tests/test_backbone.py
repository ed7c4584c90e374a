"""Tests for dinogeo.models.backbone (timm Eva DINOv3 wrapper)."""

from __future__ import annotations

import pytest
import torch

from dinogeo.errors import BandMismatchError, ConfigError
from dinogeo.models import Backbone, create_backbone, expand_bands, list_archs, select_bands
from dinogeo.models.backbone import BatchSubsetDropPath, empty_backbone
from dinogeo.models.registry import get_arch_config

TEST_ARCH = "vit_test_patch16_dinov3"


def _strong(bb: Backbone) -> Backbone:
    """LayerScale starts at 1e-5; raise it so that the blocks visibly matter."""
    with torch.no_grad():
        for blk in bb.vit.blocks:
            blk.gamma_1.fill_(1.0)
            blk.gamma_2.fill_(1.0)
    return bb


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    torch.manual_seed(0)
    return _strong(create_backbone(TEST_ARCH)).eval()


def test_attributes(backbone):
    assert backbone.embed_dim == 64
    assert backbone.depth == 4
    assert backbone.patch_size == 16
    assert backbone.num_register_tokens == 4
    assert backbone.in_chans == 3
    assert backbone.mask_token.shape == (1, 64)
    assert torch.count_nonzero(backbone.mask_token) == 0
    assert backbone.vit.global_pool == "token"
    assert backbone.vit.num_classes == 0
    assert backbone.vit.blocks[0].attn.num_heads == 2


@pytest.mark.parametrize("size", [(32, 32), (64, 48), (16, 80)])
def test_forward_features_equals_timm(backbone, size):
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        out = backbone.forward_features(x)
        ref = backbone.vit.forward_features(x)
    n = (size[0] // 16) * (size[1] // 16)
    assert out["x_norm_clstoken"].shape == (2, 64)
    assert out["x_norm_regtokens"].shape == (2, 4, 64)
    assert out["x_norm_patchtokens"].shape == (2, n, 64)
    assert torch.equal(out["x_norm_clstoken"], ref[:, 0])
    assert torch.equal(out["x_norm_regtokens"], ref[:, 1:5])
    assert torch.equal(out["x_norm_patchtokens"], ref[:, 5:])
    with torch.no_grad():
        cls = backbone(x)
        timm_cls = backbone.vit(x)  # global_pool='token', num_classes=0 -> cls token
    assert torch.equal(cls, timm_cls)


def test_masks_act_only_through_mask_token(backbone):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 48, 48)
    no_mask = torch.zeros(2, 9, dtype=torch.bool)
    with torch.no_grad():
        plain = backbone.forward_features(x)["x_norm_patchtokens"]
        unmasked = backbone.forward_features(x, masks=no_mask)["x_norm_patchtokens"]
    assert torch.equal(plain, unmasked)

    masks = no_mask.clone()
    masks[0, [0, 4]] = True
    with torch.no_grad():
        masked = backbone.forward_features(x, masks=masks)["x_norm_patchtokens"]
        # a masked patch ignores its pixels: changing them changes nothing
        x2 = x.clone()
        x2[0, :, 0:16, 0:16] += 5.0
        x2[0, :, 16:32, 16:32] -= 3.0
        masked2 = backbone.forward_features(x2, masks=masks)["x_norm_patchtokens"]
        # it equals feeding the mask token as that patch's embedding by hand
        tokens = backbone.vit.patch_embed(x)
        tokens[0, 0, 0] = backbone.mask_token[0]
        tokens[0, 1, 1] = backbone.mask_token[0]
        tokens, rope = backbone.vit._pos_embed(tokens)
        for blk in backbone.vit.blocks:
            tokens = blk(tokens, rope=rope)
        manual = backbone.vit.norm(tokens)[:, 5:]
    assert torch.allclose(masked, masked2, atol=1e-6)
    assert torch.equal(masked, manual)
    assert not torch.allclose(masked[0], plain[0])
    assert torch.equal(masked[1], plain[1])  # the unmasked image is untouched

    # a non-zero mask token changes masked outputs only through the masked positions
    bb = _strong(create_backbone(TEST_ARCH)).eval()
    with torch.no_grad():
        bb.mask_token.fill_(0.5)
        a = bb.forward_features(x, masks=masks)["x_norm_patchtokens"]
        bb.mask_token.zero_()
        b = bb.forward_features(x, masks=masks)["x_norm_patchtokens"]
    assert not torch.allclose(a[0], b[0])
    assert torch.equal(a[1], b[1])


def test_mask_token_gets_gradient(backbone):
    bb = _strong(create_backbone(TEST_ARCH))
    x = torch.randn(1, 3, 32, 32)
    masks = torch.tensor([[True, False, False, True]])
    out = bb.forward_features(x, masks=masks)["x_norm_patchtokens"]
    (out * torch.randn_like(out)).sum().backward()
    assert bb.mask_token.grad is not None and bb.mask_token.grad.abs().sum() > 0


def test_intermediate_layers(backbone):
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        feats = backbone.get_intermediate_layers(x, [3, 0, -3])
        last = backbone.forward_features(x)["x_norm_patchtokens"]
    assert [f.shape for f in feats] == [(2, 64, 4, 2)] * 3
    assert torch.allclose(feats[0].flatten(2).transpose(1, 2), last, atol=1e-6)
    assert torch.equal(feats[1], backbone.get_intermediate_layers(x, [0])[0])
    assert torch.equal(feats[2], backbone.get_intermediate_layers(x, [1])[0])
    with pytest.raises(ConfigError, match="out of range"):
        backbone.get_intermediate_layers(x, [4])


def test_rope_rescale_train_only():
    bb = _strong(create_backbone(TEST_ARCH, rope_rescale_coords=2.0))
    x = torch.randn(1, 3, 32, 32)
    bb.train()
    torch.manual_seed(0)
    a = bb(x)
    torch.manual_seed(1)
    b = bb(x)
    assert not torch.allclose(a, b)  # random RoPE rescale in training
    bb.eval()
    assert torch.equal(bb(x), bb(x))
    off = create_backbone(TEST_ARCH, rope_rescale_coords=None)
    assert off.vit.rope.aug_active is False


def test_drop_path_uniform():
    bb = create_backbone(TEST_ARCH, drop_path_rate=0.2)
    rates = [blk.drop_path1.drop_prob for blk in bb.vit.blocks]
    assert rates == [0.2] * 4
    assert all(isinstance(blk.drop_path2, BatchSubsetDropPath) for blk in bb.vit.blocks)


def test_drop_path_on_a_batch_subset():
    """Exactly max(int(B (1 - p)), 1) samples keep their branch, scaled by B / kept (DINOv3)."""
    drop = BatchSubsetDropPath(0.25)
    branch = torch.ones(8, 3, 4)
    for seed in range(5):
        torch.manual_seed(seed)
        out = drop(branch)
        per_sample = out[:, 0, 0]
        assert int((per_sample == 0).sum()) == 2
        torch.testing.assert_close(per_sample[per_sample > 0], torch.full((6,), 8 / 6))
        assert torch.equal(out, per_sample.view(8, 1, 1).expand_as(out))
    assert float(BatchSubsetDropPath(0.9)(torch.ones(4, 2)).count_nonzero()) == 2  # one sample
    drop.eval()
    assert torch.equal(drop(branch), branch)


def test_rope_augmentation_drawn_per_block(monkeypatch):
    """In train mode every block gets its own RoPE rescaling draw, as in Meta's code."""
    bb = create_backbone(TEST_ARCH, rope_rescale_coords=2.0)
    calls = []
    original = bb.vit.rope.get_embed

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(bb.vit.rope, "get_embed", counting)
    x = torch.randn(2, 3, 32, 32)
    bb.train()
    bb.forward_features(x)
    assert len(calls) == bb.depth
    calls.clear()
    bb.eval()
    bb.forward_features(x)
    assert len(calls) == 1


def test_multiband_and_errors(backbone):
    bb = create_backbone(TEST_ARCH, in_chans=7).eval()
    assert bb.forward_features(torch.randn(1, 7, 32, 32))["x_norm_patchtokens"].shape == (1, 4, 64)
    with pytest.raises(BandMismatchError, match="expects 7 bands"):
        bb(torch.randn(1, 3, 32, 32))
    with pytest.raises(ConfigError, match="multiple of the patch size"):
        backbone(torch.randn(1, 3, 30, 32))
    with pytest.raises(ConfigError, match="masks must have shape"):
        backbone.forward_features(torch.randn(1, 3, 32, 32), masks=torch.zeros(1, 5, dtype=bool))
    with pytest.raises(ConfigError, match="unknown backbone architecture"):
        create_backbone("vit_small_patch16_dinov3")
    with pytest.raises(ConfigError, match="sets"):
        create_backbone(TEST_ARCH, num_classes=10)


def test_grad_checkpointing_same_result():
    torch.manual_seed(0)
    bb = create_backbone(TEST_ARCH)
    x = torch.randn(2, 3, 32, 32)
    bb.eval()
    ref = bb(x)
    ref.sum().backward()
    grad_ref = bb.vit.blocks[0].attn.qkv.weight.grad.clone()
    bb.zero_grad()
    bb.set_grad_checkpointing(True)
    assert bb.grad_checkpointing
    out = bb(x)
    out.sum().backward()
    assert torch.allclose(out, ref)
    assert torch.allclose(bb.vit.blocks[0].attn.qkv.weight.grad, grad_ref, atol=1e-6)


def test_freeze():
    bb = create_backbone(TEST_ARCH)
    bb.freeze(trainable_last_blocks=1)
    trainable = {n for n, p in bb.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("vit.blocks.3.", "vit.norm.")) for n in trainable)
    bb.freeze()
    assert not any(p.requires_grad for p in bb.parameters())
    assert "mask_token" in bb.no_weight_decay()


def test_registry():
    names = list_archs()
    for name in [
        "vit_test_patch16_dinov3",
        "vit_small_patch16_dinov3_qkvb",
        "vit_small_plus_patch16_dinov3_qkvb",
        "vit_base_patch16_dinov3_qkvb",
        "vit_large_patch16_dinov3_qkvb",
        "vit_huge_plus_patch16_dinov3_qkvb",
    ]:
        assert name in names
    cfg = get_arch_config("vit_large_patch16_dinov3_qkvb")
    assert (cfg["embed_dim"], cfg["depth"], cfg["num_heads"]) == (1024, 24, 16)
    cfg["depth"] = 0  # a copy: the registry is untouched
    assert get_arch_config("vit_large_patch16_dinov3_qkvb")["depth"] == 24
    tiny = empty_backbone("vit_tiny_patch16_dinov3_qkvb")
    assert (tiny.embed_dim, tiny.depth, tiny.num_register_tokens) == (192, 12, 4)


# ---------------------------------------------------------------- band adaptation


def test_expand_and_select_bands():
    torch.manual_seed(0)
    rgb = create_backbone(TEST_ARCH).eval()
    w = rgb.vit.patch_embed.proj.weight.detach()
    bands = ["B02", "B03", "B04", "B08", "B11"]
    ms = expand_bands(rgb, bands)
    assert ms.in_chans == 5 and ms.config["in_chans"] == 5 and rgb.in_chans == 3
    w5 = ms.vit.patch_embed.proj.weight.detach()
    assert torch.allclose(w5[:, 2], w[:, 0] * 3 / 5)  # B04 = red
    assert torch.allclose(w5[:, 0], w[:, 2] * 3 / 5)  # B02 = blue
    assert torch.allclose(w5[:, 3], w.mean(1) * 3 / 5)
    assert torch.allclose(w5[:, 4], w.mean(1) * 3 / 5)
    grey = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(
            ms.forward_features(grey.expand(-1, 5, -1, -1))["x_norm_patchtokens"],
            rgb.forward_features(grey.expand(-1, 3, -1, -1))["x_norm_patchtokens"],
            atol=1e-5,
        )
    # selecting red/green/blue back from the expanded model restores the RGB filters
    back = select_bands(ms, bands, ["red", "green", "blue"])
    assert torch.allclose(back.vit.patch_embed.proj.weight, w, atol=1e-6)
    reordered = select_bands(ms, bands, ["B08", "B04"], rescale=False)
    assert torch.equal(reordered.vit.patch_embed.proj.weight[:, 0], w5[:, 3])
    with pytest.raises(BandMismatchError, match=r"\['B12'\] are not among"):
        select_bands(ms, bands, ["B04", "B12"])
    with pytest.raises(ConfigError, match="duplicate"):
        expand_bands(rgb, ["B04", "b04"])


def test_expand_with_sensor_band_aliases():
    from dinogeo.data.sensors import load_sensor

    rgb = create_backbone(TEST_ARCH)
    w = rgb.vit.patch_embed.proj.weight.detach()
    l7 = load_sensor("landsat7_etm")  # B3 is red, B1 blue on Landsat 7: known from aliases only
    ms = expand_bands(rgb, list(l7.bands))
    red = [b.name for b in l7.bands].index("B3")
    blue = [b.name for b in l7.bands].index("B1")
    scale = 3 / len(l7.bands)
    assert torch.allclose(ms.vit.patch_embed.proj.weight[:, red], w[:, 0] * scale)
    assert torch.allclose(ms.vit.patch_embed.proj.weight[:, blue], w[:, 2] * scale)
    # plain strings: B3 is ambiguous across Landsat generations, so it is not guessed...
    plain = expand_bands(rgb, ["B1", "B2", "B3"])
    assert torch.allclose(plain.vit.patch_embed.proj.weight[:, 2], w.mean(1))
    # ...unless the caller says so
    told = expand_bands(rgb, ["B1", "B2", "B3"], aliases={"B3": "red", "B2": "green", "B1": "blue"})
    assert torch.allclose(told.vit.patch_embed.proj.weight, w.flip(1))


def test_real_sentinel2_window_through_expanded_backbone(shared_data):
    import rasterio
    from rasterio.windows import Window

    from dinogeo.data.sensors import load_sensor

    path = (
        shared_data
        / "sentinel2-l1c-virginia-sattestdata"
        / "S2_18SVG_20160112_10m_B02-B03-B04-B08_crop.tif"
    )
    with rasterio.open(path) as src:
        raw = src.read(window=Window(200, 300, 64, 64))
        names = list(src.descriptions)
    sensor = load_sensor("sentinel2_l1c").select(names)  # the file names its bands
    assert sensor.band_names == ("B02", "B03", "B04", "B08")
    assert raw.shape == (4, 64, 64) and raw.std() > 0
    image = torch.from_numpy(sensor.normalize(raw)).unsqueeze(0)
    torch.manual_seed(0)
    backbone = expand_bands(create_backbone(TEST_ARCH), list(sensor.bands)).eval()
    with torch.no_grad():
        out = backbone.forward_features(image)
        feats = backbone.get_intermediate_layers(image, [1, 3])
    assert out["x_norm_patchtokens"].shape == (1, 16, 64)
    assert all(torch.isfinite(v).all() for v in out.values())
    assert [f.shape for f in feats] == [(1, 64, 4, 4)] * 2
    # real texture: patch tokens differ across the window
    assert out["x_norm_patchtokens"][0].std(dim=0).mean() > 1e-3
