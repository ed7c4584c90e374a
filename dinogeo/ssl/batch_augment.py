"""Batched multi-crop augmentation on the training device (GPU or CPU).

:class:`BatchedMultiCrop` applies the augmentation of
:class:`~dinogeo.ssl.augment.MultiCropAugmentation` to a whole batch of normalised chips at
once, with the same parameters, probabilities and per-crop random distributions, but one
vectorised operation per step instead of one small operation per crop:

* RandomResizedCrop boxes: the 10 tries of every crop drawn at once, the first fitting one kept;
* resampling: antialiased bicubic exactly as ``F.interpolate(..., mode="bicubic",
  antialias=True)`` computes it (Keys cubic ``a = -0.5``, support widened by the down-scaling
  factor), as per-crop tap indices and weights applied by gathers, so every crop has its own box;
* D4: the flips are folded into the tap order, the transposes are a per-crop ``where`` (on
  CPU every crop of a group is written to the output with its element by one gather);
* band jitter and grayscale as one per-crop band-mixing matrix and offset (a single batched
  matrix product), Gaussian blur (per-crop sigma, 9 shifted multiply-adds per axis, or two
  batched matrix products on crops up to 32 px) and solarisation on the crops that draw them.

It runs on whatever device the images are on; random draws come from a ``torch.Generator`` on
that device, all drawn for the whole batch at once. On CPU the crops are resampled (PyTorch's
own antialiased kernel, into a scratch group) and distorted a group (4 MiB) at a time, so every
crop is read and written while it is still in cache; on accelerators in one piece.
Scratch buffers (the crop groups, the blur's padded input and row pass) are a
:class:`Workspace` kept from batch to batch: fresh multi-megabyte buffers cost a page fault per
4 KiB on every batch.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from dinogeo.errors import ConfigError
from dinogeo.ssl.augment import MultiCropAugmentation

__all__ = ["BatchedMultiCrop", "d4_parts", "random_boxes", "resample_boxes"]

# elements of crops resampled and distorted together on CPU (4 MiB of float32: with the scratch
# buffers kept between batches, measured faster than 1 MiB groups at both bench crop settings)
_GROUP = 1 << 20
# ``F.interpolate(mode="bicubic", antialias=True)``'s kernel, called with ``out=`` (contiguous)
# crops up to this side are blurred by matrix products, bigger ones by shifted multiply-adds
# (faster at 32 px, slower at 64 px, on one CPU thread)
_BLUR_MATRIX_MAX = 32
_aa_bicubic: Callable[..., Tensor] = torch._C._nn._upsample_bicubic2d_aa
# ``F.pad``'s reflect and replicate kernels, called with ``out=`` (a reused buffer)
_reflect_pad: Callable[..., Tensor] = torch._C._nn.reflection_pad2d  # type: ignore[attr-defined]
_replicate_pad: Callable[..., Tensor] = torch._C._nn.replication_pad2d  # type: ignore[attr-defined]

# D4 element e (e % 4 quarter turns, then a horizontal flip if e >= 4) of a resampled crop R,
# written as transpose^t(flip_rows^r(flip_cols^c(R))): the flips fold into the tap order.
_D4_TRANSPOSE = (False, True, False, True, False, True, False, True)
_D4_FLIP_ROWS = (False, False, True, True, False, True, True, False)
_D4_FLIP_COLS = (False, True, True, False, True, True, False, False)


def _uniform(shape: tuple[int, ...], low: float, high: float, gen: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(shape, generator=gen, device=gen.device)


def _bernoulli(n: int, p: float, gen: torch.Generator) -> Tensor:
    return torch.rand(n, generator=gen, device=gen.device) < p


class Workspace:
    """Scratch tensors kept from one batch to the next (reused, so never handed out as results).

    Fresh multi-megabyte buffers cost the CPU a page fault per 4 KiB every batch (the allocator
    hands large blocks back to the system), about as much as the work done in them.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, Tensor] = {}

    def get(
        self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
    ) -> Tensor:
        """A contiguous ``shape`` buffer (contents undefined), reused while it is big enough."""
        numel = math.prod(shape)
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < numel or buf.dtype != dtype or buf.device != device:
            buf = torch.empty(numel, dtype=dtype, device=device)
            self._buffers[name] = buf
        return buf[:numel].view(shape)


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


