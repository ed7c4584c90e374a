"""FSDP for :class:`~dinogeo.ssl.module.SSLTask`: wrapping policy and strategy defaults.

Each transformer block, each backbone (student, EMA teacher, Gram teacher) and each head becomes
its own FSDP unit. Student and teacher units then have identical layouts, so the teacher EMA and
the Gram-teacher refresh work shard by shard, as in DINOv3 where student and teacher are sharded
the same way. ``use_orig_params=True`` keeps the original parameter names, which the layer-wise
learning-rate decay and the per-module clipping need.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.strategies import FSDPStrategy
from timm.models.eva import EvaBlock
from torch import nn

from dinogeo.models.backbone import Backbone
from dinogeo.ssl.dino_head import DINOHead

__all__ = ["SSLFSDPStrategy", "wrap_policy"]

_UNITS = (EvaBlock, Backbone, DINOHead)


def wrap_policy(module: nn.Module, recurse: bool, nonwrapped_numel: int) -> bool:
    """FSDP ``auto_wrap_policy``: wrap blocks, backbones and heads as separate units.

    Args:
        module: the candidate module.
        recurse: whether FSDP asks if it should descend into ``module``.
        nonwrapped_numel: parameters not yet wrapped below ``module`` (unused).

    Returns:
        True to descend (always) or to wrap ``module`` (blocks, backbones, heads).
    """
    if recurse:
        return True
    return isinstance(module, _UNITS)


class SSLFSDPStrategy(FSDPStrategy):
    """Lightning's ``FSDPStrategy`` with the settings SSL pretraining needs as defaults.

    Args:
        use_orig_params: keep original parameters (layer-wise decay groups, per-module clipping
            and frozen teacher units need them).
        limit_all_gathers: rate-limit all-gathers (lower peak memory).
        **kwargs: any ``FSDPStrategy`` argument; ``auto_wrap_policy`` defaults to
            :func:`wrap_policy`.
    """

    def __init__(
        self, use_orig_params: bool = True, limit_all_gathers: bool = True, **kwargs: Any
    ) -> None:
        kwargs.setdefault("auto_wrap_policy", wrap_policy)
        super().__init__(
            use_orig_params=use_orig_params, limit_all_gathers=limit_all_gathers, **kwargs
        )
