"""Several ranks (``torch.distributed``): pieces are shared out, rank 0 gathers and writes them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from dinogeo.inference.writer import BlockWriter

__all__ = ["gather_and_write", "rank_and_world"]


def rank_and_world() -> tuple[int, int]:
    """Return ``(rank, world size)``; ``(0, 1)`` unless ``torch.distributed`` is initialised."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def gather_and_write(
    items: Iterator[tuple[int, np.ndarray, dict[str, Any]]],
    writer: BlockWriter | None,
    n_todo: int,
    world: int,
) -> None:
    """Every rank computes its pieces; rank 0 gathers them round by round and writes them.

    Args:
        items: this rank's finished ``(index, data, stats)``, in order.
        writer: the writer on rank 0, None on the other ranks.
        n_todo: pieces to compute over all ranks (sets the number of rounds).
        world: number of ranks.
    """
    rounds = -(-n_todo // world) + 1
    it = iter(items)
    for _ in range(rounds):
        item = next(it, None)
        gathered: list[Any] = [None] * world if writer is not None else []
        torch.distributed.gather_object(item, gathered if writer is not None else None, dst=0)
        if writer is not None:
            for got in gathered:
                if got is not None:
                    writer.write(*got)
    torch.distributed.barrier()
