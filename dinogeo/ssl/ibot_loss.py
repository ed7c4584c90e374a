"""iBOT masked-patch loss: student masked tokens against teacher tokens at the same positions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinogeo.errors import ConfigError

__all__ = ["iBOTPatchLoss"]


class iBOTPatchLoss(nn.Module):  # noqa: N801 - the method's name
    """``-(1/n_images) sum_p w_p sum_k q_pk log softmax(s_p / T_s)_k`` over masked patches.

    ``w_p = 1/M_i`` where ``M_i`` is the number of masked patches of the image that patch
    ``p`` belongs to, so every masked image contributes the mean over its masked patches;
    ``n_images`` is the number of global-crop images the masks were drawn over (``2B``
    in the recipe, masked or not; :func:`~dinogeo.ssl.collate.collate_multicrop` returns
    it as ``n_masked_images``).

    Args:
        out_dim: Number of prototypes K (checked against the inputs).
        student_temp: Student temperature (0.1 in the recipe).
    """

    def __init__(self, out_dim: int, student_temp: float = 0.1) -> None:
        super().__init__()
        if student_temp <= 0:
            raise ConfigError(f"iBOTPatchLoss: student_temp must be > 0, got {student_temp}.")
        self.out_dim = out_dim
        self.student_temp = student_temp

    def forward(
        self,
        student_masked_logits: Tensor,
        teacher_probs: Tensor,
        masks_weight: Tensor,
        n_masked_images: int | Tensor,
    ) -> Tensor:
        """Compute the loss.

        Args:
            student_masked_logits: iBOT-head logits of the student's masked tokens ``(M, K)``.
            teacher_probs: Sinkhorn-Knopp targets of the teacher tokens at the same positions
                ``(M, K)``.
            masks_weight: ``1/M_i`` for each masked token ``(M,)``.
            n_masked_images: Normaliser ``n_images`` (the number of global crops, ``2B``).

        Returns:
            Scalar loss (0 with a gradient path when no patch is masked).
        """
        if student_masked_logits.shape != teacher_probs.shape or student_masked_logits.dim() != 2:
            raise ConfigError(
                "iBOTPatchLoss: student and teacher must both be (M, K), got "
                f"{tuple(student_masked_logits.shape)} and {tuple(teacher_probs.shape)}."
            )
        if student_masked_logits.shape[-1] != self.out_dim:
            raise ConfigError(
                f"iBOTPatchLoss: expected K={self.out_dim} prototypes, got "
                f"{student_masked_logits.shape[-1]}."
            )
        if masks_weight.shape != student_masked_logits.shape[:1]:
            raise ConfigError(
                f"iBOTPatchLoss: masks_weight must be ({student_masked_logits.shape[0]},), got "
                f"{tuple(masks_weight.shape)}."
            )
        log_p = F.log_softmax(student_masked_logits.float() / self.student_temp, dim=-1)
        per_token = torch.sum(teacher_probs.float() * log_p, dim=-1)
        n_images = torch.as_tensor(n_masked_images, dtype=torch.float32, device=log_p.device)
        return -(per_token * masks_weight.to(per_token)).sum() / n_images.clamp(min=1.0)
