"""Gram anchoring: match the patch-similarity structure of a frozen Gram teacher."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from dinogeo.errors import ConfigError
from dinogeo.ssl.precision import fp32_region

__all__ = ["gram_loss", "resize_token_grid"]


def gram_loss(
    student_patches: Tensor,
    teacher_patches: Tensor,
    img_level: bool = True,
    remove_neg: bool = False,
    *,
    remove_only_teacher_neg: bool = False,
) -> Tensor:
    """MSE between the Gram matrices of L2-normalised student and teacher patch tokens.

    With ``img_level`` each image has its own ``P x P`` Gram matrix and the loss is
    ``||X_S X_S^T - X_G X_G^T||_F^2 / (B P^2)`` summed over images; otherwise the
    tokens of the whole batch form one ``BP x BP`` matrix. Computed in fp32.

    Args:
        student_patches: Student ``x_norm_patchtokens`` ``(B, P, D)``.
        teacher_patches: Gram-teacher patch tokens ``(B, P, D)`` (already resized to the
            student grid, see :func:`resize_token_grid`).
        img_level: Per-image Gram matrices (the 7B Gram-anchoring config) or batch level.
        remove_neg: Zero negative similarities in both matrices.
        remove_only_teacher_neg: Zero negative teacher similarities, and the student's
            only where both are negative (exclusive with ``remove_neg``).

    Returns:
        Scalar loss.
    """
    if student_patches.shape != teacher_patches.shape or student_patches.dim() != 3:
        raise ConfigError(
            "gram_loss: student and teacher patch tokens must both be (B, P, D), got "
            f"{tuple(student_patches.shape)} and {tuple(teacher_patches.shape)}; resize the "
            "teacher grid with resize_token_grid."
        )
    if remove_neg and remove_only_teacher_neg:
        raise ConfigError("gram_loss: choose remove_neg or remove_only_teacher_neg, not both.")
    student = F.normalize(student_patches.float(), dim=-1)
    teacher = F.normalize(teacher_patches.float(), dim=-1)
    if not img_level:
        student, teacher = student.flatten(0, 1), teacher.flatten(0, 1)
    with fp32_region(student):  # bf16 similarities would drown the Gram differences
        student_sim = student @ student.transpose(-1, -2)
        teacher_sim = teacher @ teacher.transpose(-1, -2)
    if remove_neg:
        student_sim = student_sim.clamp(min=0.0)
        teacher_sim = teacher_sim.clamp(min=0.0)
    elif remove_only_teacher_neg:
        both_negative = (student_sim < 0) & (teacher_sim < 0)
        student_sim = student_sim.masked_fill(both_negative, 0.0)
        teacher_sim = teacher_sim.clamp(min=0.0)
    return F.mse_loss(student_sim, teacher_sim)


def resize_token_grid(
    tokens: Tensor,
    grid_hw: tuple[int, int],
    out_hw: tuple[int, int],
    *,
    mode: str = "bicubic",
    antialias: bool = False,
) -> Tensor:
    """Resample patch tokens on their spatial grid (the Gram teacher's 2x crop trick).

    Args:
        tokens: Patch tokens ``(B, h*w, D)`` in row-major grid order.
        grid_hw: Input grid ``(h, w)``.
        out_hw: Output grid ``(h', w')``.
        mode: Interpolation mode (``bicubic`` in the recipe).
        antialias: Antialiasing when downsampling (off in the recipe).

    Returns:
        Tokens ``(B, h'*w', D)``.
    """
    h, w = grid_hw
    if tokens.dim() != 3 or tokens.shape[1] != h * w:
        raise ConfigError(
            f"resize_token_grid: tokens {tuple(tokens.shape)} do not match grid {grid_hw}."
        )
    if tuple(out_hw) == (h, w):
        return tokens
    batch, _, dim = tokens.shape
    grid = tokens.transpose(1, 2).reshape(batch, dim, h, w)
    dtype = grid.dtype
    align = False if mode in ("linear", "bilinear", "bicubic", "trilinear") else None
    resized = F.interpolate(
        grid.float(), size=tuple(out_hw), mode=mode, align_corners=align, antialias=antialias
    )
    return resized.flatten(2).transpose(1, 2).to(dtype)
