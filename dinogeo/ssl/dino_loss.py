"""DINO cross-entropy between student crops and Sinkhorn-Knopp teacher targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinogeo.errors import ConfigError
from dinogeo.ssl.precision import fp32_region

__all__ = ["DINOLoss", "dino_pair_fractions"]


def dino_pair_fractions(
    n_global: int, n_local: int, ignore_diagonal: bool = True
) -> tuple[float, float]:
    """Weights of the local and global DINO terms: their fractions of all crop pairs.

    Local pairs are ``n_local * n_global`` (every local student crop against every
    global teacher crop); global pairs are ``n_global * (n_global - 1)`` when the
    same-view pairs are ignored (``n_global ** 2`` otherwise). With 2 global and 8 local
    crops this gives 16/18 and 2/18 as in the recipe.

    Args:
        n_global: Number of global crops.
        n_local: Number of local crops.
        ignore_diagonal: Whether student-teacher pairs of the same global view are skipped.

    Returns:
        ``(local_fraction, global_fraction)``, summing to 1 (both 0 if there is no pair).
    """
    local_pairs = n_local * n_global
    global_pairs = n_global * (n_global - 1) if ignore_diagonal else n_global * n_global
    total = local_pairs + global_pairs
    if total == 0:
        return 0.0, 0.0
    return local_pairs / total, global_pairs / total


class DINOLoss(nn.Module):
    """Cross-entropy ``-sum_k q_t log softmax(z_s / T_s)`` averaged over crop pairs and images.

    The teacher sees only the global crops; targets come from
    :func:`~dinogeo.ssl.sinkhorn.sinkhorn_knopp`. ``L_local`` averages over all (local
    student, global teacher) pairs, ``L_global`` over global student/teacher pairs of
    different views (``ignore_diagonal``). The total is
    ``f_local * local_weight * L_local + f_global * L_global`` with the pair-count
    fractions of :func:`dino_pair_fractions`.

    Args:
        out_dim: Number of prototypes K (checked against the inputs).
        student_temp: Student temperature (0.1 in the recipe).
    """

    def __init__(self, out_dim: int, student_temp: float = 0.1) -> None:
        super().__init__()
        if student_temp <= 0:
            raise ConfigError(f"DINOLoss: student_temp must be > 0, got {student_temp}.")
        self.out_dim = out_dim
        self.student_temp = student_temp

    def _cross_entropy(self, student: Tensor, teacher: Tensor, ignore_diagonal: bool) -> Tensor:
        # student (S,B,K) logits, teacher (T,B,K) probabilities -> mean over pairs and images.
        n_s, batch, _ = student.shape
        n_t = teacher.shape[0]
        with fp32_region(student):
            log_p = F.log_softmax(student.float() / self.student_temp, dim=-1)
            pair_loss = -torch.einsum("sbk,tbk->st", log_p, teacher.float())  # sum over images
        n_pairs = n_s * n_t
        if ignore_diagonal:
            n_diag = min(n_s, n_t)
            off_diag = 1.0 - torch.eye(n_s, n_t, dtype=pair_loss.dtype, device=pair_loss.device)
            pair_loss = pair_loss * off_diag
            n_pairs -= n_diag
        if n_pairs == 0 or batch == 0:
            return log_p.sum() * 0.0
        return pair_loss.sum() / (n_pairs * batch)

    def forward(
        self,
        student_global: Tensor,
        student_local: Tensor | None,
        teacher_probs: Tensor,
        ignore_diagonal: bool = True,
        *,
        local_weight: float | Tensor = 1.0,
    ) -> dict[str, Tensor]:
        """Compute the DINO loss terms.

        Args:
            student_global: Student logits on the global crops ``(n_g, B, K)``.
            student_local: Student logits on the local crops ``(n_l, B, K)`` or ``None``.
            teacher_probs: Teacher targets on the global crops ``(n_g, B, K)``, rows summing to 1.
            ignore_diagonal: Skip the global pairs where student and teacher see the same view.
            local_weight: Extra factor on the local term (the recipe's ``local_loss_weight_schedule``).

        Returns:
            ``{"dino_local", "dino_global", "dino"}``: the two averages and the weighted total.
        """
        if student_global.dim() != 3 or teacher_probs.dim() != 3:
            raise ConfigError(
                "DINOLoss: student_global and teacher_probs must be (n_crops, B, K), got "
                f"{tuple(student_global.shape)} and {tuple(teacher_probs.shape)}."
            )
        if student_global.shape[1:] != teacher_probs.shape[1:] or (
            student_global.shape[-1] != self.out_dim
        ):
            raise ConfigError(
                f"DINOLoss: shapes {tuple(student_global.shape)} (student) and "
                f"{tuple(teacher_probs.shape)} (teacher) must share (B, K) with K={self.out_dim}."
            )
        n_global = student_global.shape[0]
        n_local = 0 if student_local is None else student_local.shape[0]
        loss_global = self._cross_entropy(student_global, teacher_probs, ignore_diagonal)
        if student_local is not None and n_local > 0:
            if student_local.shape[1:] != teacher_probs.shape[1:]:
                raise ConfigError(
                    f"DINOLoss: student_local {tuple(student_local.shape)} must share (B, K) with "
                    f"the teacher {tuple(teacher_probs.shape)}."
                )
            loss_local = self._cross_entropy(student_local, teacher_probs, ignore_diagonal=False)
        else:
            loss_local = loss_global * 0.0
        f_local, f_global = dino_pair_fractions(n_global, n_local, ignore_diagonal)
        total = f_local * local_weight * loss_local + f_global * loss_global
        return {"dino_local": loss_local, "dino_global": loss_global, "dino": total}
