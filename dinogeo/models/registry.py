"""The backbone architectures dinogeo knows: one explicit name -> config dict.

Each entry names the timm DINOv3 model it builds on (``timm_name``) and the keyword overrides
that turn it into the registered variant (``overrides``), plus descriptive fields (width, depth,
heads, feed-forward type) used in messages and documentation. Tiny test variants are plain
overrides of a released model, as timm's ``test_vit`` is.

Use the ``_qkvb`` models: Meta's released S, S+, B, L and H+ checkpoints carry a qkv bias, and
only the ``_qkvb`` variants load it (spec section 1).
"""

from __future__ import annotations

import copy
from typing import Any

from dinogeo.errors import ConfigError

__all__ = ["ARCHS", "get_arch_config", "list_archs"]

ARCHS: dict[str, dict[str, Any]] = {
    # tiny test variant: width 64, depth 4, heads 2, 4 registers, patch 16 (about 0.2M parameters)
    "vit_test_patch16_dinov3": {
        "timm_name": "vit_small_patch16_dinov3_qkvb",
        "overrides": {"embed_dim": 64, "depth": 4, "num_heads": 2},
        "embed_dim": 64,
        "depth": 4,
        "num_heads": 2,
        "ffn": "mlp",
    },
    "vit_tiny_patch16_dinov3_qkvb": {
        "timm_name": "vit_tiny_patch16_dinov3_qkvb",
        "overrides": {},
        "embed_dim": 192,
        "depth": 12,
        "num_heads": 3,
        "ffn": "mlp",
    },
    "vit_small_patch16_dinov3_qkvb": {
        "timm_name": "vit_small_patch16_dinov3_qkvb",
        "overrides": {},
        "embed_dim": 384,
        "depth": 12,
        "num_heads": 6,
        "ffn": "mlp",
    },
    "vit_small_plus_patch16_dinov3_qkvb": {
        "timm_name": "vit_small_plus_patch16_dinov3_qkvb",
        "overrides": {},
        "embed_dim": 384,
        "depth": 12,
        "num_heads": 6,
        "ffn": "swiglu",
    },
    "vit_base_patch16_dinov3_qkvb": {
        "timm_name": "vit_base_patch16_dinov3_qkvb",
        "overrides": {},
        "embed_dim": 768,
        "depth": 12,
        "num_heads": 12,
        "ffn": "mlp",
    },
    "vit_large_patch16_dinov3_qkvb": {
        "timm_name": "vit_large_patch16_dinov3_qkvb",
        "overrides": {},
        "embed_dim": 1024,
        "depth": 24,
        "num_heads": 16,
        "ffn": "mlp",
    },
    "vit_huge_plus_patch16_dinov3_qkvb": {
        "timm_name": "vit_huge_plus_patch16_dinov3_qkvb",
        "overrides": {},
        "embed_dim": 1280,
        "depth": 32,
        "num_heads": 20,
        "ffn": "swiglu",
    },
    # the 7B model has no qkv bias at all, so it uses timm's plain variant
    "vit_7b_patch16_dinov3": {
        "timm_name": "vit_7b_patch16_dinov3",
        "overrides": {},
        "embed_dim": 4096,
        "depth": 40,
        "num_heads": 32,
        "ffn": "swiglu64",
    },
}


def list_archs() -> list[str]:
    """Return the registered architecture names, sorted."""
    return sorted(ARCHS)


def get_arch_config(name: str) -> dict[str, Any]:
    """Return a copy of the config dict of a registered architecture.

    Args:
        name: a registered name such as ``"vit_small_patch16_dinov3_qkvb"`` or the tiny
            ``"vit_test_patch16_dinov3"``.

    Returns:
        A deep copy (safe to modify) with keys ``timm_name``, ``overrides``, ``embed_dim``,
        ``depth``, ``num_heads`` and ``ffn``.

    Raises:
        ConfigError: if the name is not registered; the message lists the valid names.
    """
    if name not in ARCHS:
        hint = ""
        if name + "_qkvb" in ARCHS:
            hint = f" (did you mean {name + '_qkvb'!r}? dinogeo uses the _qkvb variants)"
        raise ConfigError(
            f"unknown backbone architecture {name!r}{hint}: use one of {', '.join(list_archs())}"
        )
    return copy.deepcopy(ARCHS[name])
