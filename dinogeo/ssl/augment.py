"""Multi-crop augmentation for normalised multispectral overhead imagery.

Adapts the DINOv3 augmentation (``data/augmentations.py``) to float tensors of any band
count that are already normalised per band (zero mean, unit variance). Deviations from
the RGB recipe are listed in ``docs/recipe-deviations.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from dinogeo.errors import ConfigError

__all__ = ["MultiCropAugmentation", "Photometric", "random_resized_crop_box"]

Box = tuple[int, int, int, int]  # top, left, height, width


@dataclass(frozen=True)
class Photometric:
    """The photometric distortions of the multi-crop augmentation (``data.photometric``).

    The defaults are the DINOv3 recipe's, carried over to normalised bands (see
    :class:`MultiCropAugmentation` for what each does). On multispectral imagery, where the
    spectrum is what separates the classes, the band jitter and the band mean ("grayscale")
    teach the backbone to ignore exactly that: ``Photometric.spectral()`` keeps blur and
    solarisation and turns them off (docs/pretraining.md, "Photometric augmentation").
    """

    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    grayscale_p: float = 0.2
    blur_kernel: int = 9
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_p_global1: float = 0.0
    blur_p_global2: float = 0.9
    blur_p_local: float = 0.5
    solarize_p: float = 0.2

    @classmethod
    def spectral(cls) -> Photometric:
        """The recipe's distortions without the band jitter and the band mean."""
        return cls(jitter_p=0.0, grayscale_p=0.0)

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`MultiCropAugmentation`."""
        out = asdict(self)
        out["blur_sigma"] = (float(self.blur_sigma[0]), float(self.blur_sigma[1]))
        return out


#: the recipe's photometric distortions: the defaults of :class:`MultiCropAugmentation`
RECIPE = Photometric()


def _rand(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator).item())


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * _rand(generator)


def random_resized_crop_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> Box:
    """Draw a RandomResizedCrop box (area fraction ``scale``, log-uniform aspect ``ratio``).

    Up to 10 draws are tried; if none fits, the largest central box with an aspect
    ratio inside ``ratio`` is returned.

    Args:
        height: Image height.
        width: Image width.
        scale: Range of the crop's area as a fraction of the image.
        ratio: Range of the crop's width/height ratio.
        generator: Random generator (torch default RNG if ``None``).

    Returns:
        ``(top, left, box_height, box_width)``.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * _uniform(scale[0], scale[1], generator)
        aspect = math.exp(_uniform(*log_ratio, generator))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (), generator=generator).item())
            left = int(torch.randint(0, width - w + 1, (), generator=generator).item())
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def _resample(image: Tensor, box: Box, size: int) -> Tensor:
    top, left, h, w = box
    crop = image[:, top : top + h, left : left + w].unsqueeze(0)
    out = F.interpolate(
        crop, size=(size, size), mode="bicubic", align_corners=False, antialias=True
    )
    return out.squeeze(0)


