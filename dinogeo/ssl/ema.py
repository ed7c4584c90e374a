"""Teacher exponential moving average with fused foreach kernels."""

from __future__ import annotations

import torch
from torch import Tensor

from dinogeo.errors import ConfigError
from dinogeo.ssl.grad_clip import local_shard

__all__ = ["ema_update"]


@torch.no_grad()
def ema_update(teacher_params: list[Tensor], student_params: list[Tensor], momentum: float) -> None:
    """In place ``teacher <- momentum * teacher + (1 - momentum) * student``.

    Uses ``torch._foreach_mul_`` and ``torch._foreach_add_`` (one fused launch per dtype
    and device instead of one per tensor), as DINOv3's ``update_ema``. ``momentum=0``
    copies the student (the Gram-teacher refresh). FSDP-sharded (DTensor) parameters are
    updated shard by shard; teacher and student must be sharded the same way.

    Args:
        teacher_params: Teacher tensors (updated in place), same order as ``student_params``.
        student_params: Student tensors.
        momentum: EMA momentum in ``[0, 1]`` (0.992 -> 1 or 0.994/0.999 constant in the recipe).
    """
    if len(teacher_params) != len(student_params):
        raise ConfigError(
            f"ema_update: teacher has {len(teacher_params)} tensors and student "
            f"{len(student_params)}; build the teacher as a copy of the student."
        )
    if not 0.0 <= momentum <= 1.0:
        raise ConfigError(f"ema_update: momentum must be in [0, 1], got {momentum}.")
    for t, s in zip(teacher_params, student_params):
        if t.shape != s.shape:
            raise ConfigError(
                f"ema_update: teacher tensor {tuple(t.shape)} does not match student {tuple(s.shape)}."
            )
    if not teacher_params:
        return
    # FSDP: teacher and student are sharded alike, so the update runs on the local shards
    teachers = [local_shard(t.detach()) for t in teacher_params]
    students = [local_shard(s.detach()) for s in student_params]
    torch._foreach_mul_(teachers, momentum)
    torch._foreach_add_(teachers, students, alpha=1.0 - momentum)
