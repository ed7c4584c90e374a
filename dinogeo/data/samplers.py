"""Distributed-aware chip samplers over a list of raster/zarr sources.

Samplers yield :class:`ChipQuery` items (source index + pixel window) that
:class:`dinogeo.data.dataset.ChipDataset` reads. Both samplers:

* shard each epoch across ranks: every rank gets a disjoint, equally long slice of one global
  sequence that all ranks compute identically from ``seed`` and the epoch;
* reshuffle when ``set_epoch(e)`` is called (Lightning calls it at each epoch start);
* take rank and world size from ``torch.distributed`` when it is initialised at iteration time,
  unless given explicitly;
* subclass :class:`torch.utils.data.DistributedSampler`, so Lightning's
  ``use_distributed_sampler=True`` keeps them instead of silently replacing them.

:class:`RandomChipSampler` draws sources weighted by their valid area and rejects candidate chips
whose valid fraction, estimated on each source's coarse valid mask, is below ``min_valid``; the
dataset checks the exact fraction and redraws deterministically with :func:`~dinogeo.data.chips.redraw_chip`.

Coarse valid masks come from :class:`~dinogeo.data.validity.ValidityIndex`: a decimated read of
each source, or its indexed footprint rasterised without opening the file
(:func:`dinogeo.data.index_sources.index_footprints`). Chips are :class:`~dinogeo.data.chips.ChipQuery`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from dinogeo.data.chip_grid import ChipGrid
from dinogeo.data.chips import ChipQuery
from dinogeo.data.source import Source
from dinogeo.data.validity import Footprint, ValidityIndex
from dinogeo.errors import NoValidDataError

__all__ = ["GridChipSampler", "RandomChipSampler"]


def _size2(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    return (int(size[0]), int(size[1]))


def _dist_info(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if world_size is None:
        world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if rank is None:
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside [0, world_size={world_size})")
    return rank, world_size


class _ShardedSampler(DistributedSampler):  # type: ignore[type-arg]
    """Shared epoch and rank handling.

    ``DistributedSampler.__init__`` is not called (it needs a process group at construction);
    the attributes that Lightning and PyTorch read are provided here instead.
    """

    def __init__(self, seed: int, shuffle: bool, rank: int | None, world_size: int | None) -> None:
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0
        self.drop_last = False
        self._rank = rank
        self._world_size = world_size

    @property
    def rank(self) -> int:
        """This process's rank (explicit, else from torch.distributed, else 0)."""
        return _dist_info(self._rank, self._world_size)[0]

    @rank.setter
    def rank(self, value: int) -> None:
        self._rank = value

    @property
    def num_replicas(self) -> int:
        """The world size (explicit, else from torch.distributed, else 1)."""
        return _dist_info(self._rank, self._world_size)[1]

    @num_replicas.setter
    def num_replicas(self, value: int) -> None:
        self._world_size = value

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: a new epoch gives a new order (and new random chips)."""
        self.epoch = int(epoch)

    def _global(self) -> list[ChipQuery]:
        raise NotImplementedError

    def _global_length(self) -> int:
        raise NotImplementedError

    def __len__(self) -> int:
        return math.ceil(self._global_length() / self.num_replicas)

    def __iter__(self) -> Iterator[ChipQuery]:
        rank, world = _dist_info(self._rank, self._world_size)
        queries = self._global()
        per_rank = math.ceil(len(queries) / world)
        total = per_rank * world
        if total > len(queries):  # pad by repeating from the start so every rank has per_rank
            queries = queries + queries[: total - len(queries)]
        return iter(queries[rank:total:world])


class RandomChipSampler(_ShardedSampler):
    """Random chips weighted by valid area, rejecting chips that are mostly invalid.

    Args:
        sources: the dataset's sources (same order as the dataset).
        size: chip size in pixels (``int`` or ``(height, width)``).
        length: chips per epoch over all ranks (default: the number of non-overlapping chips
            that fit in the valid area of all sources).
        min_valid: candidate chips whose estimated valid fraction is below this are redrawn.
        seed: base seed; the sequence is a function of ``(seed, epoch)`` only.
        rank: this process's rank (default: from torch.distributed at iteration time, else 0).
        world_size: number of ranks (default: from torch.distributed, else 1).
        mask_size: longest side of the coarse valid masks used for weights and pre-checks.
        max_tries: candidates drawn per chip before accepting the best one seen.
        align: draw chip offsets as multiples of this many pixels, or one
            :class:`~dinogeo.data.chip_grid.ChipGrid` per source (from
            :func:`~dinogeo.data.chip_grid.chip_grids`, e.g. snapped to each file's tiles). On
            the storage tile or chunk grid (e.g. 256 for 256-px COG tiles or zarr chunks) each
            chip decodes one tile instead of up to four: several times faster, at the cost of
            chips on a fixed grid (random crops and flips in the augmentation restore position
            diversity). Redraws of rejected chips are not aligned. Default 1: any pixel offset.
        footprints: one :class:`Footprint` or None per source: masks rasterised from them
            instead of read (see :class:`ValidityIndex`).

    Raises:
        NoValidDataError: if no source has any valid pixel.
    """

    def __init__(
        self,
        sources: Sequence[Source],
        size: int | tuple[int, int],
        length: int | None = None,
        *,
        min_valid: float = 0.5,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        mask_size: int = 64,
        max_tries: int = 50,
        align: int | Sequence[ChipGrid] = 1,
        footprints: Sequence[Footprint | None] | None = None,
    ) -> None:
        super().__init__(seed, True, rank, world_size)
        if not sources:
            raise ValueError("RandomChipSampler needs at least one source")
        self.sources = list(sources)
        if isinstance(align, int):
            if align < 1:
                raise ValueError(f"align={align} must be >= 1 (pixels)")
            self.grids = [ChipGrid(align, align)] * len(self.sources)
        else:
            self.grids = list(align)
            if len(self.grids) != len(self.sources):
                raise ValueError(
                    f"align has {len(self.grids)} chip grids for {len(self.sources)} sources"
                )
        steps = {(g.rows, g.cols) for g in self.grids if not g.snap}
        common = len(steps) == 1 and not any(g.snap for g in self.grids)
        #: the offset step shared by every source, or 0 when chips snap to tiles or steps differ
        self.align = next(iter(steps))[0] if common else 0
        self.size = _size2(size)
        self.min_valid = float(min_valid)
        self.max_tries = int(max_tries)
        self.validity = ValidityIndex(self.sources, mask_size, footprints)
        weights = np.array([self.validity.valid_pixels(i) for i in range(len(self.sources))])
        if weights.sum() <= 0:
            names = ", ".join(str(getattr(s, "path", i)) for i, s in enumerate(self.sources[:5]))
            raise NoValidDataError(
                f"no valid pixels in any of the {len(self.sources)} sources ({names}...): check "
                "their nodata value, alpha band or mask, or pass other files"
            )
        self.weights = weights / weights.sum()
        chip_area = self.size[0] * self.size[1]
        self.length = int(length) if length is not None else max(1, int(weights.sum() // chip_area))

    def _global_length(self) -> int:
        return self.length

    def _global(self) -> list[ChipQuery]:
        rng = np.random.default_rng([self.seed, self.epoch])
        srcs = rng.choice(len(self.sources), size=self.length, p=self.weights)
        out = []
        for i in srcs:
            best_frac, best = -1.0, ChipQuery(int(i), 0, 0, self.size[0], self.size[1])
            for _ in range(self.max_tries):
                row, col = self.grids[i].position(rng, self.validity.shapes[i], self.size)
                q = ChipQuery(int(i), row, col, self.size[0], self.size[1])
                frac = self.validity.chip_fraction(q)
                if frac > best_frac:
                    best_frac, best = frac, q
                if frac >= self.min_valid:
                    break
            out.append(best._replace(seed=int(rng.integers(0, 2**62))))
        return out


class GridChipSampler(_ShardedSampler):
    """Chips on a regular grid with overlap, covering every source fully.

    The last row/column of chips is aligned with the source's far edge, so every pixel is read;
    a source smaller than the chip gives one (boundless) chip.

    Args:
        sources: the dataset's sources (same order as the dataset).
        size: chip size in pixels (``int`` or ``(height, width)``).
        stride: step between chips (default: ``size``, no overlap); ``size - stride`` is the
            overlap.
        shuffle: shuffle the order each epoch (``set_epoch``) instead of source/row/column order.
        seed: seed of the shuffle.
        rank: this process's rank (default: from torch.distributed at iteration time, else 0).
        world_size: number of ranks (default: from torch.distributed, else 1).
        min_valid: drop chips whose estimated valid fraction (coarse mask) is below this; 0 keeps
            every chip.
        mask_size: longest side of the coarse valid masks (only used when ``min_valid > 0``).
        footprints: one :class:`Footprint` or None per source (see :class:`ValidityIndex`).
    """

    def __init__(
        self,
        sources: Sequence[Source],
        size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        *,
        shuffle: bool = False,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        min_valid: float = 0.0,
        mask_size: int = 64,
        footprints: Sequence[Footprint | None] | None = None,
    ) -> None:
        super().__init__(seed, shuffle, rank, world_size)
        self.sources = list(sources)
        self.size = _size2(size)
        self.stride = _size2(stride) if stride is not None else self.size
        if min(self.stride) <= 0 or min(self.size) <= 0:
            raise ValueError(f"size {self.size} and stride {self.stride} must be positive")
        chips: list[ChipQuery] = []
        for i, s in enumerate(self.sources):
            rows = _starts(int(s.height), self.size[0], self.stride[0])
            cols = _starts(int(s.width), self.size[1], self.stride[1])
            chips += [ChipQuery(i, r, c, self.size[0], self.size[1]) for r in rows for c in cols]
        if min_valid > 0:
            validity = ValidityIndex(self.sources, mask_size, footprints)
            chips = [q for q in chips if validity.chip_fraction(q) >= min_valid]
        if not chips:
            raise NoValidDataError(
                f"the grid over {len(self.sources)} sources has no chip with valid fraction >= "
                f"{min_valid}; lower min_valid or check the sources' nodata/mask"
            )
        self.chips = chips

    def _global_length(self) -> int:
        return len(self.chips)

    def _global(self) -> list[ChipQuery]:
        if not self.shuffle:
            return list(self.chips)
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(len(self.chips), generator=g).tolist()
        return [self.chips[k] for k in order]


def _starts(length: int, size: int, stride: int) -> list[int]:
    """Window offsets covering ``[0, length)`` with the last window ending at ``length``."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] + size < length:
        starts.append(length - size)
    return starts
