"""Typed option groups of :class:`~dinogeo.ssl.distill_task.DistillTask` (read by jsonargparse).

A YAML config reads ``model.teacher.path: big.safetensors`` and
``model.students: [{name: vits, arch: vit_small_patch16_dinov3_qkvb}]``; the loss, optimiser and
head groups are those of :mod:`dinogeo.ssl.task_config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["StudentConfig", "TeacherConfig"]


@dataclass
class TeacherConfig:
    """The frozen teacher.

    Attributes:
        path: the teacher: a dinogeo backbone (``.safetensors`` with its weight card, no heads)
            or a ``dinogeo pretrain`` Lightning checkpoint (``.ckpt``: its EMA teacher backbone,
            card and DINO/iBOT heads).
        head_warmup_steps: when the file has no heads, fresh DINO/iBOT heads are trained on the
            frozen teacher backbone (DINO + iBOT + KoLeo self-distillation, the backbone never
            changes) for this many steps before the students start; their EMA is the teacher's
            head. Ignored when the file has heads.
        head_momentum: EMA momentum of the warmed-up heads.
    """

    path: str = ""
    head_warmup_steps: int = 200
    head_momentum: float = 0.99


@dataclass
class StudentConfig:
    """One student: a smaller backbone (another width, depth or patch size) with its own heads.

    Attributes:
        name: the student's name (unique; keys its weights, logs and subgroup).
        arch: registered architecture (``dinogeo.models.list_archs()``).
        img_size: nominal image size.
        drop_path_rate: stochastic depth (0 in the recipe's distillation).
        rope_rescale_coords: RoPE coordinate rescaling in training (2 in DINOv3).
        backbone_kwargs: further ``create_backbone`` / timm options (``embed_dim``, ``depth``,
            ``num_heads``, ``patch_size``, ``init_values``...).
        ranks: number of ranks of this student's subgroup in a multi-process run (the students'
            ranks must add up to the world size; ignored on one process, where every student
            trains on the one rank).
        export_path: where to write the student's EMA backbone (``.safetensors`` with a weight
            card recording the teacher) when training ends; ``None`` skips the export.
    """

    name: str = "student"
    arch: str = "vit_small_patch16_dinov3_qkvb"
    img_size: int = 224
    drop_path_rate: float = 0.0
    rope_rescale_coords: float | None = 2.0
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    ranks: int = 1
    export_path: str | None = None
