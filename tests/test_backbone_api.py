"""The backbone API holds for every registered architecture (as timm tests every model).

Each architecture is built with its own block type (MLP / SwiGLU feed-forward, qkv bias or not,
head width, registers) but two blocks of two heads, so the 7B entry runs on a CPU too:
features, intermediate layers, masks and band expansion.
"""

from __future__ import annotations

import pytest
import torch

from dinogeo.errors import ConfigError
from dinogeo.models import create_backbone, expand_bands, list_archs, select_bands
from dinogeo.models.registry import get_arch_config


def _small(arch: str) -> dict[str, int]:
    spec = get_arch_config(arch)
    head_dim = spec["embed_dim"] // spec["num_heads"]
    return {"depth": 2, "num_heads": 2, "embed_dim": 2 * head_dim}


@pytest.fixture(scope="module", params=list_archs())
def built(request):
    arch = request.param
    torch.manual_seed(0)
    bb = create_backbone(arch, in_chans=3, img_size=64, **_small(arch)).eval()
    with torch.no_grad():  # LayerScale starts near zero: let the blocks matter
        for blk in bb.vit.blocks:
            for name in ("gamma_1", "gamma_2"):
                if isinstance(getattr(blk, name, None), torch.nn.Parameter):
                    getattr(blk, name).fill_(1.0)
    return arch, bb


def test_every_arch_builds_from_the_registry():
    assert len(list_archs()) >= 8 and "vit_7b_patch16_dinov3" in list_archs()
    with pytest.raises(ConfigError):
        create_backbone("not_an_arch")


def test_features_shapes_and_attributes(built):
    arch, bb = built
    dim = _small(arch)["embed_dim"]
    assert bb.embed_dim == dim and bb.patch_size == 16 and bb.in_chans == 3 and bb.depth == 2
    assert bb.mask_token.shape == (1, dim)
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        out = bb.forward_features(x)
        cls = bb(x)
    r = bb.num_register_tokens
    assert out["x_norm_clstoken"].shape == (2, dim)
    assert out["x_norm_regtokens"].shape == (2, r, dim)
    assert out["x_norm_patchtokens"].shape == (2, 6, dim)
    assert torch.equal(cls, out["x_norm_clstoken"])
    assert all(torch.isfinite(v).all() for v in out.values())


def test_intermediate_layers(built):
    _, bb = built
    x = torch.randn(1, 3, 48, 32)
    with torch.no_grad():
        feats = bb.get_intermediate_layers(x, [0, -1])
        last = bb.forward_features(x)["x_norm_patchtokens"]
    assert [f.shape for f in feats] == [(1, bb.embed_dim, 3, 2)] * 2
    assert torch.allclose(feats[1].flatten(2).transpose(1, 2), last, atol=1e-5)
    assert not torch.allclose(feats[0], feats[1])
    with pytest.raises(ConfigError, match="out of range"):
        bb.get_intermediate_layers(x, [2])


def test_masks_replace_patches_by_the_mask_token(built):
    _, bb = built
    torch.manual_seed(1)
    x = torch.randn(2, 3, 32, 32)
    none = torch.zeros(2, 4, dtype=torch.bool)
    masks = none.clone()
    masks[0, 1] = True
    with torch.no_grad():
        plain = bb.forward_features(x)["x_norm_patchtokens"]
        same = bb.forward_features(x, masks=none)["x_norm_patchtokens"]
        masked = bb.forward_features(x, masks=masks)["x_norm_patchtokens"]
        x2 = x.clone()
        x2[0, :, 0:16, 16:32] += 4.0  # the masked patch's pixels do not matter
        masked2 = bb.forward_features(x2, masks=masks)["x_norm_patchtokens"]
    assert torch.equal(plain, same)
    assert not torch.allclose(masked[0], plain[0])
    assert torch.allclose(masked[1], plain[1], atol=1e-6)
    assert torch.allclose(masked, masked2, atol=1e-5)


def test_band_expansion_and_selection(built):
    _, bb = built
    bands = ["B02", "B03", "B04", "B08"]
    ms = expand_bands(bb, bands)
    assert ms.in_chans == 4 and bb.in_chans == 3
    grey = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        a = ms.forward_features(grey.expand(-1, 4, -1, -1))["x_norm_patchtokens"]
        b = bb.forward_features(grey.expand(-1, 3, -1, -1))["x_norm_patchtokens"]
    assert torch.allclose(a, b, atol=1e-4)  # a flat grey image means the same in any bands
    back = select_bands(ms, bands, ["red", "green", "blue"])
    w = bb.vit.patch_embed.proj.weight
    assert torch.allclose(back.vit.patch_embed.proj.weight, w, atol=1e-6)
