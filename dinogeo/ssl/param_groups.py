"""Optimiser parameter groups and gradient utilities.

Layer-wise learning-rate decay, the patch-embedding multiplier, no weight decay on
biases/norms/LayerScale and last-layer freezing (per-module clipping: :mod:`dinogeo.ssl.grad_clip`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from dinogeo.errors import ConfigError

__all__ = [
    "apply_optim_values",
    "build_param_groups",
    "cancel_last_layer_gradients",
    "layer_id",
]

_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")
_LAYER0 = (
    "patch_embed",
    "cls_token",
    "reg_token",
    "storage_tokens",
    "register_tokens",
    "mask_token",
    "pos_embed",
)


def layer_id(name: str, n_blocks: int) -> int:
    """Depth of a parameter for layer-wise decay.

    Patch embedding and learned tokens are layer 0, ``blocks.i`` is layer ``i + 1``,
    anything else (final norm, heads) is layer ``n_blocks + 1``.

    Args:
        name: Fully qualified parameter name (any prefix, e.g. ``student.backbone.``).
        n_blocks: Number of transformer blocks L.

    Returns:
        The layer index in ``[0, n_blocks + 1]``.
    """
    parts = name.split(".")
    if any(part in _LAYER0 for part in parts):
        return 0
    match = _BLOCK.search(name)
    if match:
        return min(int(match.group(1)) + 1, n_blocks + 1)
    return n_blocks + 1


def _no_weight_decay(name: str) -> bool:
    parts = name.split(".")
    leaf = parts[-1]
    if leaf.endswith("bias"):  # bias, q_bias, v_bias (timm Eva)
        return True
    if "gamma" in leaf:  # LayerScale: ls1.gamma (Meta), gamma_1 (timm Eva)
        return True
    return any("norm" in part for part in parts[:-1])  # norm1, norm, local_cls_norm, fc_norm


def build_param_groups(
    named_params: Iterable[tuple[str, nn.Parameter]],
    *,
    n_blocks: int,
    layer_decay: float,
    patch_embed_lr_mult: float = 0.2,
    base_lr: float | None = None,
    weight_decay: float | None = None,
    head_wd_multiplier: float = 1.0,
    skip_frozen: bool = True,
) -> list[dict[str, Any]]:
    """Group parameters by learning-rate and weight-decay multipliers (DINOv3 param groups).

    * ``lr_multiplier = layer_decay ** (n_blocks + 1 - layer_id)``, times
      ``patch_embed_lr_mult`` for the patch embedding;
    * ``wd_multiplier = 0`` for biases, norm parameters and LayerScale gammas (learned
      tokens are decayed), ``head_wd_multiplier`` for parameters under ``*_head``;
    * ``is_last_layer`` marks the heads' prototype layers (frozen at the start).

    Parameters with identical ``(lr_multiplier, wd_multiplier, is_last_layer)`` share a group.
    Set each step's values with :func:`apply_optim_values`.

    Args:
        named_params: ``module.named_parameters()`` (any prefixes).
        n_blocks: Number of backbone blocks L.
        layer_decay: Layer-wise decay (0.9 cfg, 0.98 7B, 1.0 disables).
        patch_embed_lr_mult: Learning-rate factor of the patch embedding (0.2).
        base_lr: If given, each group's initial ``lr`` is ``base_lr * lr_multiplier``.
        weight_decay: If given, each group's initial ``weight_decay`` is ``wd * wd_multiplier``.
        head_wd_multiplier: Weight-decay factor for head parameters (1.0 in the recipe).
        skip_frozen: Leave out parameters with ``requires_grad=False``.

    Returns:
        Optimiser param groups: dicts with ``params``, ``names``, ``lr_multiplier``,
        ``wd_multiplier``, ``is_last_layer`` (and ``lr``/``weight_decay`` when given).
    """
    if n_blocks < 0 or not 0.0 < layer_decay <= 1.0:
        raise ConfigError(
            f"build_param_groups: need n_blocks >= 0 and 0 < layer_decay <= 1, got {n_blocks} "
            f"and {layer_decay}."
        )
    groups: dict[tuple[float, float, bool], dict[str, Any]] = {}
    seen: set[int] = set()
    for name, param in named_params:
        if (skip_frozen and not param.requires_grad) or id(param) in seen:
            continue
        seen.add(id(param))
        lr_mult = layer_decay ** (n_blocks + 1 - layer_id(name, n_blocks))
        if "patch_embed" in name.split("."):
            lr_mult *= patch_embed_lr_mult
        wd_mult = 0.0 if _no_weight_decay(name) else 1.0
        if any(part.endswith("_head") for part in name.split(".")):
            wd_mult *= head_wd_multiplier
        is_last = "last_layer" in name.split(".")
        key = (lr_mult, wd_mult, is_last)
        if key not in groups:
            groups[key] = {
                "params": [],
                "names": [],
                "lr_multiplier": lr_mult,
                "wd_multiplier": wd_mult,
                "is_last_layer": is_last,
            }
            if base_lr is not None:
                groups[key]["lr"] = base_lr * lr_mult
            if weight_decay is not None:
                groups[key]["weight_decay"] = weight_decay * wd_mult
        groups[key]["params"].append(param)
        groups[key]["names"].append(name)
    return list(groups.values())


def apply_optim_values(
    optimizer: torch.optim.Optimizer,
    lr: float,
    weight_decay: float,
    last_layer_lr: float | None = None,
) -> None:
    """Write this step's scheduled values into groups made by :func:`build_param_groups`.

    Args:
        optimizer: Optimiser over those groups.
        lr: Scheduled learning rate (multiplied by each group's ``lr_multiplier``).
        weight_decay: Scheduled weight decay (multiplied by ``wd_multiplier``).
        last_layer_lr: Learning rate for ``is_last_layer`` groups (0 while frozen); ``lr``
            if ``None``.
    """
    for group in optimizer.param_groups:
        base = last_layer_lr if (group.get("is_last_layer") and last_layer_lr is not None) else lr
        group["lr"] = base * group.get("lr_multiplier", 1.0)
        group["weight_decay"] = weight_decay * group.get("wd_multiplier", 1.0)


def cancel_last_layer_gradients(
    head: nn.Module, current_epoch_or_step: int, freeze_until: int
) -> None:
    """Drop the gradients of a head's ``last_layer`` while ``current < freeze_until``.

    With the gradient set to ``None`` the optimiser skips the prototypes entirely (no
    update, no weight decay), which freezes them at the start of training.

    Args:
        head: A :class:`~dinogeo.ssl.dino_head.DINOHead` (or a module containing heads).
        current_epoch_or_step: Current epoch or step (same unit as ``freeze_until``).
        freeze_until: First epoch or step at which the prototypes train.
    """
    if current_epoch_or_step >= freeze_until:
        return
    for name, param in head.named_parameters():
        if "last_layer" in name.split("."):
            param.grad = None
