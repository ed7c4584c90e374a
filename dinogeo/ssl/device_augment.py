"""The device-side input pipeline: raw chips in, multi-crop training batches out.

With ``data.augment_on: device`` the DataLoader workers only read raw chips (the file's dtype,
e.g. uint16) and :func:`collate_raw` stacks them with their valid masks, per-band
normalisation coefficients, crop-mix entry and batch seed. The batch crosses to the training
device through pinned memory, and :class:`DeviceMultiCrop` (called from
``SSLDataModule.on_after_batch_transfer``) normalises, augments
(:class:`~dinogeo.ssl.batch_augment.BatchedMultiCrop`) and draws the iBOT masks
(:func:`~dinogeo.ssl.batch_masking.make_ibot_masks_batched`) there, returning the same batch
keys as :func:`~dinogeo.ssl.collate.collate_multicrop`.

Every random draw comes from a generator on the device seeded with the batch seed, itself a
function of the samples' ``(seed, epoch, position)``: a resumed run sees the same batches on the
same kind of device.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from dinogeo.data.sensors import Sensor
from dinogeo.errors import ConfigError
from dinogeo.ssl.augment import MultiCropAugmentation
from dinogeo.ssl.batch_augment import BatchedMultiCrop, Workspace
from dinogeo.ssl.batch_masking import make_ibot_masks_batched
from dinogeo.ssl.batch_types import MultiCropBatch, RawBatch
from dinogeo.ssl.checkpointing import sample_seed
from dinogeo.ssl.collate import multicrop_batch

__all__ = ["DeviceMultiCrop", "collate_raw", "is_raw_batch", "sensor_affine"]

# dtypes that cross to the device as they are (uint16 travels as its int16 bit pattern)
_KEEP = {np.dtype(t) for t in ("uint8", "int8", "int16", "int32", "float32", "float64")}


def sensor_affine(sensor: Sensor) -> np.ndarray:
    """``(2, C)`` float32: ``a, b`` with ``normalised = DN * a + b`` (as ``Sensor.normalize``)."""
    mean = np.array([b.mean for b in sensor.bands], dtype=np.float64)
    std = np.array([b.std for b in sensor.bands], dtype=np.float64)
    a = (sensor.scale / std).astype(np.float32)
    b = ((sensor.offset - mean) / std).astype(np.float32)
    return np.stack([a, b])


def is_raw_batch(batch: Any) -> bool:
    """Whether ``batch`` came from :func:`collate_raw` (and still needs :class:`DeviceMultiCrop`)."""
    return isinstance(batch, dict) and "raw" in batch


def collate_raw(samples: list[dict[str, Any]]) -> RawBatch:
    """Stack raw chips for the device-side pipeline.

    Args:
        samples: ``{"raw": (C, h, w) ndarray, "valid": (h, w) bool ndarray, "affine": (2, C),
            "crop": crop-mix entry, "_seed": per-sample seed}`` dicts.

    Returns:
        ``raw`` ``(B, C, h, w)`` in the chips' dtype (uint16 as an int16 view, flagged by
        ``raw_uint16``), ``valid`` ``(B, h, w)``, ``affine`` ``(B, 2, C)``, ``crop`` (int) and
        ``seed`` (int, the batch seed).
    """
    if not samples:
        raise ConfigError("collate_raw: empty batch.")
    crops = {int(s["crop"]) for s in samples}
    if len(crops) != 1:
        raise ConfigError(f"collate_raw: one batch mixes crop-mix entries {sorted(crops)}.")
    raw = np.stack([s["raw"] for s in samples])
    uint16 = raw.dtype == np.uint16
    if uint16:
        raw = raw.view(np.int16)
    elif raw.dtype not in _KEEP:
        raw = raw.astype(np.float32)
    return {
        "raw": torch.from_numpy(raw),
        "raw_uint16": uint16,
        "valid": torch.from_numpy(np.stack([s["valid"] for s in samples])),
        "affine": torch.from_numpy(np.stack([s["affine"] for s in samples])),
        "crop": crops.pop(),
        "seed": sample_seed(*(int(s["_seed"]) for s in samples)),
    }


def normalize_raw(batch: RawBatch, out: Tensor | None = None) -> Tensor:
    """Normalised float32 chips ``(B, C, h, w)`` of a raw batch, invalid pixels set to 0.

    Args:
        batch: A raw batch from :func:`collate_raw`.
        out: Optional float32 ``(B, C, h, w)`` tensor to write into (a reused buffer).
    """
    raw: Tensor = batch["raw"]
    if batch.get("raw_uint16"):
        raw = raw.view(torch.uint16)  # the int16 bit pattern read back as uint16
    affine: Tensor = batch["affine"].to(raw.device, torch.float32)
    image = raw.new_empty(raw.shape, dtype=torch.float32) if out is None else out
    image.copy_(raw).mul_(affine[:, 0, :, None, None]).add_(affine[:, 1, :, None, None])
    valid: Tensor = batch["valid"]
    if raw.device.type == "cpu" and int(valid.view(torch.uint8).min()) == 1:
        return image  # nothing to zero (a check on CPU only: elsewhere it would synchronise)
    return image.masked_fill_(~valid[:, None], 0.0)


class DeviceMultiCrop:
    """Turn a raw batch (from :func:`collate_raw`) into a multi-crop batch on its device.

    Args:
        augments: One per-sample augmentation per crop-mix entry (their parameters are used).
        patch_size: Backbone patch size (for the iBOT mask grid).
        mask_ratio: ``(min, max)`` iBOT mask ratios.
        mask_probability: Fraction of masked global crops.
    """

    def __init__(
        self,
        augments: list[MultiCropAugmentation],
        patch_size: int,
        mask_ratio: tuple[float, float] = (0.1, 0.5),
        mask_probability: float = 0.5,
    ) -> None:
        self.augments = [BatchedMultiCrop(a) for a in augments]
        self._workspace = Workspace()
        self.patch_size = patch_size
        self.mask_ratio = mask_ratio
        self.mask_probability = mask_probability

    def __call__(self, batch: RawBatch) -> MultiCropBatch:
        """Normalise, augment and mask a raw batch on the device its tensors are on.

        Returns:
            The keys of :func:`~dinogeo.ssl.collate.collate_multicrop`: ``global_crops``,
            ``local_crops``, optional ``gram_crops``, ``masks``, ``mask_indices``,
            ``masks_weight``, ``n_masked_patches``, ``n_masked_images``.
        """
        raw: Tensor = batch["raw"]
        shape = tuple(raw.shape)
        images = normalize_raw(
            batch, self._workspace.get("images", shape, torch.float32, raw.device)
        )
        gen = torch.Generator(device=images.device).manual_seed(int(batch["seed"]))
        crops = self.augments[int(batch["crop"])](images, gen)
        global_crops = crops["global"]
        height, width = global_crops.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ConfigError(
                f"global crops {height}x{width} are not a multiple of the patch size "
                f"{self.patch_size}; choose a global_size divisible by {self.patch_size}."
            )
        grid = (height // self.patch_size, width // self.patch_size)
        masks = make_ibot_masks_batched(
            global_crops.shape[0], grid, self.mask_ratio, self.mask_probability, gen
        )
        return multicrop_batch(global_crops, crops["local"], masks, crops.get("gram"))
