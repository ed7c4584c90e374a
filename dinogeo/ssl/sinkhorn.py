"""Sinkhorn-Knopp centring of teacher prototype scores (DINOv3 / SwAV style)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from dinogeo.errors import ConfigError

__all__ = ["sinkhorn_knopp"]


def _distributed(group: dist.ProcessGroup | None) -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


@torch.no_grad()
def sinkhorn_knopp(
    teacher_output: Tensor,
    teacher_temp: float,
    n_iterations: int = 3,
    n_samples: Tensor | int | None = None,
    *,
    group: dist.ProcessGroup | None = None,
) -> Tensor:
    """Turn teacher prototype scores into balanced soft assignments.

    ``Q = exp(z / T)^T`` is divided by its global sum, then ``n_iterations`` times its
    rows (prototypes, statistics summed over all ranks) are normalised to ``1/K`` and its
    columns (samples) to ``1/B``, where ``B`` is the global number of samples; finally it
    is multiplied by ``B`` so that every sample's assignment sums to 1. The global
    maximum is subtracted before the exponential; this cancels in the first
    normalisation and only avoids overflow at low temperatures.

    Args:
        teacher_output: Teacher scores ``(B_local, K)`` (any float dtype; computed in fp32).
        teacher_temp: Teacher temperature T (0.04 to 0.07 in the recipe).
        n_iterations: Number of row/column normalisation rounds (3 in the recipe).
        n_samples: Global number of rows ``B``. For iBOT pass the all-reduced number of
            masked patches. ``None`` all-reduces the local row count.
        group: Process group for the statistics (default: the default group).

    Returns:
        Assignments ``(B_local, K)`` in fp32 whose rows sum to 1.
    """
    if teacher_output.dim() != 2:
        raise ConfigError(
            f"sinkhorn_knopp: teacher_output must be (B, K), got shape {tuple(teacher_output.shape)}; "
            "flatten the crop dimension first."
        )
    if teacher_temp <= 0:
        raise ConfigError(f"sinkhorn_knopp: teacher_temp must be > 0, got {teacher_temp}.")
    distributed = _distributed(group)
    scores = teacher_output.float()
    n_local, n_protos = scores.shape

    # Global maximum for a stable exponential (empty local batches contribute -inf).
    local_max = scores.max() if scores.numel() else scores.new_tensor(float("-inf"))
    if distributed:
        local_max = local_max.clone()
        dist.all_reduce(local_max, op=dist.ReduceOp.MAX, group=group)
    # (K, B_local); in place: one buffer of K x B fp32, the largest tensor of the step
    q = (scores - local_max).div_(teacher_temp).exp_().t()

    if n_samples is None:
        count = torch.tensor(float(n_local), device=scores.device)
        if distributed:
            dist.all_reduce(count, group=group)
        n_global = count
    else:
        n_global = torch.as_tensor(n_samples, dtype=torch.float32, device=scores.device)

    tiny = torch.finfo(torch.float32).tiny  # guards 0/0 when a prototype's mass underflows
    total = q.sum()
    if distributed:
        dist.all_reduce(total, group=group)
    q /= total.clamp(min=tiny)
    # each round: rows to 1/K, then columns to 1/B (the scalars folded into the sums, so that
    # every normalisation is one pass over the K x B matrix)
    for _ in range(n_iterations):
        row_sums = q.sum(dim=1, keepdim=True)
        if distributed:
            dist.all_reduce(row_sums, group=group)
        q /= row_sums.clamp_(min=tiny) * n_protos
        q /= q.sum(dim=0, keepdim=True).clamp_(min=tiny) * n_global
    q *= n_global
    return q.t()
