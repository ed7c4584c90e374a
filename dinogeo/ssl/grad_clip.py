"""Per-module gradient clipping by the global norm, also when gradients are FSDP shards.

DINOv3 clips the backbone, the DINO head and the iBOT head separately. Under FSDP each rank holds
a shard of every gradient: the norm of a module is the square root of the sum over ranks of the
squared norms of its local shards, so these are all-reduced and every rank scales its shard by
the same factor, the one a single process computes from the whole gradient. Plain tensors (one
process, or DDP, where gradients are already averaged and equal on every rank) are clipped as
``torch.nn.utils.clip_grad_norm_`` does.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.tensor import DTensor

from dinogeo.errors import ConfigError

__all__ = ["clip_gradients_per_module", "clip_grad_norm_global", "local_shard"]


def local_shard(tensor: Tensor) -> Tensor:
    """This rank's part of ``tensor``: the local shard of a DTensor (a view), else ``tensor``."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def _shard_group(grads: list[Tensor]) -> dist.ProcessGroup | None:
    """The process group the gradients are sharded over, ``None`` if they are whole tensors."""
    for grad in grads:
        if isinstance(grad, DTensor) and any(p.is_shard() for p in grad.placements):
            mesh = grad.device_mesh
            if mesh.ndim != 1:
                raise ConfigError(
                    f"gradient clipping supports FSDP over a 1-D mesh, got a {mesh.ndim}-D mesh "
                    f"{mesh.mesh_dim_names}: shard over the data-parallel dimension only"
                )
            return mesh.get_group()
    return None


@torch.no_grad()
def clip_grad_norm_global(params: Iterable[Tensor], max_norm: float) -> Tensor:
    """Clip the gradients of ``params`` to a total L2 norm of ``max_norm``, over all shards.

    Args:
        params: parameters (plain tensors or FSDP DTensor shards) whose ``.grad`` is clipped.
        max_norm: maximum total norm; ``inf`` only measures it.

    Returns:
        The total norm before clipping (a scalar tensor, the same on every rank), 0 without
        gradients.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    local = [local_shard(g) for g in grads]
    total: Tensor = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(local)).float())
    group = _shard_group(grads)
    if group is not None:
        squared = total.square()
        dist.all_reduce(squared, op=dist.ReduceOp.SUM, group=group)
        total = squared.sqrt()
    if max_norm != float("inf"):
        coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        torch._foreach_mul_(local, coef.to(local[0].device))
    return total


def clip_gradients_per_module(modules: dict[str, nn.Module], max_norm: float) -> dict[str, Tensor]:
    """Clip each module's gradients separately (DINOv3 clips backbone, DINO head, iBOT head).

    Every rank must call it with the same modules when they are FSDP-sharded (it all-reduces).

    Args:
        modules: Name -> module.
        max_norm: Maximum L2 norm per module (3 cfg, 30 7B); ``<= 0`` or ``inf`` only
            measures the norms.

    Returns:
        Name -> total gradient norm before clipping (0 for a module without gradients).
    """
    limit = max_norm if max_norm > 0 else float("inf")
    return {name: clip_grad_norm_global(m.parameters(), limit) for name, m in modules.items()}
