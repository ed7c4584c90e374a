import pytest
import timm
import torch
from torch import nn

from dinogeo.errors import ConfigError
from dinogeo.ssl.dino_head import DINOHead
from dinogeo.ssl.grad_clip import clip_gradients_per_module
from dinogeo.ssl.param_groups import (
    apply_optim_values,
    build_param_groups,
    cancel_last_layer_gradients,
    layer_id,
)


def by_name(groups):
    return {n: g for g in groups for n in g["names"]}


def test_multipliers_by_hand():
    names = [
        "backbone.patch_embed.proj.weight",
        "backbone.patch_embed.proj.bias",
        "backbone.cls_token",
        "backbone.reg_token",
        "backbone.mask_token",
        "backbone.blocks.0.norm1.weight",
        "backbone.blocks.0.attn.qkv.weight",
        "backbone.blocks.0.attn.q_bias",
        "backbone.blocks.0.gamma_1",
        "backbone.blocks.1.ls1.gamma",
        "backbone.blocks.1.mlp.fc1.weight",
        "backbone.norm.weight",
        "dino_head.mlp.0.weight",
        "dino_head.last_layer.weight",
    ]
    params = [(n, nn.Parameter(torch.zeros(2))) for n in names]
    groups = by_name(build_param_groups(params, n_blocks=2, layer_decay=0.5))
    expect = {  # name: (lr multiplier, wd multiplier, last layer)
        "backbone.patch_embed.proj.weight": (0.125 * 0.2, 1.0, False),
        "backbone.patch_embed.proj.bias": (0.125 * 0.2, 0.0, False),
        "backbone.cls_token": (0.125, 1.0, False),  # tokens are decayed
        "backbone.reg_token": (0.125, 1.0, False),
        "backbone.mask_token": (0.125, 1.0, False),
        "backbone.blocks.0.norm1.weight": (0.25, 0.0, False),
        "backbone.blocks.0.attn.qkv.weight": (0.25, 1.0, False),
        "backbone.blocks.0.attn.q_bias": (0.25, 0.0, False),
        "backbone.blocks.0.gamma_1": (0.25, 0.0, False),
        "backbone.blocks.1.ls1.gamma": (0.5, 0.0, False),
        "backbone.blocks.1.mlp.fc1.weight": (0.5, 1.0, False),
        "backbone.norm.weight": (1.0, 0.0, False),
        "dino_head.mlp.0.weight": (1.0, 1.0, False),
        "dino_head.last_layer.weight": (1.0, 1.0, True),
    }
    for name, (lr, wd, last) in expect.items():
        g = groups[name]
        assert (g["lr_multiplier"], g["wd_multiplier"], g["is_last_layer"]) == pytest.approx(
            (lr, wd, last)
        ), name
    # merged by identical multipliers
    assert len({id(g) for g in groups.values()}) == len(set(expect.values()))
    assert layer_id("x.blocks.11.attn.qkv.weight", 12) == 12
    assert layer_id("norm.weight", 12) == 13


def test_real_timm_eva_names():
    model = timm.create_model(
        "vit_small_patch16_dinov3_qkvb",
        pretrained=False,
        embed_dim=32,
        depth=3,
        num_heads=2,
        img_size=32,
    )
    groups = build_param_groups(
        model.named_parameters(prefix="backbone"),
        n_blocks=3,
        layer_decay=0.9,
        base_lr=1.0,
        weight_decay=0.04,
    )
    named = by_name(groups)
    assert len(named) == len(list(model.parameters()))
    for name, g in named.items():
        leaf = name.split(".")[-1]
        if "norm" in name or leaf.endswith("bias") or "gamma" in leaf:
            assert g["wd_multiplier"] == 0.0, name
        else:
            assert g["wd_multiplier"] == 1.0, name
        if ".blocks.2." in name:
            assert g["lr_multiplier"] == pytest.approx(0.9), name
        if "patch_embed" in name:
            assert g["lr_multiplier"] == pytest.approx(0.2 * 0.9**4), name
        assert g["lr"] == pytest.approx(g["lr_multiplier"])
        assert g["weight_decay"] == pytest.approx(0.04 * g["wd_multiplier"])
    opt = torch.optim.AdamW(groups, lr=1.0)
    apply_optim_values(opt, lr=2e-3, weight_decay=0.1, last_layer_lr=0.0)
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(2e-3 * g["lr_multiplier"])
    with pytest.raises(ConfigError):
        build_param_groups([], n_blocks=2, layer_decay=0.0)


def test_last_layer_lr_and_frozen_params():
    head = DINOHead(8, 16, 8, 4)
    head.mlp[0].weight.requires_grad_(False)
    groups = build_param_groups(
        head.named_parameters(prefix="dino_head"), n_blocks=2, layer_decay=0.9
    )
    assert "dino_head.mlp.0.weight" not in by_name(groups)
    opt = torch.optim.AdamW(groups, lr=1.0)
    apply_optim_values(opt, lr=1e-3, weight_decay=0.04, last_layer_lr=0.0)
    for g in opt.param_groups:
        assert g["lr"] == (0.0 if g["is_last_layer"] else pytest.approx(1e-3))


def test_clip_gradients_per_module():
    a, b, c = nn.Linear(4, 4, bias=False), nn.Linear(2, 2, bias=False), nn.Linear(2, 2)
    a.weight.grad = torch.ones(4, 4)  # norm 4
    b.weight.grad = torch.full((2, 2), 0.1)  # norm 0.2
    norms = clip_gradients_per_module({"backbone": a, "dino_head": b, "ibot_head": c}, max_norm=1.0)
    assert norms["backbone"].item() == pytest.approx(4.0)
    assert norms["dino_head"].item() == pytest.approx(0.2)
    assert norms["ibot_head"].item() == 0.0
    assert a.weight.grad.norm().item() == pytest.approx(1.0, rel=1e-4)
    assert b.weight.grad.norm().item() == pytest.approx(0.2)  # below the limit: untouched


def test_cancel_last_layer_gradients():
    head = DINOHead(8, 16, 8, 4)
    head(torch.randn(3, 8)).sum().backward()
    cancel_last_layer_gradients(head, current_epoch_or_step=1, freeze_until=1)
    assert head.last_layer.weight.grad is not None
    cancel_last_layer_gradients(head, current_epoch_or_step=0, freeze_until=1)
    assert head.last_layer.weight.grad is None
    assert head.mlp[0].weight.grad is not None
