"""iBOT block-wise masks (BEiT style) with exact per-crop counts."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dinogeo.errors import ConfigError

__all__ = ["BlockMaskGenerator", "ibot_mask_counts", "make_ibot_masks"]


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator).item())


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in ``[low, high]`` (both included)."""
    return int(torch.randint(low, high + 1, (), generator=generator).item())


class BlockMaskGenerator:
    """Block-wise masks on a patch grid with an exact number of masked patches.

    Rectangles of area ``U(min_num_patches, limit)`` and log-uniform aspect ratio in
    ``[min_aspect, max_aspect]`` are placed at random (at most 10 tries per rectangle,
    each adding at most ``max_num_patches`` new patches and never more than still
    needed) until no rectangle fits; the remainder is then filled with randomly chosen
    unmasked patches so the count is exact.

    Args:
        grid_hw: Patch grid ``(h, w)``.
        min_num_patches: Smallest rectangle area (4).
        max_num_patches: Most new patches per rectangle (default half the grid).
        min_aspect: Smallest aspect ratio (0.3).
        max_aspect: Largest aspect ratio (default ``1 / min_aspect``).
    """

    def __init__(
        self,
        grid_hw: tuple[int, int],
        min_num_patches: int = 4,
        max_num_patches: int | None = None,
        min_aspect: float = 0.3,
        max_aspect: float | None = None,
    ) -> None:
        self.height, self.width = int(grid_hw[0]), int(grid_hw[1])
        if self.height < 1 or self.width < 1:
            raise ConfigError(f"BlockMaskGenerator: grid_hw must be positive, got {grid_hw}.")
        if min_aspect <= 0:
            raise ConfigError(f"BlockMaskGenerator: min_aspect must be > 0, got {min_aspect}.")
        self.num_patches = self.height * self.width
        self.min_num_patches = min_num_patches
        self.max_num_patches = (
            int(0.5 * self.num_patches) if max_num_patches is None else int(max_num_patches)
        )
        max_aspect = 1.0 / min_aspect if max_aspect is None else max_aspect
        self.log_aspect = (math.log(min_aspect), math.log(max_aspect))

    def _add_block(self, mask: Tensor, limit: int, generator: torch.Generator | None) -> int:
        for _ in range(10):
            area = _uniform(self.min_num_patches, limit, generator)
            aspect = math.exp(_uniform(*self.log_aspect, generator))
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if 0 < h < self.height and 0 < w < self.width:
                top = _randint(0, self.height - h, generator)
                left = _randint(0, self.width - w, generator)
                region = mask[top : top + h, left : left + w]
                new = h * w - int(region.sum().item())
                if 0 < new <= limit:
                    region.fill_(True)
                    return new
        return 0

    def __call__(
        self, num_masking_patches: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """Draw one mask.

        Args:
            num_masking_patches: Exact number of patches to mask (0 to h*w).
            generator: Random generator (torch default RNG if ``None``).

        Returns:
            Bool mask ``(h, w)`` with exactly ``num_masking_patches`` True entries.
        """
        if not 0 <= num_masking_patches <= self.num_patches:
            raise ConfigError(
                f"BlockMaskGenerator: cannot mask {num_masking_patches} of {self.num_patches} "
                "patches."
            )
        mask = torch.zeros(self.height, self.width, dtype=torch.bool)
        count = 0
        while count < num_masking_patches:
            limit = min(num_masking_patches - count, self.max_num_patches)
            added = self._add_block(mask, limit, generator)
            if added == 0:
                break
            count += added
        missing = num_masking_patches - count
        if missing > 0:
            free = (~mask).flatten().nonzero().flatten()
            chosen = free[torch.randperm(free.numel(), generator=generator)[:missing]]
            mask.view(-1)[chosen] = True
        return mask


def ibot_mask_counts(
    n_crops: int, n_patches: int, ratio_min_max: tuple[float, float], mask_probability: float
) -> list[int]:
    """Number of masked patches per masked crop: ``floor(N * r_{i+1})``, ``r = linspace(min, max, n+1)``.

    ``n = int(n_crops * mask_probability)`` crops are masked. A ``1e-9`` tolerance keeps
    exact products (``100 * 0.3``) from flooring one patch low through rounding.

    Args:
        n_crops: Number of global crops in the batch (``2B``).
        n_patches: Patches per crop N.
        ratio_min_max: ``(min, max)`` mask ratios.
        mask_probability: Fraction of crops that are masked.

    Returns:
        One count per masked crop, increasing.
    """
    low, high = float(ratio_min_max[0]), float(ratio_min_max[1])
    if not 0.0 <= low <= high <= 1.0:
        raise ConfigError(
            f"ibot masks: ratio_min_max must satisfy 0 <= min <= max <= 1, got {ratio_min_max}."
        )
    if not 0.0 <= mask_probability <= 1.0:
        raise ConfigError(
            f"ibot masks: mask_probability must be in [0, 1], got {mask_probability}."
        )
    n_masked = int(n_crops * mask_probability)
    step = (high - low) / n_masked if n_masked else 0.0
    return [int(math.floor(n_patches * (low + step * (i + 1)) + 1e-9)) for i in range(n_masked)]


def make_ibot_masks(
    n_crops: int,
    grid_hw: tuple[int, int],
    ratio_min_max: tuple[float, float] = (0.1, 0.5),
    mask_probability: float = 0.5,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw the iBOT masks of a batch of global crops, as the DINOv3 collate function does.

    ``int(n_crops * mask_probability)`` crops get block-wise masks with the counts of
    :func:`ibot_mask_counts`; the others are unmasked; the order is then shuffled.

    Args:
        n_crops: Number of global crops (``2B``).
        grid_hw: Patch grid ``(h, w)`` of a global crop.
        ratio_min_max: ``(min, max)`` mask ratios (0.1, 0.5).
        mask_probability: Fraction of crops masked (0.5).
        generator: Random generator (torch default RNG if ``None``).

    Returns:
        Bool masks ``(n_crops, h*w)``.
    """
    block = BlockMaskGenerator(grid_hw)
    counts = ibot_mask_counts(n_crops, block.num_patches, ratio_min_max, mask_probability)
    masks = torch.zeros(n_crops, block.num_patches, dtype=torch.bool)
    for i, count in enumerate(counts):
        masks[i] = block(count, generator=generator).flatten()
    return masks[torch.randperm(n_crops, generator=generator)]
