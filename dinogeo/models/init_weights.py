"""The starting weights of a backbone from a file, read lazily (memory-mapped where possible).

Continued pretraining and the Gram teacher start from a file: an official DINOv3 ``.pth`` (Meta's
layout, converted and band-expanded by :func:`~dinogeo.models.official.official_backbone_state`),
a dinogeo ``.safetensors`` backbone with its weight card, or a Lightning ``.ckpt`` of an SSL run
(its EMA teacher backbone). :func:`backbone_file_state` returns the backbone state dict without
building a randomly initialised model first. Official ``.pth`` tensors stay memory-mapped, so
:func:`~dinogeo.models.materialise.assign_weights` makes them the weights without a copy; from a
``.ckpt`` only the teacher backbone is read (through a mapping) and copied, since training
overwrites its checkpoint files in place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from torch import Tensor

from dinogeo.errors import CheckpointError
from dinogeo.models.backbone_file import load_backbone
from dinogeo.models.bands import BandSpec
from dinogeo.models.official import official_backbone_state, safe_torch_load

__all__ = ["TEACHER_BACKBONE", "backbone_file_state"]

#: the key prefix of the EMA teacher backbone in a Lightning checkpoint of ``dinogeo pretrain``
TEACHER_BACKBONE = "teacher.backbone."


def backbone_file_state(
    path: str | Path, arch: str, *, band_names: Sequence[BandSpec] | None = None
) -> dict[str, Tensor]:
    """The :class:`~dinogeo.models.backbone.Backbone` state dict a file holds, read lazily.

    Args:
        path: a dinogeo ``.safetensors`` backbone, a Lightning ``.ckpt`` of an SSL run (its EMA
            teacher backbone) or an official DINOv3 ``.pth`` (any other suffix).
        arch: the architecture the weights are for (checked for official checkpoints; the other
            formats are checked when the state is loaded).
        band_names: bands of the run; an official checkpoint's RGB patch embedding is expanded
            to them (the other formats already have the run's bands).

    Raises:
        CheckpointError: if the file is missing, unreadable or not a backbone checkpoint.
    """
    src = Path(path)
    if not src.is_file():
        raise CheckpointError(f"{src}: backbone checkpoint not found; check the path")
    if src.suffix == ".safetensors":
        backbone, _ = load_backbone(src)
        return backbone.state_dict()
    if src.suffix == ".ckpt":
        blob = safe_torch_load(src)
        weights = blob.get("state_dict", {}) if isinstance(blob, Mapping) else {}
        # the teacher's tensors only are read from the mapped file (not the optimizer state),
        # and copied: training overwrites .ckpt files in place, which a mapping would not survive
        state = {
            k[len(TEACHER_BACKBONE) :]: v.clone()
            for k, v in weights.items()
            if k.startswith(TEACHER_BACKBONE)
        }
        if not state:
            raise CheckpointError(
                f"{src}: no '{TEACHER_BACKBONE}*' weights in this Lightning checkpoint; use a "
                "checkpoint written by dinogeo pretrain"
            )
        return state
    return official_backbone_state(src, arch, band_names=band_names)[0]
