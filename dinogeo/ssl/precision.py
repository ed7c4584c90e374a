"""fp32 regions inside bf16 autocast for the SSL losses.

Under ``torch.autocast`` matrix products (``@``, ``einsum``) run in bf16 even when their inputs
are fp32. The DINO cross-entropy over K prototypes, the Gram matrices and the KoLeo
nearest-neighbour search are reductions whose values matter to a few parts in 10^4 (a bf16 DINO
loss near ln(65536) moves in steps of 0.06), so they run in fp32 inside :func:`fp32_region`.
The backbones and heads keep bf16, as in the recipe.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

__all__ = ["fp32_region"]


def fp32_region(like: Tensor) -> contextlib.AbstractContextManager[None]:
    """Return a context that turns autocast off on ``like``'s device type.

    Args:
        like: a tensor on the device whose autocast state should be suspended.

    Returns:
        The ``torch.autocast(..., enabled=False)`` context manager.
    """
    return torch.autocast(like.device.type, enabled=False)