def _resample_each(out: Tensor, images: Tensor, source: Tensor, boxes: Tensor) -> Tensor:
    """PyTorch's antialiased bicubic kernel on each box, written straight into ``out[i]``."""
    size = out.shape[-1]
    c = images.shape[1]
    strides = images.stride()
    step = torch.tensor([strides[0], strides[2], strides[3]], device=boxes.device)
    where = torch.stack([source, boxes[:, 0], boxes[:, 1]], dim=1)
    offsets = ((where * step).sum(dim=1) + images.storage_offset()).tolist()
    sides = boxes[:, 2:].tolist()
    for offset, (h, w), target in zip(offsets, sides, out.split(1), strict=True):
        crop = images.as_strided((1, c, h, w), strides, offset)
        _aa_bicubic(crop, [size, size], False, None, None, out=target)
    return out


@functools.lru_cache(maxsize=16)
def _d4_pixel_order(size: int, device: torch.device) -> Tensor:
    """``(8, size * size)``: for D4 element ``e``, the flat source pixel of each output pixel."""
    grid = torch.arange(size * size, device=device).view(size, size)
    orders = []
    for t, fr, fc in zip(_D4_TRANSPOSE, _D4_FLIP_ROWS, _D4_FLIP_COLS, strict=True):
        moved = grid.flip([d for d, on in ((0, fr), (1, fc)) if on])
        orders.append((moved.T if t else moved).reshape(-1))
    return torch.stack(orders)


def _d4_into(out: Tensor, crops: Tensor, element: Tensor) -> Tensor:
    """``out[i] = D4 element[i] of crops[i]`` for square crops: one gather of every pixel."""
    n, c, size = crops.shape[:3]
    order = _d4_pixel_order(size, crops.device)[element]  # (n, size * size)
    flat = (n, c, size * size)
    torch.gather(crops.reshape(flat), 2, order[:, None, :].expand(flat), out=out.view(flat))
    return out


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
        crops = _resample_each(
            images.new_empty(n, images.shape[1], size, size), images, source, boxes
        )
        return _d4_into(torch.empty_like(crops), crops, element)
    transpose, flip_rows, flip_cols = d4_parts(element)
    rows = _taps(boxes[:, 0], boxes[:, 2], size, flip_rows)
    cols = _taps(boxes[:, 1], boxes[:, 3], size, flip_cols)
    out = _resize(images, source, rows, cols)  # (n, S', C, S)
    flip = transpose[:, None, None, None]
    return torch.where(flip, out.permute(0, 2, 1, 3), out.permute(0, 2, 3, 1))


def _gaussian_kernels(sigma: Tensor, kernel_size: int, dtype: torch.dtype) -> Tensor:
    """Normalised 1-D Gaussian kernels ``(n, kernel_size)``, one per sigma."""
    coords = torch.arange(kernel_size, dtype=dtype, device=sigma.device) - kernel_size // 2
    kernel = torch.exp(-0.5 * (coords[None, :] / sigma[:, None].to(dtype)) ** 2)
    return kernel / kernel.sum(dim=1, keepdim=True)


def _blur_matrix(kernel: Tensor, length: int, reflect: bool) -> Tensor:
    """``(n, length, length)`` matrices ``M`` with ``M @ v`` the padded 1-D convolution of ``v``."""
    n, size = kernel.shape
    radius = size // 2
    taps = torch.arange(size, device=kernel.device) - radius
    source = torch.arange(length, device=kernel.device)[:, None] + taps
    if reflect:
        source = source.abs()
        source = torch.where(source > length - 1, 2 * (length - 1) - source, source)
    else:
        source = source.clamp(0, length - 1)
    matrix = kernel.new_zeros(n, length, length)
    return matrix.scatter_add_(
        2, source.expand(n, length, size), kernel[:, None, :].expand(n, length, size)
    )


