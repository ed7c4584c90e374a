"""The frozen Gram teacher of Gram anchoring: where it comes from and when it is refreshed.

The Gram teacher is a head-less copy of the backbone whose patch-token similarity structure the
student is anchored to. It is taken

* from a file (``ckpt``): a dinogeo backbone (``.safetensors``), a Lightning checkpoint of an
  earlier run (its EMA teacher), or an official DINOv3 ``.pth`` (bands expanded by name);
* from the initial weights (continued pretraining: the official backbone itself);
* from the EMA teacher at step ``first_update`` and then every ``update_frequency`` steps, at
  most ``max_updates`` times (the recipe's ``rep_update``; ``max_updates=0`` never refreshes).

Its weights live in the module's state dict (so resumed runs keep the same anchor); a buffer
records whether it has been initialised and how many refreshes happened.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from dinogeo.errors import CheckpointError
from dinogeo.models.backbone import Backbone
from dinogeo.models.init_weights import backbone_file_state
from dinogeo.models.materialise import shared_copy
from dinogeo.ssl.ema import copy_weights
from dinogeo.ssl.gram_loss import resize_token_grid

__all__ = ["GramTeacher", "load_backbone_weights"]


def load_backbone_weights(
    path: str | Path, target: nn.Module, *, band_names: Sequence[str] | None = None
) -> None:
    """Load backbone weights from a file into ``target`` (a :class:`Backbone`).

    Args:
        path: a dinogeo ``.safetensors`` backbone, a Lightning ``.ckpt`` of an SSL run (its EMA
            teacher backbone is used) or an official DINOv3 ``.pth``.
        target: the backbone to fill; architectures must match.
        band_names: band names of the run (official checkpoints are expanded to them).

    Raises:
        CheckpointError: if the file is missing or does not fit the backbone.
    """
    src = Path(path)
    if not src.is_file():
        raise CheckpointError(f"{src}: Gram teacher checkpoint not found; fix gram.ckpt")
    arch = str(getattr(target, "arch", ""))
    state = backbone_file_state(src, arch, band_names=band_names)
    add_norm = getattr(target, "add_local_cls_norm", None)
    if callable(add_norm) and any(k.startswith("local_cls_norm.") for k in state):
        add_norm()  # the 7B / SAT ViT-L norm of local crops' cls tokens: kept for training
    try:
        target.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"{src}: weights do not fit the {arch!r} backbone with {getattr(target, 'in_chans', '?')} "
            f"bands ({err}); use a checkpoint of the same architecture and bands"
        ) from err


class GramTeacher(nn.Module):
    """A frozen backbone copy plus its refresh policy.

    Args:
        template: a backbone with the student's architecture (copied, then frozen).
        first_update: first step (0-based, counted as ``step + 1`` like the recipe) at which the
            EMA teacher is copied in; ``-1`` never copies from the EMA teacher.
        update_frequency: steps between refreshes after the first copy.
        max_updates: maximum number of copies from the EMA teacher.
        share: start as a :func:`~dinogeo.models.materialise.shared_copy` of ``template`` (same
            storage, no copy: the Gram teacher starts from the initial weights) instead of a
            deep copy; the owner must :func:`~dinogeo.models.materialise.unshare` it before
            either changes.
    """

    initialised: Tensor
    num_updates: Tensor

    def __init__(
        self,
        template: Backbone,
        first_update: int = -1,
        update_frequency: int = 10_000,
        max_updates: int = 3,
        *,
        share: bool = False,
    ) -> None:
        super().__init__()
        self.backbone: Backbone = shared_copy(template) if share else copy.deepcopy(template)
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        self.first_update = first_update
        self.update_frequency = max(1, update_frequency)
        self.max_updates = max_updates
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def train(self, mode: bool = True) -> GramTeacher:
        """Keep the frozen backbone in eval mode whatever the parent's mode."""
        super().train(mode)
        self.backbone.eval()
        return self

    @property
    def ready(self) -> bool:
        """Whether the teacher holds weights (from a file, the initial weights or the EMA)."""
        return bool(self.initialised)

    @torch.no_grad()
    def copy_from(self, source: nn.Module) -> None:
        """Hard-copy ``source``'s weights (the EMA teacher backbone or the initial weights).

        See :func:`~dinogeo.ssl.ema.copy_weights` (also on FSDP shards; tensors already shared
        with the source are left as they are).
        """
        copy_weights(self.backbone, source)
        self.initialised.fill_(True)

    def load_file(self, path: str | Path, band_names: Sequence[str] | None = None) -> None:
        """Load the teacher from a checkpoint file (see :func:`load_backbone_weights`)."""
        load_backbone_weights(path, self.backbone, band_names=band_names)
        self.initialised.fill_(True)

    def mark_loaded(self) -> None:
        """Record that the backbone's weights were filled from outside (a broadcast file load)."""
        self.initialised.fill_(True)

    def should_update(self, step: int) -> bool:
        """Whether the EMA teacher is copied in after optimizer step ``step`` (0-based)."""
        if self.first_update < 0 or int(self.num_updates) >= self.max_updates:
            return False
        it = step + 1
        if it < self.first_update:
            return False
        return it == self.first_update or (it - self.first_update) % self.update_frequency == 0

    @torch.no_grad()
    def maybe_update(self, step: int, ema_backbone: nn.Module) -> bool:
        """Copy the EMA teacher in when the schedule says so; return whether it did."""
        if not self.should_update(step):
            return False
        self.copy_from(ema_backbone)
        self.num_updates += 1
        return True

    @torch.no_grad()
    def patch_tokens(self, gram_crops: Tensor, out_hw: tuple[int, int]) -> Tensor:
        """Patch tokens of the (high-resolution) Gram crops resized to the student grid.

        Args:
            gram_crops: ``(N, C, H_g, W_g)`` crops (2x the global size in the recipe).
            out_hw: the student's patch grid ``(h, w)``.

        Returns:
            ``(N, h*w, D)`` tokens, bicubic-resampled on their grid (normalised later by the loss).
        """
        patch = self.backbone.patch_size
        grid = (gram_crops.shape[-2] // patch, gram_crops.shape[-1] // patch)
        tokens = self.backbone.forward_features(gram_crops)["x_norm_patchtokens"]
        return resize_token_grid(tokens, grid, out_hw)
