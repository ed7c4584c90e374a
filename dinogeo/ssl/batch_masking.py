"""iBOT block masks drawn for all crops of a batch at once, on the training device.

The same process as :class:`~dinogeo.ssl.masking.BlockMaskGenerator`, run on every masked crop
in parallel: each round, every crop that still needs patches tries up to 10 rectangles (area
``U(min_num_patches, limit)``, log-uniform aspect, uniform position; a try counts if it fits
strictly inside the grid and adds between 1 and ``limit`` new patches, counted as a product of
the try's row and column spans with the mask) and keeps its first valid try; a crop with no valid try stops adding rectangles. The
remainder is then filled with uniformly chosen unmasked patches, so every count is exact, and
the crop order is shuffled as :func:`~dinogeo.ssl.masking.make_ibot_masks` does.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dinogeo.ssl.masking import ibot_mask_counts

__all__ = ["make_ibot_masks_batched"]


def _block_masks(
    counts: Tensor,
    grid_hw: tuple[int, int],
    gen: torch.Generator,
    min_num_patches: int = 4,
    min_aspect: float = 0.3,
) -> Tensor:
    """Masks ``(n, h, w)`` with exactly ``counts[i]`` patches, as ``BlockMaskGenerator``."""
    height, width = grid_hw
    n = counts.shape[0]
    device = counts.device
    max_num = int(0.5 * height * width)
    log_aspect = (math.log(min_aspect), math.log(1.0 / min_aspect))
    mask = torch.zeros(n, height, width, dtype=torch.bool, device=device)
    count = torch.zeros(n, dtype=torch.long, device=device)
    active = counts > 0
    ys = torch.arange(height, device=device)
    xs = torch.arange(width, device=device)
    crops = torch.arange(n, device=device)
    while bool(active.any()):
        limit = torch.clamp(counts - count, max=max_num).to(torch.float32)[:, None]
        u = torch.rand(n, 10, 4, generator=gen, device=device)
        area = min_num_patches + (limit - min_num_patches) * u[..., 0]
        aspect = torch.exp(log_aspect[0] + (log_aspect[1] - log_aspect[0]) * u[..., 1])
        h = torch.round(torch.sqrt(area * aspect)).long()
        w = torch.round(torch.sqrt(area / aspect)).long()
        fits = (h > 0) & (h < height) & (w > 0) & (w < width)
        h, w = torch.where(fits, h, 1), torch.where(fits, w, 1)
        top = (u[..., 2] * (height - h + 1)).long().clamp(max=height - h)
        left = (u[..., 3] * (width - w + 1)).long().clamp(max=width - w)
        # the rows and columns each try spans, (n, 10, h) and (n, 10, w) as 0/1
        in_rows = ((ys >= top[..., None]) & (ys < (top + h)[..., None])).to(torch.float32)
        in_cols = ((xs >= left[..., None]) & (xs < (left + w)[..., None])).to(torch.float32)
        # masked patches under each try (small integers: exact in float32)
        covered = (torch.bmm(in_rows, mask.to(torch.float32)) * in_cols).sum(dim=-1)
        new = h * w - covered.long()
        ok = fits & (new > 0) & (new <= limit.long()) & active[:, None]
        found = ok.any(dim=1)
        first = ok.long().argmax(dim=1)
        block = in_rows[crops, first][:, :, None] * in_cols[crops, first][:, None, :] > 0
        mask |= block & found[:, None, None]
        count = count + torch.where(found, new[crops, first], 0)
        active = found & (count < counts)
    # exact count: fill the remainder with uniformly chosen unmasked patches
    flat = mask.view(n, -1)
    missing = counts - count
    score = torch.rand(flat.shape, generator=gen, device=device).masked_fill(flat, 2.0)
    rank = score.argsort(dim=1).argsort(dim=1)
    flat |= rank < missing[:, None]
    return mask


def make_ibot_masks_batched(
    n_crops: int,
    grid_hw: tuple[int, int],
    ratio_min_max: tuple[float, float],
    mask_probability: float,
    gen: torch.Generator,
) -> Tensor:
    """Draw the iBOT masks of ``n_crops`` global crops on ``gen``'s device.

    Same counts (:func:`~dinogeo.ssl.masking.ibot_mask_counts`), the same block process and
    the same shuffle as :func:`~dinogeo.ssl.masking.make_ibot_masks`.

    Args:
        n_crops: Number of global crops (``2B``).
        grid_hw: Patch grid ``(h, w)``.
        ratio_min_max: ``(min, max)`` mask ratios.
        mask_probability: Fraction of crops masked.
        gen: Random generator; the masks are on its device.

    Returns:
        Bool masks ``(n_crops, h*w)``.
    """
    height, width = int(grid_hw[0]), int(grid_hw[1])
    num = height * width
    counts = ibot_mask_counts(n_crops, num, ratio_min_max, mask_probability)
    device = gen.device
    masks = torch.zeros(n_crops, num, dtype=torch.bool, device=device)
    if counts:
        target = torch.tensor(counts, dtype=torch.long, device=device)
        blocks = _block_masks(target, (height, width), gen)
        masks[: len(counts)] = blocks.view(len(counts), num)
    return masks[torch.randperm(n_crops, generator=gen, device=device)]
