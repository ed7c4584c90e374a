"""Batch multi-crop samples and draw the iBOT masks (DINOv3 ``collate_data_and_cast``)."""

from __future__ import annotations

import torch
from torch import Tensor

from dinogeo.errors import ConfigError
from dinogeo.ssl.batch_types import MaskFields, MultiCropBatch
from dinogeo.ssl.masking import make_ibot_masks

__all__ = ["collate_multicrop", "mask_fields", "multicrop_batch"]


def _stack_crop_major(samples: list[dict[str, list[Tensor]]], key: str) -> Tensor:
    n_crops = {len(s[key]) for s in samples}
    if len(n_crops) != 1:
        raise ConfigError(
            f"collate_multicrop: samples have different numbers of '{key}' crops: {n_crops}."
        )
    count = n_crops.pop()
    return torch.stack([s[key][i] for i in range(count) for s in samples])


def mask_fields(masks: Tensor) -> MaskFields:
    """The iBOT fields of a batch from its masks ``(2B, N)`` (on any device).

    Returns:
        ``masks``, ``mask_indices`` (flat indices into ``(2B * N)``), ``masks_weight`` (``1/M_i``
        of each masked token's image), ``n_masked_patches`` (int) and ``n_masked_images`` (2B).
    """
    per_image = masks.sum(dim=-1, keepdim=True).clamp(min=1).to(torch.float32)
    masks_weight = (1.0 / per_image).expand_as(masks)[masks]
    mask_indices = masks.flatten().nonzero().flatten()
    return {
        "masks": masks,
        "mask_indices": mask_indices,
        "masks_weight": masks_weight,
        "n_masked_patches": int(mask_indices.numel()),
        "n_masked_images": int(masks.shape[0]),
    }


def multicrop_batch(
    global_crops: Tensor, local_crops: Tensor, masks: Tensor, gram_crops: Tensor | None = None
) -> MultiCropBatch:
    """A multi-crop batch from its crops and its global crops' iBOT masks (see :func:`mask_fields`)."""
    fields = mask_fields(masks)
    batch: MultiCropBatch = {
        "global_crops": global_crops,
        "local_crops": local_crops,
        "masks": fields["masks"],
        "mask_indices": fields["mask_indices"],
        "masks_weight": fields["masks_weight"],
        "n_masked_patches": fields["n_masked_patches"],
        "n_masked_images": fields["n_masked_images"],
    }
    if gram_crops is not None:
        batch["gram_crops"] = gram_crops
    return batch


def collate_multicrop(
    samples: list[dict[str, list[Tensor]]],
    patch_size: int,
    mask_ratio: tuple[float, float] = (0.1, 0.5),
    mask_probability: float = 0.5,
    generator: torch.Generator | None = None,
) -> MultiCropBatch:
    """Stack the crops of :class:`~dinogeo.ssl.augment.MultiCropAugmentation` outputs.

    Crops are ordered crop-major (all images' crop 0, then all images' crop 1, ...), so
    ``x.view(n_crops, B, ...)`` recovers the crop axis.

    Args:
        samples: One augmentation output per image (``"global"``, ``"local"``, optional ``"gram"``).
        patch_size: Backbone patch size (the global crop side must be a multiple of it).
        mask_ratio: ``(min, max)`` iBOT mask ratios.
        mask_probability: Fraction of global crops that are masked.
        generator: Random generator for the masks (torch default RNG if ``None``).

    Returns:
        ``global_crops`` ``(2B, C, G, G)``; ``local_crops`` ``(n_l B, C, L, L)`` (``(0, C, 0, 0)``
        without local crops); ``gram_crops`` ``(2B, C, S, S)`` if present; ``masks``
        ``(2B, N)`` bool; ``mask_indices`` ``(M,)`` flat indices into ``(2B * N)``;
        ``masks_weight`` ``(M,)`` equal to ``1/M_i`` of each token's image;
        ``n_masked_patches`` ``M`` (int) and ``n_masked_images``, the iBOT normaliser: the
        number of global crops ``2B`` the masks were drawn over (the recipe divides by
        ``2B``, masked or not).
    """
    if not samples:
        raise ConfigError("collate_multicrop: empty batch.")
    if patch_size < 1:
        raise ConfigError(f"collate_multicrop: patch_size must be positive, got {patch_size}.")
    global_crops = _stack_crop_major(samples, "global")
    channels, height, width = global_crops.shape[1:]
    if height % patch_size or width % patch_size:
        raise ConfigError(
            f"collate_multicrop: global crops {height}x{width} are not a multiple of the patch "
            f"size {patch_size}; choose a global_size divisible by {patch_size}."
        )
    if samples[0].get("local"):
        local_crops = _stack_crop_major(samples, "local")
    else:
        local_crops = global_crops.new_zeros(0, channels, 0, 0)
    grid = (height // patch_size, width // patch_size)
    masks = make_ibot_masks(
        global_crops.shape[0], grid, mask_ratio, mask_probability, generator=generator
    )
    gram = _stack_crop_major(samples, "gram") if "gram" in samples[0] else None
    return multicrop_batch(global_crops, local_crops, masks, gram)
