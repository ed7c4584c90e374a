"""The batches of pretraining, as TypedDicts: raw chips, and the multi-crop batch the losses read.

* :class:`RawBatch`: chips stacked by :func:`~dinogeo.ssl.device_augment.collate_raw` for the
  device-side pipeline (``data.augment_on: device``).
* :class:`MultiCropBatch`: what :func:`~dinogeo.ssl.collate.collate_multicrop` (workers) and
  :class:`~dinogeo.ssl.device_augment.DeviceMultiCrop` (device) produce and
  :func:`~dinogeo.ssl.module_step.ssl_losses` and the distillation step consume; its iBOT part is
  :class:`MaskFields` (:func:`~dinogeo.ssl.collate.mask_fields`).

Batches stay plain dicts at run time (Lightning moves them to the device); these types name
their keys for readers and for mypy.
"""

from typing import NotRequired, TypedDict

from torch import Tensor

__all__ = ["MaskFields", "MultiCropBatch", "RawBatch"]


class MaskFields(TypedDict):
    """The iBOT masks of a batch's global crops.

    Attributes:
        masks: bool ``(2B, N)``, True where a patch token is masked.
        mask_indices: ``(M,)`` flat indices of the masked tokens into ``(2B * N)``.
        masks_weight: ``(M,)`` ``1 / M_i`` of each masked token's image.
        n_masked_patches: ``M``.
        n_masked_images: the iBOT normaliser, the number of global crops ``2B``.
    """

    masks: Tensor
    mask_indices: Tensor
    masks_weight: Tensor
    n_masked_patches: int
    n_masked_images: int


class MultiCropBatch(MaskFields):
    """Crops ordered crop-major (all images' crop 0, then crop 1...), with their iBOT masks.

    Attributes:
        global_crops: ``(2B, C, G, G)``.
        local_crops: ``(n_local B, C, L, L)``; ``(0, C, 0, 0)`` without local crops.
        gram_crops: ``(2B, C, S, S)`` for the Gram teacher, when it is enabled.
    """

    global_crops: Tensor
    local_crops: Tensor
    gram_crops: NotRequired[Tensor]


class RawBatch(TypedDict):
    """Raw chips before normalisation and augmentation.

    Attributes:
        raw: ``(B, C, h, w)`` in the chips' dtype (uint16 stored as an int16 view).
        raw_uint16: whether ``raw`` is such a uint16 view.
        valid: bool ``(B, h, w)``.
        affine: ``(B, 2, C)`` per-band scale and offset of the normalisation.
        crop: the crop-mix entry of the whole batch.
        seed: the batch seed of its augmentation and masks.
    """

    raw: Tensor
    raw_uint16: bool
    valid: Tensor
    affine: Tensor
    crop: int
    seed: int
