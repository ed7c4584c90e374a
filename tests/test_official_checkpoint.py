"""Official DINOv3 checkpoints (Meta's key layout) load into dinogeo backbones.

The fake checkpoints come from tests/data/checkpoints/data.py, built from the spec's key layout.
Loaded models are compared with an independent re-implementation of the spec's forward pass
(section 1: patch conv, [cls, 4 storage, patches], pre-norm blocks with LayerScale, masked k
bias, RoPE on patch tokens only with rotate-half, final norm), so the test checks both that
every tensor landed and that it is used the way Meta's model uses it.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dinogeo.errors import CheckpointError
from dinogeo.models import create_backbone, load_official_dinov3

_spec = importlib.util.spec_from_file_location(
    "checkpoint_fixtures", Path(__file__).parent / "data" / "checkpoints" / "data.py"
)
fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixtures)


def _rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def meta_reference_forward(state, x, num_heads, num_storage=4):
    """The spec's DINOv3 forward pass, written from the spec, on a Meta state dict."""
    dim = state["cls_token"].shape[-1]
    head_dim = dim // num_heads
    tokens = F.conv2d(
        x, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=16
    )
    batch, _, h, w = tokens.shape
    tokens = tokens.flatten(2).transpose(1, 2)
    prefix = 1 + num_storage
    tokens = torch.cat(
        [
            state["cls_token"].expand(batch, -1, -1),
            state["storage_tokens"].expand(batch, -1, -1),
            tokens,
        ],
        dim=1,
    )
    # RoPE: periods 100^(4i/D_head); patch centres normalised by H and W to [-1, 1]
    periods = 100.0 ** (4 * torch.arange(head_dim // 4, dtype=torch.float32) / head_dim)
    ch = (torch.arange(h, dtype=torch.float32) + 0.5) / h * 2 - 1
    cw = (torch.arange(w, dtype=torch.float32) + 0.5) / w * 2 - 1
    coords = torch.stack(torch.meshgrid(ch, cw, indexing="ij"), dim=-1).flatten(0, 1)
    angles = (2 * math.pi * coords[:, :, None] / periods[None, None, :]).flatten(1).tile(2)
    sin, cos = angles.sin(), angles.cos()

    def rope(t):
        return t * cos + _rotate_half(t) * sin

    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    n = tokens.shape[1]
    for i in range(depth):
        p = f"blocks.{i}."
        y = F.layer_norm(tokens, (dim,), state[p + "norm1.weight"], state[p + "norm1.bias"], 1e-5)
        bias = state[p + "attn.qkv.bias"] * state[p + "attn.qkv.bias_mask"]
        qkv = F.linear(y, state[p + "attn.qkv.weight"], bias)
        q, k, v = qkv.reshape(batch, n, 3, num_heads, head_dim).permute(2, 0, 3, 1, 4)
        q = torch.cat([q[:, :, :prefix], rope(q[:, :, prefix:])], dim=2)
        k = torch.cat([k[:, :, :prefix], rope(k[:, :, prefix:])], dim=2)
        attn = (q @ k.transpose(-2, -1) / math.sqrt(head_dim)).softmax(-1) @ v
        attn = attn.transpose(1, 2).reshape(batch, n, dim)
        attn = F.linear(attn, state[p + "attn.proj.weight"], state[p + "attn.proj.bias"])
        tokens = tokens + state[p + "ls1.gamma"] * attn
        y = F.layer_norm(tokens, (dim,), state[p + "norm2.weight"], state[p + "norm2.bias"], 1e-5)
        y = F.linear(y, state[p + "mlp.fc1.weight"], state[p + "mlp.fc1.bias"])
        y = F.linear(F.gelu(y), state[p + "mlp.fc2.weight"], state[p + "mlp.fc2.bias"])
        tokens = tokens + state[p + "ls2.gamma"] * y
    tokens = F.layer_norm(tokens, (dim,), state["norm.weight"], state["norm.bias"], 1e-5)
    return tokens[:, 0], tokens[:, 1:prefix], tokens[:, prefix:]


def _check_landed(backbone, state, depth):
    vit = backbone.vit
    dim = backbone.embed_dim
    assert torch.equal(vit.cls_token, state["cls_token"])
    assert torch.equal(vit.reg_token, state["storage_tokens"])
    assert torch.equal(backbone.mask_token, state["mask_token"].reshape(1, dim))
    assert torch.equal(vit.patch_embed.proj.weight, state["patch_embed.proj.weight"])
    assert torch.equal(vit.norm.weight, state["norm.weight"])
    for i in range(depth):
        blk, p = vit.blocks[i], f"blocks.{i}."
        qkv_bias = state[p + "attn.qkv.bias"]
        assert torch.equal(blk.attn.qkv.weight, state[p + "attn.qkv.weight"])
        assert torch.equal(blk.attn.q_bias, qkv_bias[:dim])
        assert torch.equal(blk.attn.v_bias, qkv_bias[2 * dim :])
        assert torch.count_nonzero(blk.attn.k_bias) == 0  # Meta masks the k bias
        assert torch.equal(blk.gamma_1, state[p + "ls1.gamma"])
        assert torch.equal(blk.gamma_2, state[p + "ls2.gamma"])
        assert torch.equal(blk.mlp.fc2.weight, state[p + "mlp.fc2.weight"])
        assert torch.equal(blk.norm1.bias, state[p + "norm1.bias"])


@pytest.mark.parametrize(
    ("arch", "size"),
    [("vit_test_patch16_dinov3", (48, 64)), ("vit_small_patch16_dinov3_qkvb", (32, 32))],
)
def test_meta_layout_loads_and_matches_reference(tmp_path, arch, size):
    path = tmp_path / "dinov3.pth"
    state = fixtures.write_meta_checkpoint(path, arch)
    backbone = load_official_dinov3(path, arch)
    width, depth, heads = fixtures.ARCH_SHAPES[arch]
    assert (backbone.embed_dim, backbone.depth, backbone.in_chans) == (width, depth, 3)
    assert not backbone.training
    _check_landed(backbone, state, depth)

    torch.manual_seed(0)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        out = backbone.forward_features(x)
        cls, regs, patches = meta_reference_forward(state, x, heads)
    assert torch.allclose(out["x_norm_clstoken"], cls, atol=1e-4, rtol=1e-4)
    assert torch.allclose(out["x_norm_regtokens"], regs, atol=1e-4, rtol=1e-4)
    assert torch.allclose(out["x_norm_patchtokens"], patches, atol=1e-4, rtol=1e-4)


def test_training_checkpoint_and_local_cls_norm(tmp_path):
    """The 7B / SAT ViT-L ``local_cls_norm`` is kept, survives a save/load round trip, and in
    train mode normalises the cls and register tokens of local crops (patch tokens and eval
    mode use the final norm), as Meta's ``untie_global_and_local_cls_norm``."""
    path = tmp_path / "teacher.pth"
    state = fixtures.write_meta_checkpoint(path, training_format=True, local_cls_norm=True, seed=1)
    backbone = load_official_dinov3(path, "vit_test_patch16_dinov3")
    _check_landed(backbone, state, 4)
    local = backbone.local_cls_norm
    assert local is not None and backbone.config["local_cls_norm"] is True
    assert torch.equal(local.weight, state["local_cls_norm.weight"])
    assert torch.equal(local.bias, state["local_cls_norm.bias"])
    assert not torch.equal(local.weight, backbone.vit.norm.weight)

    x = torch.randn(2, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    backbone.train()
    with torch.no_grad():  # same seed: the same RoPE rescaling draw in both train-mode passes
        torch.manual_seed(0)
        plain = backbone.forward_features(x)
        torch.manual_seed(0)
        crops = backbone.forward_features(x, local_crops=True)
    torch.testing.assert_close(crops["x_norm_patchtokens"], plain["x_norm_patchtokens"])
    # both are LayerNorms of the same pre-norm tokens: undo one affine map, apply the other
    norm = backbone.vit.norm
    for key in ("x_norm_clstoken", "x_norm_regtokens"):
        expected = (plain[key] - norm.bias) / norm.weight * local.weight + local.bias
        torch.testing.assert_close(crops[key], expected, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(crops[key], plain[key], atol=1e-3)
    backbone.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            backbone.forward_features(x, local_crops=True)["x_norm_clstoken"],
            backbone.forward_features(x)["x_norm_clstoken"],
        )

    from dinogeo.models.backbone_file import load_backbone, save_backbone
    from dinogeo.models.card import WeightCard

    out = tmp_path / "kept.safetensors"
    card = WeightCard(
        arch=backbone.arch, patch_size=16, embed_dim=64, band_names=["red", "green", "blue"],
        sensor="rgb", mean=[0.4, 0.4, 0.3], std=[0.2, 0.2, 0.2],
    )  # fmt: skip
    save_backbone(out, backbone, card)
    reloaded, _ = load_backbone(out)
    assert reloaded.local_cls_norm is not None
    assert torch.equal(reloaded.local_cls_norm.weight, local.weight)


def test_band_expansion_keeps_rgb_response(tmp_path):
    path = tmp_path / "dinov3.pth"
    state = fixtures.write_meta_checkpoint(path)
    rgb = load_official_dinov3(path, "vit_test_patch16_dinov3")
    s2 = load_official_dinov3(
        path, "vit_test_patch16_dinov3", band_names=["B02", "B03", "B04", "B08"]
    )
    assert s2.in_chans == 4
    w_rgb = state["patch_embed.proj.weight"]
    w_s2 = s2.vit.patch_embed.proj.weight
    # Sentinel-2 B04/B03/B02 are red/green/blue: they keep those filters (times 3/C)
    for s2_index, rgb_index in [(2, 0), (1, 1), (0, 2)]:
        assert torch.allclose(w_s2[:, s2_index], w_rgb[:, rgb_index] * 0.75)
    assert torch.allclose(w_s2[:, 3], w_rgb.mean(dim=1) * 0.75)  # NIR: the mean filter
    # grey input gives the same patch embedding (and so the same features)
    grey = torch.rand(1, 1, 32, 48)
    with torch.no_grad():
        a = rgb.vit.patch_embed(grey.expand(-1, 3, -1, -1))
        b = s2.vit.patch_embed(grey.expand(-1, 4, -1, -1))
        assert torch.allclose(a, b, atol=1e-5)
        assert torch.allclose(
            rgb(grey.expand(-1, 3, -1, -1)), s2(grey.expand(-1, 4, -1, -1)), atol=1e-4
        )
    assert torch.equal(s2.mask_token, rgb.mask_token)


def test_official_errors(tmp_path):
    path = tmp_path / "dinov3.pth"
    fixtures.write_meta_checkpoint(path)
    with pytest.raises(CheckpointError, match="use arch=vit_test_patch16_dinov3"):
        load_official_dinov3(path, "vit_small_patch16_dinov3_qkvb")
    with pytest.raises(CheckpointError, match="unknown architecture"):
        load_official_dinov3(path, "vit_small_patch16_dinov3")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_official_dinov3(tmp_path / "nope.pth", "vit_test_patch16_dinov3")
    other = tmp_path / "other.pth"
    torch.save(create_backbone("vit_test_patch16_dinov3").state_dict(), other)
    with pytest.raises(CheckpointError, match="not a DINOv3 backbone checkpoint in Meta's layout"):
        load_official_dinov3(other, "vit_test_patch16_dinov3")
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="cannot be loaded safely|not a readable"):
        load_official_dinov3(broken, "vit_test_patch16_dinov3")
