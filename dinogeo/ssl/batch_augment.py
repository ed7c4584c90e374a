"""Batched multi-crop augmentation on the training device (GPU or CPU).

:class:`BatchedMultiCrop` applies the augmentation of
:class:`~dinogeo.ssl.augment.MultiCropAugmentation` to a whole batch of normalised chips at
once, with the same parameters, probabilities and per-crop random distributions, but one
vectorised operation per step instead of one small operation per crop:

* RandomResizedCrop boxes: the 10 tries of every crop drawn at once, the first fitting one kept;
* resampling: antialiased bicubic exactly as ``F.interpolate(..., mode="bicubic",
  antialias=True)`` computes it (Keys cubic ``a = -0.5``, support widened by the down-scaling
  factor), as per-crop tap indices and weights applied by gathers, so every crop has its own box;
* D4: the flips are folded into the tap order, the transposes are a per-crop ``where``;
* band jitter, grayscale, Gaussian blur (per-crop sigma, 9 shifted multiply-adds per axis) and
  solarisation as per-crop masked tensor operations.

It runs on whatever device the images are on; random draws come from a ``torch.Generator`` on
that device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from dinogeo.errors import ConfigError
from dinogeo.ssl.augment import MultiCropAugmentation, _d4

__all__ = ["BatchedMultiCrop", "d4_parts", "random_boxes", "resample_boxes"]

# D4 element e (e % 4 quarter turns, then a horizontal flip if e >= 4) of a resampled crop R,
# written as transpose^t(flip_rows^r(flip_cols^c(R))): the flips fold into the tap order.
_D4_TRANSPOSE = (False, True, False, True, False, True, False, True)
_D4_FLIP_ROWS = (False, False, True, True, False, True, True, False)
_D4_FLIP_COLS = (False, True, True, False, True, True, False, False)


def _uniform(shape: tuple[int, ...], low: float, high: float, gen: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(shape, generator=gen, device=gen.device)


def _bernoulli(n: int, p: float, gen: torch.Generator) -> Tensor:
    return torch.rand(n, generator=gen, device=gen.device) < p


def random_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    gen: torch.Generator,
) -> Tensor:
    """Draw ``n`` RandomResizedCrop boxes, as :func:`~dinogeo.ssl.augment.random_resized_crop_box`.

    Args:
        n: Number of boxes.
        height: Image height.
        width: Image width.
        scale: Area range as a fraction of the image.
        ratio: Width/height ratio range (log-uniform).
        gen: Random generator (its device is the output's).

    Returns:
        Long tensor ``(n, 4)``: top, left, height, width.
    """
    area = height * width
    target = area * _uniform((n, 10), scale[0], scale[1], gen)
    aspect = torch.exp(_uniform((n, 10), math.log(ratio[0]), math.log(ratio[1]), gen))
    w = torch.round(torch.sqrt(target * aspect)).long()
    h = torch.round(torch.sqrt(target / aspect)).long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.long().argmax(dim=1, keepdim=True)
    h, w = h.gather(1, first).squeeze(1), w.gather(1, first).squeeze(1)
    found = fits.any(dim=1)
    # fallback: the largest central box with an aspect ratio inside ``ratio``
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fh, fw = height, int(round(height * max(ratio)))
    else:
        fh, fw = height, width
    h = torch.where(found, h, fh)
    w = torch.where(found, w, fw)
    u = torch.rand((n, 2), generator=gen, device=gen.device)
    top = torch.minimum((u[:, 0] * (height - h + 1)).long(), height - h)
    left = torch.minimum((u[:, 1] * (width - w + 1)).long(), width - w)
    top = torch.where(found, top, (height - fh) // 2)
    left = torch.where(found, left, (width - fw) // 2)
    return torch.stack([top, left, h, w], dim=1)


def _cubic_aa(x: Tensor) -> Tensor:
    """The Keys cubic with ``a = -0.5`` that antialiased bicubic resampling uses."""
    a = -0.5
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def _taps(start: Tensor, length: Tensor, out_size: int, flip: Tensor) -> tuple[Tensor, Tensor]:
    """Input indices and weights ``(n, out_size, K)`` of an antialiased bicubic resize.

    Resizes the span ``[start, start + length)`` of an axis to ``out_size`` samples the way
    ``F.interpolate(mode="bicubic", antialias=True, align_corners=False)`` does on the cropped
    span; ``flip`` reverses the output order per crop.
    """
    lf = length.to(torch.float32)
    scale = (lf / out_size)[:, None]  # (n, 1)
    support = torch.where(scale >= 1, 2.0 * scale, torch.full_like(scale, 2.0))
    invscale = torch.where(scale >= 1, 1.0 / scale, torch.ones_like(scale))
    i = torch.arange(out_size, device=start.device, dtype=torch.float32)[None, :]
    center = scale * (i + 0.5)
    xmin = torch.clamp(torch.floor(center - support + 0.5), min=0)
    xmax = torch.minimum(torch.floor(center + support + 0.5), lf[:, None])
    k_max = max(int((xmax - xmin).max()), 1)
    j = xmin[..., None] + torch.arange(k_max, device=start.device, dtype=torch.float32)
    inside = j < xmax[..., None]
    weights = torch.where(inside, _cubic_aa((j - center[..., None] + 0.5) * invscale[..., None]), 0)
    weights = weights / weights.sum(dim=-1, keepdim=True)
    index = torch.minimum(j, (lf - 1)[:, None, None]).long() + start[:, None, None]
    reverse = torch.arange(out_size - 1, -1, -1, device=start.device)
    flip_ix = flip[:, None, None].expand_as(index)
    index = torch.where(flip_ix, index[:, reverse], index)
    weights = torch.where(flip_ix, weights[:, reverse], weights)
    return index, weights


def _chunk(device: torch.device, per_item: int, budget: int = 1 << 18) -> int:
    """Items per chunk: ``budget`` elements on CPU (cache-sized work), 256x that elsewhere."""
    if device.type != "cpu":
        budget <<= 8
    return max(1, budget // max(per_item, 1))


def _gather_rows(flat: Tensor, rows: Tensor, weights: Tensor) -> Tensor:
    """``out[m] = sum_k weights[m, k] * flat[rows[m, k]]`` for flat ``(R, F)``: ``(M, F)``."""
    m, taps = rows.shape
    width = flat.shape[1]
    out = flat.new_empty(m, width)
    step = _chunk(flat.device, taps * width)
    for i in range(0, m, step):
        picked = flat.index_select(0, rows[i : i + step].reshape(-1)).view(-1, taps, width)
        w = weights[i : i + step, None, :].to(flat.dtype)
        out[i : i + step] = torch.bmm(w, picked).squeeze(1)
    return out


def _resize(
    images: Tensor, source: Tensor, rows: tuple[Tensor, Tensor], cols: tuple[Tensor, Tensor]
) -> Tensor:
    """Resample crop ``i`` of image ``source[i]`` with row and column taps: ``(n, S', C, S)``.

    Both passes gather whole contiguous lines (rows of all bands, then columns of all bands
    after a transpose) and contract the taps with one batched matrix product.
    """
    b, c, height, width = images.shape
    n, size, taps = rows[0].shape
    flat = images.permute(0, 2, 1, 3).reshape(b * height, c * width)
    index = (source[:, None, None] * height + rows[0]).reshape(n * size, taps)
    vert = _gather_rows(flat, index, rows[1].reshape(n * size, taps))  # (n, S, C, W)
    cols_ix, cols_w = cols
    size2, taps2 = cols_ix.shape[1:]
    flat2 = vert.view(n, size, c, width).permute(0, 3, 2, 1).reshape(n * width, c * size)
    index2 = torch.arange(n, device=images.device)[:, None, None] * width + cols_ix
    horiz = _gather_rows(flat2, index2.reshape(n * size2, taps2), cols_w.reshape(n * size2, taps2))
    return horiz.view(n, size2, c, size)


def d4_parts(element: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Split D4 elements into (transpose, flip rows, flip columns) of the resampled crop."""
    table = torch.tensor(
        [_D4_TRANSPOSE, _D4_FLIP_ROWS, _D4_FLIP_COLS], dtype=torch.bool, device=element.device
    )
    parts = table[:, element]
    return parts[0], parts[1], parts[2]


def _resample_each(
    images: Tensor, source: Tensor, boxes: Tensor, size: int, element: Tensor
) -> Tensor:
    """The per-crop path: ``F.interpolate`` and the D4 element on each box in turn."""
    crops = []
    rows = zip(source.tolist(), boxes.tolist(), element.tolist(), strict=True)
    for b, (top, left, h, w), e in rows:
        crop = images[b : b + 1, :, top : top + h, left : left + w]
        crop = F.interpolate(
            crop, size=(size, size), mode="bicubic", align_corners=False, antialias=True
        )
        crops.append(_d4(crop[0], e) if e else crop[0])
    return torch.stack(crops)


def resample_boxes(
    images: Tensor,
    boxes: Tensor,
    size: int,
    element: Tensor | None = None,
    source: Tensor | None = None,
    method: str = "auto",
) -> Tensor:
    """Crop images to boxes and resize the crops to ``size`` (antialiased bicubic), then D4.

    Two implementations give the same result (to float rounding): ``"gather"``, one batched
    gather-and-contract per axis for all crops (used on accelerators, where it costs a few
    kernels per batch), and ``"each"``, PyTorch's own antialiased kernel on each crop (used on
    CPU, where that kernel is 3-4x faster than a gather: it never leaves the cache).
    ``"auto"`` picks by device.

    Args:
        images: Float ``(B, C, H, W)``.
        boxes: Long ``(n, 4)`` top, left, height, width.
        size: Output side.
        element: Optional D4 element per crop ``(n,)`` (see ``augment._d4``).
        source: Optional image index of each crop ``(n,)``; default ``arange(n)`` (n = B).
        method: ``"auto"``, ``"gather"`` or ``"each"``.

    Returns:
        ``(n, C, size, size)``.
    """
    n = boxes.shape[0]
    if source is None:
        source = torch.arange(n, device=images.device)
    if element is None:
        element = torch.zeros(n, dtype=torch.long, device=images.device)
    if method not in ("auto", "gather", "each"):
        raise ConfigError(f"resample_boxes: method must be auto, gather or each, got {method!r}.")
    if method == "each" or (method == "auto" and images.device.type == "cpu"):
        return _resample_each(images, source, boxes, size, element)
    transpose, flip_rows, flip_cols = d4_parts(element)
    rows = _taps(boxes[:, 0], boxes[:, 2], size, flip_rows)
    cols = _taps(boxes[:, 1], boxes[:, 3], size, flip_cols)
    out = _resize(images, source, rows, cols)  # (n, S', C, S)
    flip = transpose[:, None, None, None]
    return torch.where(flip, out.permute(0, 2, 1, 3), out.permute(0, 2, 3, 1))


def _blur(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Separable Gaussian blur of ``(n, C, H, W)`` with one sigma per crop (reflect padding)."""
    height, width = x.shape[-2:]
    radius = kernel_size // 2
    coords = torch.arange(kernel_size, dtype=x.dtype, device=x.device) - radius
    kernel = torch.exp(-0.5 * (coords[None, :] / sigma[:, None].to(x.dtype)) ** 2)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).view(-1, 1, 1, 1, kernel_size)
    mode = "reflect" if min(height, width) > radius else "replicate"
    padded = F.pad(x, (radius, radius, radius, radius), mode=mode)
    rows = padded[..., :width] * kernel[..., 0]
    for k in range(1, kernel_size):
        rows.addcmul_(padded[..., k : k + width], kernel[..., k])
    out = rows[..., :height, :] * kernel[..., 0]
    for k in range(1, kernel_size):
        out.addcmul_(rows[..., k : k + height, :], kernel[..., k])
    return out


class BatchedMultiCrop:
    """The multi-crop augmentation of a :class:`MultiCropAugmentation`, batched on a device.

    Args:
        augment: The per-sample augmentation whose parameters (sizes, scales, ratios,
            probabilities, jitter magnitudes, blur and solarisation settings) are used.
        resample: The resampling kernel of :func:`resample_boxes` (``"auto"``: by device).
    """

    def __init__(self, augment: MultiCropAugmentation, resample: str = "auto") -> None:
        self.augment = augment
        self.resample = resample

    @property
    def gram_size(self) -> int | None:
        """Side of the Gram-teacher crops, or ``None``."""
        return self.augment.gram_size

    def _elements(self, n: int, gen: torch.Generator) -> Tensor:
        if not self.augment.flips:
            return torch.zeros(n, dtype=torch.long, device=gen.device)
        return torch.randint(0, 8, (n,), generator=gen, device=gen.device)

    def _jitter(self, x: Tensor, gen: torch.Generator) -> Tensor:
        """Band jitter and grayscale, as ``MultiCropAugmentation._jitter`` on every crop, in place.

        Offset ``o`` then contrast ``f`` about the band mean ``m`` is the per-band affine map
        ``f x + (1 - f) m + o``; crops without jitter get ``f = 1, o = 0, s = 1`` (exact identity).
        """
        a = self.augment
        n, c = x.shape[:2]
        if a.jitter_p > 0:
            on = _bernoulli(n, a.jitter_p, gen)[:, None, None, None]
            offset = _uniform((n, c, 1, 1), -a.brightness, a.brightness, gen).to(x.dtype)
            factor = 1 + _uniform((n, c, 1, 1), -a.contrast, a.contrast, gen).to(x.dtype)
            sat = 1 + _uniform((n, 1, 1, 1), -a.saturation, a.saturation, gen).to(x.dtype)
            factor = torch.where(on, factor, 1)
            shift = torch.where(on, (1 - factor) * x.mean(dim=(-2, -1), keepdim=True) + offset, 0)
            x.mul_(factor).add_(shift)
            sat = torch.where(on, sat, 1)
            gray = x.mean(dim=1, keepdim=True).mul_(1 - sat)
            x.mul_(sat).add_(gray)
        if a.grayscale_p > 0:
            chosen = _bernoulli(n, a.grayscale_p, gen).nonzero().flatten()
            if chosen.numel():
                gray = x[chosen].mean(dim=1, keepdim=True).expand(-1, c, -1, -1)
                x.index_copy_(0, chosen, gray)
        return x

    def _blur(self, x: Tensor, p: Tensor, gen: torch.Generator) -> Tensor:
        """Blur crop ``i`` with probability ``p[i]`` and sigma ``U(blur_sigma)``, in place."""
        a = self.augment
        n = x.shape[0]
        on = torch.rand(n, generator=gen, device=gen.device) < p
        sigma = _uniform((n,), a.blur_sigma[0], a.blur_sigma[1], gen)
        chosen = on.nonzero().flatten()
        if chosen.numel():
            x.index_copy_(0, chosen, _blur(x[chosen], sigma[chosen], a.blur_kernel))
        return x

    def _solarize(self, x: Tensor, gen: torch.Generator) -> Tensor:
        """Solarise each crop with probability ``solarize_p``, in place."""
        a = self.augment
        if a.solarize_p <= 0:
            return x
        t = torch.as_tensor(a.solarize_threshold, dtype=x.dtype, device=x.device).reshape(-1)
        if t.shape[0] not in (1, x.shape[1]):
            raise ConfigError(
                f"MultiCropAugmentation: solarize_threshold has {t.shape[0]} values for "
                f"{x.shape[1]} bands; give one value or one per band."
            )
        t = t.view(1, -1, 1, 1)
        chosen = _bernoulli(x.shape[0], a.solarize_p, gen).nonzero().flatten()
        if chosen.numel():
            y = x[chosen]
            x.index_copy_(0, chosen, torch.where(y >= t, 2 * t - y, y))
        return x

    def __call__(self, images: Tensor, gen: torch.Generator) -> dict[str, Tensor]:
        """Augment a batch of normalised chips.

        On CPU the batch is processed a few images at a time so the intermediate tensors stay
        in cache; on accelerators in one piece.

        Args:
            images: Float ``(B, C, H, W)`` on the training device, normalised per band.
            gen: Random generator on the same device.

        Returns:
            Crop-major stacks (crop 0 of every image, then crop 1, ...): ``"global"``
            ``(2B, C, G, G)``, ``"local"`` ``(n_local B, C, L, L)`` (``(0, C, 0, 0)`` without
            local crops) and, with ``gram_size``, ``"gram"`` ``(2B, C, S, S)``.
        """
        if images.dim() != 4 or not images.is_floating_point():
            raise ConfigError(
                f"BatchedMultiCrop: expected a float (B, C, H, W) batch, got {images.dtype} "
                f"{tuple(images.shape)}; normalise the chips first."
            )
        a = self.augment
        b, c = images.shape[:2]
        sides = [images.shape[-1], a.global_size, a.global_size, a.gram_size or 0]
        per_image = c * (sum(side * side for side in sides) + a.n_local * a.local_size**2)
        step = _chunk(images.device, per_image, budget=1 << 21)
        parts = [self._augment(images[i : i + step], gen) for i in range(0, b, step)]
        out = dict(parts[0])
        for key in out:
            n_crops = out[key].shape[0] // min(step, b)
            if len(parts) > 1 and n_crops:
                chunks = [p[key].view(n_crops, -1, *p[key].shape[1:]) for p in parts]
                out[key] = torch.cat(chunks, dim=1).flatten(0, 1)
        return out

    def _augment(self, images: Tensor, gen: torch.Generator) -> dict[str, Tensor]:
        a = self.augment
        b, _, height, width = images.shape
        device = images.device
        out: dict[str, Tensor] = {}
        boxes = random_boxes(2 * b, height, width, a.global_scale, a.ratio, gen)
        element = self._elements(2 * b, gen)
        source = torch.arange(b, device=device).repeat(2)
        crops = resample_boxes(images, boxes, a.global_size, element, source, self.resample)
        if a.gram_size is not None:
            out["gram"] = resample_boxes(images, boxes, a.gram_size, element, source, self.resample)
        crops = self._jitter(crops, gen)
        p = torch.tensor(a.blur_p[:2], device=device).repeat_interleave(b)
        crops = self._blur(crops, p, gen)
        self._solarize(crops[b:], gen)
        out["global"] = crops
        if a.n_local:
            n = a.n_local * b
            boxes = random_boxes(n, height, width, a.local_scale, a.ratio, gen)
            source = torch.arange(b, device=device).repeat(a.n_local)
            element = self._elements(n, gen)
            crops = resample_boxes(images, boxes, a.local_size, element, source, self.resample)
            p = torch.full((n,), a.blur_p[2], device=device)
            out["local"] = self._blur(self._jitter(crops, gen), p, gen)
        else:
            out["local"] = images.new_zeros(0, images.shape[1], 0, 0)
        return out
