"""Teacher exponential moving average with fused foreach kernels, and the hard copy (momentum 0)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dinogeo.errors import ConfigError
from dinogeo.ssl.grad_clip import local_shard

__all__ = ["copy_weights", "ema_update"]


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


@torch.no_grad()
def copy_weights(target: nn.Module, source: nn.Module) -> None:
    """Copy ``source``'s parameters and buffers into ``target`` (the same architecture).

    Parameters are copied shard by shard under FSDP, where both modules have the same local
    layout; ``target`` may hold uninitialised storage (fresh from ``to_empty``). Tensors that already share
    the source's storage (a :func:`~dinogeo.models.materialise.shared_copy`) are left as they are.
    """
    pairs = [
        (mine, theirs)
        for mine, theirs in zip(target.parameters(), source.parameters(), strict=True)
        # FSDP: compare the local shards (a DTensor wrapper has no storage of its own)
        if local_shard(mine).data_ptr() != local_shard(theirs).data_ptr()
    ]
    if pairs:  # a copy, not ``ema_update`` with momentum 0: 0 * NaN of fresh storage is NaN
        torch._foreach_copy_(
            [local_shard(m.detach()) for m, _ in pairs], [local_shard(t.detach()) for _, t in pairs]
        )
    for mine, theirs in zip(target.buffers(), source.buffers(), strict=False):
        if mine.shape == theirs.shape and mine.data_ptr() != theirs.data_ptr():
            mine.copy_(theirs)