def _blur_matrices(x: Tensor, kernel: Tensor, out: Tensor, workspace: Workspace) -> Tensor:
    """:func:`_blur` with kernels ``(n, K)`` as two batched matrix products (same sums).

    Faster than shifted multiply-adds on small crops.
    """
    n, c, height, width = x.shape
    reflect = min(height, width) > kernel.shape[1] // 2
    rows = workspace.get("blur_rows", (n, c * height, width), x.dtype, x.device)
    torch.bmm(x.reshape(n, c * height, width), _blur_matrix(kernel, width, reflect).mT, out=rows)
    column = _blur_matrix(kernel, height, reflect)[:, None]
    return torch.matmul(column, rows.view(n, c, height, width), out=out)


def _blur(
    x: Tensor,
    sigma: Tensor,
    kernel_size: int,
    out: Tensor | None = None,
    workspace: Workspace | None = None,
    keep: Tensor | None = None,
) -> Tensor:
    """Separable Gaussian blur of ``(n, C, H, W)`` with one sigma per crop (reflect padding).

    Written to ``out`` (which may be ``x``) or a new tensor; the padded input and the row pass
    live in ``workspace`` when given. Crops where ``keep`` (bool ``(n,)``) get a one-tap kernel
    (1 at the centre, 0 elsewhere): they come out exactly as they went in.
    """
    n, c, height, width = x.shape
    radius = kernel_size // 2
    ws = workspace if workspace is not None else Workspace()
    out = x.new_empty(x.shape) if out is None else out
    kernel = _gaussian_kernels(sigma, kernel_size, x.dtype)
    if keep is not None:
        one_tap = torch.zeros(kernel_size, dtype=x.dtype, device=x.device)
        one_tap[radius] = 1.0
        kernel = torch.where(keep[:, None], one_tap, kernel)
    if max(height, width) <= _BLUR_MATRIX_MAX:
        return _blur_matrices(x, kernel, out, ws)
    kernel = kernel.view(-1, 1, 1, 1, kernel_size)
    pad = [radius] * 4
    padded = ws.get("blur_pad", (n, c, height + 2 * radius, width + 2 * radius), x.dtype, x.device)
    if min(height, width) > radius:
        _reflect_pad(x, pad, out=padded)
    else:
        _replicate_pad(x, pad, out=padded)
    rows = ws.get("blur_rows", (n, c, height + 2 * radius, width), x.dtype, x.device)
    torch.mul(padded[..., :width], kernel[..., 0], out=rows)
    for k in range(1, kernel_size):
        rows.addcmul_(padded[..., k : k + width], kernel[..., k])
    torch.mul(rows[..., :height, :], kernel[..., 0], out=out)
    for k in range(1, kernel_size):
        out.addcmul_(rows[..., k : k + height, :], kernel[..., k])
    return out


