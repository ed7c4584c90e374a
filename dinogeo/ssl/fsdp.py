"""FSDP for :class:`~dinogeo.ssl.module.SSLTask`: wrapping policy and strategy defaults.

Each transformer block, each backbone (student, EMA teacher, Gram teacher) and each head becomes
its own FSDP unit. Student and teacher units then have identical layouts, so the teacher EMA and
the Gram-teacher refresh work shard by shard, as in DINOv3 where student and teacher are sharded
the same way. ``use_orig_params=True`` keeps the original parameter names, which the layer-wise
learning-rate decay and the per-module clipping need.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.strategies import FSDPStrategy
from timm.models.eva import EvaBlock
from torch import nn

from dinogeo.errors import CheckpointError
from dinogeo.models.backbone import Backbone
from dinogeo.ssl.dino_head import DINOHead

__all__ = ["SSLFSDPStrategy", "wrap_policy"]

_UNITS = (EvaBlock, Backbone, DINOHead)
_GRAM = "gram_teacher."
_FSDP_PREFIX = "_fsdp_wrapped_module."


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

    def load_checkpoint(
        self, checkpoint_path: str | Path, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Resume as ``FSDPStrategy`` does, also from a checkpoint without a Gram teacher.

        Stage 2 (Gram anchoring) resumes stage 1's checkpoint, which has no Gram-teacher
        weights. FSDP loads the model state inside this method, before the module's
        ``on_load_checkpoint`` hook could fill them in, so for such a checkpoint the load is
        non-strict for the Gram teacher alone (it is then initialised from the EMA teacher at
        start, as without FSDP); every other parameter must be in the checkpoint.

        Args:
            checkpoint_path: the ``.ckpt`` file or sharded checkpoint folder.
            weights_only: passed on to Lightning.

        Returns:
            The checkpoint dictionary, as ``FSDPStrategy.load_checkpoint``.

        Raises:
            CheckpointError: if a non-Gram parameter of the model is missing from the file.
        """
        path = Path(checkpoint_path)
        module = self.lightning_module
        if module is None or getattr(module, "gram_teacher", None) is None or not path.is_file():
            return super().load_checkpoint(checkpoint_path, weights_only=weights_only)
        # mmap: only the key list is read here; Lightning reads the tensors below
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=False)["state_dict"]
        if any(key.startswith(_GRAM) for key in state):
            return super().load_checkpoint(checkpoint_path, weights_only=weights_only)
        names = {name.replace(_FSDP_PREFIX, "") for name, _ in module.named_parameters()}
        missing = sorted(n for n in names if not n.startswith(_GRAM) and n not in state)
        if missing:
            raise CheckpointError(
                f"checkpoint {path} lacks {len(missing)} model parameters (first: {missing[:3]}): "
                "it is not a checkpoint of this model; resume from one written by the same "
                "architecture and heads"
            )
        strict = module.strict_loading
        module.strict_loading = False
        try:
            return super().load_checkpoint(checkpoint_path, weights_only=weights_only)
        finally:
            module.strict_loading = strict