def _d4(x: Tensor, element: int) -> Tensor:
    """Apply one of the 8 symmetries of the square: ``element % 4`` quarter turns, then a flip."""
    x = torch.rot90(x, element % 4, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if element >= 4 else x


def _gaussian_blur(x: Tensor, kernel_size: int, sigma: float) -> Tensor:
    radius = kernel_size // 2
    coords = torch.arange(kernel_size, dtype=x.dtype, device=x.device) - radius
    kernel = torch.exp(-0.5 * (coords / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = x.shape[0]
    mode = "reflect" if min(x.shape[-2:]) > radius else "replicate"
    y = F.pad(x.unsqueeze(0), (radius, radius, radius, radius), mode=mode)
    y = F.conv2d(y, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    y = F.conv2d(y, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
    return y.squeeze(0)


class MultiCropAugmentation:
    """Two global crops, ``n_local`` local crops and optional Gram-teacher crops.

    Geometry: RandomResizedCrop (bicubic, antialiased) with ``global_scale`` /
    ``local_scale``, then a random element of D4 (flips and quarter turns; orientation
    has no meaning from above). Photometric distortions work in normalised units, on
    any number of bands:

    * band jitter (probability ``jitter_p``): per-band offset ``U(-brightness, brightness)``,
      per-band contrast factor ``U(1 - contrast, 1 + contrast)`` about the crop's band
      mean, and a shared "saturation" factor ``U(1 - saturation, 1 + saturation)`` about the
      mean over bands (hue has no multispectral analogue);
    * "grayscale" (probability ``grayscale_p``): every band replaced by the mean over bands;
    * Gaussian blur (kernel ``blur_kernel``, sigma ``U(blur_sigma)``) with the effective
      DINOv3 probabilities: global 1 never, global 2 ``0.9``, locals ``0.5``;
    * solarisation on global 2 (probability ``solarize_p``): values at or above the per-band
      threshold ``t`` (default 0, the band mean) are reflected to ``2t - x``.

    The Gram crops (if ``gram_size``) reuse the exact box and D4 element of each global
    crop, resampled at ``gram_size`` (2x the global size in the recipe) without any
    photometric distortion.

    Args:
        global_size: Side of the global crops (256 in DINOv3).
        local_size: Side of the local crops (112 in DINOv3).
        n_local: Number of local crops (8; 0 disables them).
        global_scale: Area range of the global crops.
        local_scale: Area range of the local crops.
        gram_size: Side of the Gram-teacher crops, or ``None`` for none.
        flips: Apply random D4 symmetries.
        ratio: Aspect-ratio range of the crop boxes.
        jitter_p: Probability of the band jitter.
        brightness: Half-range of the per-band offset (std units).
        contrast: Half-range of the per-band contrast factor.
        saturation: Half-range of the shared saturation factor.
        grayscale_p: Probability of replacing the bands by their mean.
        blur_kernel: Gaussian kernel size (odd).
        blur_sigma: Range of the Gaussian sigma in pixels.
        blur_p_global1: Blur probability of global crop 1 (0 in effect in DINOv3).
        blur_p_global2: Blur probability of global crop 2 (0.9 in effect in DINOv3).
        blur_p_local: Blur probability of the local crops (0.5).
        solarize_p: Solarisation probability of global crop 2 (0.2).
        solarize_threshold: Per-band threshold(s) in normalised units.
    """

    def __init__(
        self,
        global_size: int = 256,
        local_size: int = 112,
        n_local: int = 8,
        global_scale: tuple[float, float] = (0.32, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.32),
        gram_size: int | None = None,
        flips: bool = True,
        *,
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        jitter_p: float = RECIPE.jitter_p,
        brightness: float = RECIPE.brightness,
        contrast: float = RECIPE.contrast,
        saturation: float = RECIPE.saturation,
        grayscale_p: float = RECIPE.grayscale_p,
        blur_kernel: int = RECIPE.blur_kernel,
        blur_sigma: tuple[float, float] = RECIPE.blur_sigma,
        blur_p_global1: float = RECIPE.blur_p_global1,
        blur_p_global2: float = RECIPE.blur_p_global2,
        blur_p_local: float = RECIPE.blur_p_local,
        solarize_p: float = RECIPE.solarize_p,
        solarize_threshold: float | Sequence[float] = 0.0,
    ) -> None:
        sizes = [global_size, local_size] + ([gram_size] if gram_size is not None else [])
        if any(s < 1 for s in sizes) or n_local < 0:
            raise ConfigError(
                f"MultiCropAugmentation: crop sizes must be positive and n_local >= 0, got "
                f"global_size={global_size}, local_size={local_size}, gram_size={gram_size}, "
                f"n_local={n_local}."
            )
        for name, rng in (("global_scale", global_scale), ("local_scale", local_scale)):
            if not 0.0 < rng[0] <= rng[1] <= 1.0:
                raise ConfigError(
                    f"MultiCropAugmentation: {name} must satisfy 0 < min <= max <= 1, got {rng}."
                )
        probs = [jitter_p, grayscale_p, blur_p_global1, blur_p_global2, blur_p_local, solarize_p]
        if any(not 0.0 <= p <= 1.0 for p in probs):
            raise ConfigError(
                f"MultiCropAugmentation: probabilities must be in [0, 1], got {probs}."
            )
        if blur_kernel < 1 or blur_kernel % 2 == 0:
            raise ConfigError(f"MultiCropAugmentation: blur_kernel must be odd, got {blur_kernel}.")
        self.global_size, self.local_size, self.n_local = global_size, local_size, n_local
        self.global_scale = (float(global_scale[0]), float(global_scale[1]))
        self.local_scale = (float(local_scale[0]), float(local_scale[1]))
        self.gram_size, self.flips = gram_size, flips
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.jitter_p, self.brightness = jitter_p, brightness
        self.contrast, self.saturation, self.grayscale_p = contrast, saturation, grayscale_p
        self.blur_kernel = blur_kernel
        self.blur_sigma = (float(blur_sigma[0]), float(blur_sigma[1]))
        self.blur_p = (blur_p_global1, blur_p_global2, blur_p_local)
        self.solarize_p = solarize_p
        self.solarize_threshold = solarize_threshold

    # -- photometric ---------------------------------------------------------------------
    def _jitter(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        channels = x.shape[0]
        if self.jitter_p > 0 and _rand(generator) < self.jitter_p:
            offset = (torch.rand(channels, 1, 1, generator=generator) * 2 - 1) * self.brightness
            x = x + offset.to(x)
            factor = 1 + (torch.rand(channels, 1, 1, generator=generator) * 2 - 1) * self.contrast
            mean = x.mean(dim=(-2, -1), keepdim=True)
            x = mean + factor.to(x) * (x - mean)
            sat = 1 + (2 * _rand(generator) - 1) * self.saturation
            gray = x.mean(dim=0, keepdim=True)
            x = gray + sat * (x - gray)
        if self.grayscale_p > 0 and _rand(generator) < self.grayscale_p:
            x = x.mean(dim=0, keepdim=True).expand_as(x).clone()
        return x

    def _blur(self, x: Tensor, p: float, generator: torch.Generator | None) -> Tensor:
        if p > 0 and _rand(generator) < p:
            sigma = _uniform(self.blur_sigma[0], self.blur_sigma[1], generator)
            x = _gaussian_blur(x, self.blur_kernel, sigma)
        return x

    def _solarize(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        if self.solarize_p > 0 and _rand(generator) < self.solarize_p:
            t = torch.as_tensor(self.solarize_threshold, dtype=x.dtype).reshape(-1, 1, 1)
            if t.shape[0] not in (1, x.shape[0]):
                raise ConfigError(
                    f"MultiCropAugmentation: solarize_threshold has {t.shape[0]} values for "
                    f"{x.shape[0]} bands; give one value or one per band."
                )
            x = torch.where(x >= t, 2 * t - x, x)
        return x

    # -- geometry ------------------------------------------------------------------------
    def _d4_element(self, generator: torch.Generator | None) -> int:
        return int(torch.randint(0, 8, (), generator=generator).item()) if self.flips else 0

    def __call__(
        self, image: Tensor, generator: torch.Generator | None = None
    ) -> dict[str, list[Tensor]]:
        """Augment one normalised image.

        Args:
            image: Float tensor ``(C, H, W)``, normalised per band.
            generator: Random generator (torch default RNG if ``None``).

        Returns:
            ``{"global": [2 x (C, G, G)], "local": [n_local x (C, L, L)]}`` plus
            ``"gram": [2 x (C, S, S)]`` when ``gram_size`` is set.
        """
        if image.dim() != 3 or not image.is_floating_point():
            raise ConfigError(
                f"MultiCropAugmentation: expected a float (C, H, W) image, got {image.dtype} "
                f"{tuple(image.shape)}; normalise the raster first (Sensor.normalize)."
            )
        _, height, width = image.shape
        out: dict[str, list[Tensor]] = {"global": [], "local": []}
        if self.gram_size is not None:
            out["gram"] = []
        for index in range(2):
            box = random_resized_crop_box(height, width, self.global_scale, self.ratio, generator)
            element = self._d4_element(generator)
            crop = _d4(_resample(image, box, self.global_size), element)
            if "gram" in out and self.gram_size is not None:
                out["gram"].append(_d4(_resample(image, box, self.gram_size), element).contiguous())
            crop = self._jitter(crop, generator)
            crop = self._blur(crop, self.blur_p[index], generator)
            if index == 1:
                crop = self._solarize(crop, generator)
            out["global"].append(crop.contiguous())
        for _ in range(self.n_local):
            box = random_resized_crop_box(height, width, self.local_scale, self.ratio, generator)
            crop = _d4(_resample(image, box, self.local_size), self._d4_element(generator))
            crop = self._blur(self._jitter(crop, generator), self.blur_p[2], generator)
            out["local"].append(crop.contiguous())
        return out