def _on_chosen(x: Tensor, chosen: Tensor, fn: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """Replace the crops of ``x`` where ``chosen`` by ``fn(crops, index)``, in place."""
    index = chosen.nonzero().flatten()
    if index.numel() == x.shape[0]:
        x.copy_(fn(x, index))
    elif index.numel():
        x.index_copy_(0, index, fn(x[index], index))
    return x


class _Distortion(NamedTuple):
    """Photometric draws of a group of crops (one row per crop)."""

    mix: Tensor  # (n, C, C): grayscale @ saturation, applied after the contrast
    factor: Tensor  # (n, C): contrast factors (1 without jitter)
    offset: Tensor  # (n, C): brightness offsets (0 without jitter)
    blur: Tensor  # (n,) bool
    sigma: Tensor  # (n,)
    solarize: Tensor  # (n,) bool

    def rows(self, part: slice) -> _Distortion:
        return _Distortion(*(t[part] for t in self))


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
        self._workspace = Workspace()

    @property
    def gram_size(self) -> int | None:
        """Side of the Gram-teacher crops, or ``None``."""
        return self.augment.gram_size

    def _elements(self, n: int, gen: torch.Generator) -> Tensor:
        if not self.augment.flips:
            return torch.zeros(n, dtype=torch.long, device=gen.device)
        return torch.randint(0, 8, (n,), generator=gen, device=gen.device)

    def _draw(
        self, n: int, c: int, blur_p: Tensor, solarize: Tensor, gen: torch.Generator
    ) -> _Distortion:
        """Draw the photometric distortions of ``n`` crops as ``MultiCropAugmentation`` does.

        Band jitter (probability ``jitter_p``): offset ``o`` and contrast ``f`` about the band
        mean ``m`` (``f x + (1 - f) m + o``), then the saturation ``s`` about the mean over
        bands; grayscale (``grayscale_p``) replaces the bands by their mean. Saturation and
        grayscale are linear over bands, so they form one ``(C, C)`` matrix per crop; crops
        without jitter get ``f = 1, o = 0, s = 1`` (exact identity). Blur with probability
        ``blur_p[i]`` and sigma ``U(blur_sigma)``; solarisation where ``solarize`` and with
        probability ``solarize_p``.
        """
        a = self.augment
        device = gen.device
        eye = torch.eye(c, device=device)
        factor, offset = torch.ones(n, c, device=device), torch.zeros(n, c, device=device)
        mix = eye.expand(n, c, c)
        if a.jitter_p > 0:
            on = _bernoulli(n, a.jitter_p, gen)[:, None]
            offset = torch.where(on, _uniform((n, c), -a.brightness, a.brightness, gen), 0)
            factor = torch.where(on, 1 + _uniform((n, c), -a.contrast, a.contrast, gen), 1)
            sat = torch.where(on, 1 + _uniform((n, 1), -a.saturation, a.saturation, gen), 1)
            mix = sat[:, :, None] * eye + (1 - sat[:, :, None]) / c
        if a.grayscale_p > 0:
            gray = _bernoulli(n, a.grayscale_p, gen)[:, None, None]
            mix = torch.where(gray, torch.full_like(mix, 1 / c) @ mix, mix)
        blur = torch.rand(n, generator=gen, device=device) < blur_p
        sigma = _uniform((n,), a.blur_sigma[0], a.blur_sigma[1], gen)
        solar = solarize & _bernoulli(n, a.solarize_p, gen)
        return _Distortion(mix, factor, offset, blur, sigma, solar)

    def _threshold(self, c: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        """Per-band solarisation threshold ``(1, C, 1, 1)`` (one value or one per band)."""
        a = self.augment
        t = torch.as_tensor(a.solarize_threshold, dtype=dtype, device=device).reshape(-1)
        if t.shape[0] not in (1, c):
            raise ConfigError(
                f"MultiCropAugmentation: solarize_threshold has {t.shape[0]} values for "
                f"{c} bands; give one value or one per band."
            )
        return t.view(1, -1, 1, 1)

    def _blur_chosen(self, x: Tensor, chosen: Tensor, sigma: Tensor) -> None:
        """Blur the crops of ``x`` where ``chosen``, in place."""
        index = chosen.nonzero().flatten()
        kernel = self.augment.blur_kernel
        if 4 * index.numel() >= 3 * x.shape[0]:
            # mostly blurred: the whole group in place, the others through a one-tap kernel
            # (cheaper than gathering and scattering the blurred crops)
            keep = None if index.numel() == x.shape[0] else ~chosen
            _blur(x, sigma, kernel, out=x, workspace=self._workspace, keep=keep)
        elif index.numel():
            picked = self._workspace.get(
                "blur_in", (index.numel(), *x.shape[1:]), x.dtype, x.device
            )
            torch.index_select(x, 0, index, out=picked)
            _blur(picked, sigma[index], kernel, out=picked, workspace=self._workspace)
            x.index_copy_(0, index, picked)

    def _distort(self, x: Tensor, d: _Distortion, t: Tensor, out: Tensor | None = None) -> Tensor:
        """Jitter and grayscale, blur and solarise the crops ``x`` ``(k, C, S, S)``.

        With band jitter or grayscale the result is written to ``out`` (a scratch buffer; a new
        tensor if ``None``), otherwise ``x`` is changed in place; the result is returned.
        """
        a = self.augment
        k, c = x.shape[:2]
        target = x
        if a.jitter_p > 0 or a.grayscale_p > 0:
            flat = x.reshape(k, c, -1)
            shift = (1 - d.factor) * flat.mean(dim=-1) + d.offset
            bias = torch.bmm(d.mix, shift[:, :, None]).to(x.dtype)
            matrix = (d.mix * d.factor[:, None, :]).to(x.dtype)
            target = x.new_empty(x.shape) if out is None else out
            torch.baddbmm(bias, matrix, flat, out=target.view(k, c, -1))
        self._blur_chosen(target, d.blur, d.sigma)
        return _on_chosen(target, d.solarize, lambda z, _: torch.where(z >= t, 2 * t - z, z))

    def _crops(
        self,
        images: Tensor,
        geometry: tuple[Tensor, Tensor, Tensor],
        size: int,
        distortion: _Distortion | None,
    ) -> Tensor:
        """Resample the boxes (``source``, ``boxes``, ``element``) to ``size`` and distort them.

        On CPU a group of crops (4 MiB) at a time: each box is resampled into a scratch
        group, distorted there (the photometric operations and the blur commute with D4 on
        square crops) and written once to the output with its D4 element; the scratch buffers
        are kept from batch to batch. Elsewhere in one piece, with D4 folded into the taps.
        """
        source, boxes, element = geometry
        n, c = boxes.shape[0], images.shape[1]
        out = images.new_empty(n, c, size, size)
        each = self.resample == "each" or (self.resample == "auto" and images.device.type == "cpu")
        threshold = self._threshold(c, images.dtype, images.device)
        step = _chunk(images.device, c * size * size, budget=_GROUP)
        shape = (min(step, n), c, size, size)
        ws = self._workspace
        scratch = ws.get("crops", shape, images.dtype, images.device) if each else None
        jittered = ws.get("jittered", shape, images.dtype, images.device) if each else None
        for i in range(0, n, step):
            part = slice(i, i + step)
            k = out[part].shape[0]
            if scratch is not None:
                crops = _resample_each(scratch[:k], images, source[part], boxes[part])
            else:
                crops = resample_boxes(
                    images, boxes[part], size, element[part], source[part], self.resample
                )
            if distortion is not None:
                into = None if jittered is None else jittered[:k]
                crops = self._distort(crops, distortion.rows(part), threshold, out=into)
            if scratch is not None:
                _d4_into(out[part], crops, element[part])
            else:
                out[part] = crops
        return out

    def __call__(self, images: Tensor, gen: torch.Generator) -> dict[str, Tensor]:
        """Augment a batch of normalised chips.

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
        b, c, height, width = images.shape
        device = images.device
        self._threshold(c, images.dtype, device)  # bad thresholds fail before any work
        out: dict[str, Tensor] = {}
        n = 2 * b
        boxes = random_boxes(n, height, width, a.global_scale, a.ratio, gen)
        geometry = (torch.arange(b, device=device).repeat(2), boxes, self._elements(n, gen))
        blur_p = torch.tensor(a.blur_p[:2], device=device).repeat_interleave(b)
        second = torch.arange(n, device=device) >= b  # solarisation: global crop 2 only
        distortion = self._draw(n, c, blur_p, second, gen)
        out["global"] = self._crops(images, geometry, a.global_size, distortion)
        if a.gram_size is not None:
            out["gram"] = self._crops(images, geometry, a.gram_size, None)
        if a.n_local:
            n = a.n_local * b
            boxes = random_boxes(n, height, width, a.local_scale, a.ratio, gen)
            index = torch.arange(b, device=device).repeat(a.n_local)
            geometry = (index, boxes, self._elements(n, gen))
            blur_p = torch.full((n,), a.blur_p[2], device=device)
            no = torch.zeros(n, dtype=torch.bool, device=device)
            distortion = self._draw(n, c, blur_p, no, gen)
            out["local"] = self._crops(images, geometry, a.local_size, distortion)
        else:
            out["local"] = images.new_zeros(0, c, 0, 0)
        return out
