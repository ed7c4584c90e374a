"""KoLeo (Kozachenko-Leonenko) entropy regulariser on L2-normalised features."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from dinogeo.errors import ConfigError
from dinogeo.ssl.precision import fp32_region

__all__ = [
    "all_gather_with_grad",
    "koleo_group_ranks",
    "koleo_loss",
    "koleo_loss_distributed",
]


class _AllGatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward returns each rank the summed gradient of its rows."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, group: dist.ProcessGroup | None) -> Tensor:
        ctx.group = group
        ctx.rank = dist.get_rank(group)
        ctx.n = x.shape[0]
        chunks = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(chunks, x.contiguous(), group=group)
        return torch.cat(chunks, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        grad = grad.contiguous().clone()
        # all_reduce is supported by every backend (gloo has no reduce_scatter).
        dist.all_reduce(grad, group=ctx.group)
        start = ctx.rank * ctx.n
        return grad[start : start + ctx.n], None


def all_gather_with_grad(x: Tensor, group: dist.ProcessGroup | None = None) -> Tensor:
    """Concatenate ``x`` from all ranks (rank order) keeping the autograd graph.

    The backward pass sums, over all ranks, the gradients that reach each rank's rows and
    returns them to the rank that owns the rows, so that a loss averaged over ranks by
    DDP gets exactly the single-process gradient. All ranks must pass the same shape.

    Args:
        x: Local tensor ``(n, ...)``.
        group: Process group (default group if ``None``).

    Returns:
        ``(world_size * n, ...)``; ``x`` itself when not distributed.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return x
    out: Tensor = _AllGatherWithGrad.apply(x, group)
    return out


def _nearest_neighbour_log_distance(
    queries: Tensor, candidates: Tensor, self_index: Tensor, eps: float
) -> Tensor:
    # queries (n,D) and candidates (m,D) are L2-normalised; self_index (n,) is each query's
    # own row in candidates, excluded from the search.
    with torch.no_grad(), fp32_region(queries):
        dots = queries @ candidates.t()
        dots[torch.arange(queries.shape[0], device=queries.device), self_index] = -2.0
        nearest = dots.argmax(dim=1)
    distances = (queries - candidates[nearest]).norm(p=2, dim=-1)
    return -torch.log(distances + eps)


def koleo_loss(x: Tensor, eps: float = 1e-8) -> Tensor:
    """KoLeo loss on one rank's features: ``-mean_i log(min_j ||x_i - x_j|| + eps)``.

    Features are L2-normalised first; the nearest neighbour is searched among the other
    rows of ``x`` (the recipe applies it per global crop to the student's pre-head
    ``x_norm_clstoken``).

    Args:
        x: Features ``(n, D)`` with ``n >= 2``.
        eps: Added to the distances before the log.

    Returns:
        Scalar loss (fp32).
    """
    if x.dim() != 2 or x.shape[0] < 2:
        raise ConfigError(
            f"koleo_loss: needs (n >= 2, D) features, got shape {tuple(x.shape)}; use a batch "
            "of at least 2 images per rank or koleo_loss_distributed."
        )
    z = F.normalize(x.float(), p=2, dim=-1, eps=eps)
    own = torch.arange(z.shape[0], device=z.device)
    return _nearest_neighbour_log_distance(z, z, own, eps).mean()


def koleo_group_ranks(group_size: int | None, local_batch: int, world_size: int) -> int:
    """Number of consecutive ranks of a distributed KoLeo group of ``group_size`` samples.

    As the recipe's ``koleo_distributed_loss_group_size``, the group is counted in samples (of
    one global crop): 16 in the 7B high-resolution stage, i.e. 2 ranks of 8. ``None`` is the whole
    data-parallel batch.

    Args:
        group_size: samples per nearest-neighbour group, or ``None`` for all ranks.
        local_batch: samples per rank.
        world_size: number of ranks.

    Returns:
        Ranks per group.

    Raises:
        ConfigError: if the group is not a whole number of ranks or does not divide the batch.
    """
    if group_size is None:
        return world_size
    if local_batch < 1 or group_size < local_batch or group_size % local_batch:
        raise ConfigError(
            f"koleo_group_size={group_size} samples must be a multiple of the per-rank batch "
            f"({local_batch} images): set model.loss.koleo_group_size to k x data.batch_size"
        )
    ranks = group_size // local_batch
    if world_size % ranks:
        raise ConfigError(
            f"koleo_group_size={group_size} samples is {ranks} ranks of {local_batch}, which does "
            f"not divide the {world_size} ranks (global batch {world_size * local_batch}): use a "
            "divisor of the global batch"
        )
    return ranks


def koleo_loss_distributed(
    x: Tensor,
    group_size: int | None = None,
    eps: float = 1e-8,
    *,
    group: dist.ProcessGroup | None = None,
) -> Tensor:
    """KoLeo loss with the nearest neighbour searched across ranks.

    Features of all ranks are all-gathered (with gradient, see
    :func:`all_gather_with_grad`); each local row looks for its nearest neighbour among
    the ``group_size`` samples of its group: consecutive ranks' rows, ``group_size / n``
    ranks per group as in the recipe (all ranks when ``None``). The loss is the mean over
    local rows, so its average over ranks equals the KoLeo loss of the gathered batch. Falls
    back to :func:`koleo_loss` when torch.distributed is not initialised.

    Args:
        x: Local features ``(n, D)``; every rank must have the same ``n``.
        group_size: Samples searched together (a multiple of ``n`` dividing the global batch),
            the recipe's ``koleo_distributed_loss_group_size``.
        eps: Added to the distances before the log.
        group: Process group (default group if ``None``).

    Returns:
        Scalar loss (fp32).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return koleo_loss(x, eps=eps)
    if x.dim() != 2:
        raise ConfigError(f"koleo_loss_distributed: needs (n, D) features, got {tuple(x.shape)}.")
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    sizes = torch.tensor([x.shape[0]], device=x.device)
    all_sizes = [torch.zeros_like(sizes) for _ in range(world)]
    dist.all_gather(all_sizes, sizes, group=group)
    if any(int(s.item()) != x.shape[0] for s in all_sizes):
        raise ConfigError(
            "koleo_loss_distributed: every rank needs the same batch size, got "
            f"{[int(s.item()) for s in all_sizes]}; use drop_last=True in the data loader."
        )
    size = koleo_group_ranks(group_size, x.shape[0], world)
    z = F.normalize(x.float(), p=2, dim=-1, eps=eps)
    gathered = all_gather_with_grad(z, group)
    n = z.shape[0]
    first_rank = (rank // size) * size
    candidates = gathered[first_rank * n : (first_rank + size) * n]
    if candidates.shape[0] < 2:
        raise ConfigError("koleo_loss_distributed: needs at least 2 rows per rank group.")
    own = torch.arange(n, device=z.device) + (rank - first_rank) * n
    # The local rows are queried through their gathered copy so that every gradient path
    # (as query and as someone's neighbour) runs through the all-gather.
    queries = candidates[(rank - first_rank) * n : (rank - first_rank + 1) * n]
    return _nearest_neighbour_log_distance(queries, candidates, own, eps).mean()
