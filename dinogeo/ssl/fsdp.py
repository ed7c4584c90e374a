"""FSDP wrapping policy for :class:`~dinogeo.ssl.module.SSLTask` (used by configs/ssl/fsdp.yaml).

Each transformer block, each backbone (student, EMA teacher, Gram teacher) and each head becomes
its own FSDP unit. Student and teacher units then have identical flat-parameter layouts, so the
teacher EMA and the Gram-teacher refresh work shard by shard (with ``use_orig_params=True``),
as in DINOv3 where student and teacher are sharded the same way.
"""

from __future__ import annotations

from timm.models.eva import EvaBlock
from torch import nn

from dinogeo.models.backbone import Backbone
from dinogeo.ssl.dino_head import DINOHead

__all__ = ["wrap_policy"]

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
