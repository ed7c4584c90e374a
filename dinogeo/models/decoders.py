"""Dense decoders on ViT patch features: a linear head and a DPT-style head.

Both take the list of (B, D, h, w) feature maps returned by
:meth:`dinogeo.models.Backbone.get_intermediate_layers` and return (B, K, H, W) at pixel
resolution (``H = h * patch_size`` unless an explicit ``size`` is given).

* :class:`LinearDecoder`: optional BatchNorm, dropout and a 1x1 convolution on the last feature
  map, then bilinear upsampling of the K output maps (the DINOv3 linear-probe head; the linear
  map commutes with bilinear interpolation, so upsampling the outputs equals upsampling the
  features and is cheaper).
* :class:`DPTDecoder`: Ranftl et al.'s Dense Prediction Transformer decoder, as DINOv3 uses it
  for depth and canopy height (ViT-L layers 5, 11, 17, 23; 128 hidden channels, no BatchNorm
  for CHMv2). Four feature maps are reassembled at 4x, 2x, 1x and 1/2x the token grid
  (transposed convolutions / strided convolution; shifted down for patches under 8 pixels, see
  :func:`dpt_scales`), fused from coarse to fine by residual
  convolution units, and a small convolutional head upsamples to full resolution. The cls token
  readout is not used (``"ignore"`` readout), since the backbone returns patch tokens only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from dinogeo.errors import ConfigError

__all__ = ["DPTDecoder", "LinearDecoder", "dpt_layer_indices", "dpt_scales"]


def dpt_layer_indices(depth: int, count: int = 4) -> list[int]:
    """Return ``count`` evenly spaced block indices ending at the last block.

    ViT-L (depth 24) gives [5, 11, 17, 23] as in the DINOv3 DPT heads; depth 12 gives
    [2, 5, 8, 11].

    Raises:
        ConfigError: if ``depth < count`` or ``count < 1``.
    """
    if count < 1 or depth < count:
        raise ConfigError(f"cannot pick {count} layers from a backbone of depth {depth}")
    return [(i + 1) * depth // count - 1 for i in range(count)]


def dpt_scales(patch_size: int) -> list[float]:
    """Scales of DPT's four reassembled maps relative to the token grid, shallowest first.

    DPT's 4, 2, 1 and 1/2 for patches of 8 pixels or more (the finest fused map, twice the
    first, then lies at 1/2 pixel resolution for 16-pixel patches, at pixel resolution for 8).
    For smaller patches the pyramid shifts down so that the finest fused map stays at pixel
    resolution instead of above it (patch 2: 1, 1/2, 1/4, 1/8 of the grid), which would only
    cost compute: 16x the pixels at patch 2.
    """
    top = min(4.0, max(1, patch_size) / 2)
    return [top, top / 2, top / 4, top / 8]


def _resample(channels: int, scale: float) -> nn.Module:
    if scale > 1:
        k = round(scale)
        return nn.ConvTranspose2d(channels, channels, kernel_size=k, stride=k)
    if scale == 1:
        return nn.Identity()
    return nn.Conv2d(channels, channels, kernel_size=3, stride=round(1 / scale), padding=1)


def _output_size(feature: Tensor, patch_size: int, size: Sequence[int] | None) -> tuple[int, int]:
    if size is not None:
        return int(size[0]), int(size[1])
    return int(feature.shape[-2]) * patch_size, int(feature.shape[-1]) * patch_size


def _check_features(
    features: Sequence[Tensor], count: int, embed_dim: int, name: str
) -> list[Tensor]:
    feats = list(features)
    if len(feats) < count:
        raise ConfigError(f"{name} needs {count} feature map(s), got {len(feats)}")
    for f in feats[-count:]:
        if f.ndim != 4 or f.shape[1] != embed_dim:
            raise ConfigError(
                f"{name} expects (B, {embed_dim}, h, w) feature maps, got {tuple(f.shape)}: "
                "pass Backbone.get_intermediate_layers output"
            )
    return feats[-count:]


class LinearDecoder(nn.Module):
    """Linear head on the last feature map, upsampled bilinearly to pixels.

    Args:
        embed_dim: feature width D.
        num_outputs: output channels K (classes, bins...).
        patch_size: backbone patch size (default output size = token grid * patch size).
        batch_norm: apply BatchNorm to the features first (DINOv3 linear probe).
        dropout: dropout rate on the features.
    """

    def __init__(
        self,
        embed_dim: int,
        num_outputs: int,
        *,
        patch_size: int = 16,
        batch_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if num_outputs < 1:
            raise ConfigError(f"num_outputs must be at least 1, got {num_outputs}")
        self.embed_dim = embed_dim
        self.num_outputs = num_outputs
        self.patch_size = patch_size
        self.norm: nn.Module = nn.BatchNorm2d(embed_dim) if batch_norm else nn.Identity()
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(embed_dim, num_outputs, kernel_size=1)

    def forward(self, features: Sequence[Tensor], size: Sequence[int] | None = None) -> Tensor:
        """Map the last (B, D, h, w) feature map to (B, K, H, W).

        Args:
            features: feature maps; only the last one is used.
            size: output (H, W); default ``(h * patch_size, w * patch_size)``.
        """
        (feat,) = _check_features(features, 1, self.embed_dim, "LinearDecoder")
        out: Tensor = self.classifier(self.dropout(self.norm(feat)))
        target = _output_size(feat, self.patch_size, size)
        if tuple(out.shape[-2:]) != target:
            out = F.interpolate(out, size=target, mode="bilinear", align_corners=False)
        return out


class _ResidualConvUnit(nn.Module):
    def __init__(self, channels: int, batch_norm: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=not batch_norm)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=not batch_norm)
        self.bn1: nn.Module = nn.BatchNorm2d(channels) if batch_norm else nn.Identity()
        self.bn2: nn.Module = nn.BatchNorm2d(channels) if batch_norm else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.bn1(self.conv1(F.relu(x)))
        out = self.bn2(self.conv2(F.relu(out)))
        return x + out


class _FusionBlock(nn.Module):
    def __init__(self, channels: int, batch_norm: bool, has_skip: bool) -> None:
        super().__init__()
        self.skip_unit = _ResidualConvUnit(channels, batch_norm) if has_skip else None
        self.unit = _ResidualConvUnit(channels, batch_norm)
        self.out_conv = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor, skip: Tensor | None, size: tuple[int, int]) -> Tensor:
        if skip is not None and self.skip_unit is not None:
            if x.shape[-2:] != skip.shape[-2:]:
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = x + self.skip_unit(skip)
        x = self.unit(x)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        out: Tensor = self.out_conv(x)
        return out


class DPTDecoder(nn.Module):
    """DPT-style decoder over four intermediate layers.

    Args:
        embed_dim: feature width D of the backbone.
        layer_indices: the four backbone blocks the features come from (kept for the caller,
            e.g. ``dpt_layer_indices(backbone.depth)``; ViT-L uses [5, 11, 17, 23]).
        num_outputs: output channels K.
        features: channels of the fusion path (128 in DINOv3's canopy-height head).
        reassemble_channels: channels of the four reassembled maps; default
            ``(D // 4, D // 2, D, D)`` as in DPT-Large.
        patch_size: backbone patch size (default output size = token grid * patch size).
        batch_norm: BatchNorm in the residual units (off in DINOv3's CHMv2 head).
        dropout: dropout before the last 1x1 convolution.
        head_channels: hidden channels of the output head.
    """

    def __init__(
        self,
        embed_dim: int,
        layer_indices: Sequence[int],
        num_outputs: int,
        *,
        features: int = 128,
        reassemble_channels: Sequence[int] | None = None,
        patch_size: int = 16,
        batch_norm: bool = False,
        dropout: float = 0.0,
        head_channels: int = 32,
    ) -> None:
        super().__init__()
        if len(layer_indices) != 4:
            raise ConfigError(
                f"DPTDecoder needs 4 layer indices, got {list(layer_indices)}: use "
                "dinogeo.models.decoders.dpt_layer_indices(backbone.depth)"
            )
        if num_outputs < 1 or features < 2:
            raise ConfigError(
                f"DPTDecoder needs num_outputs >= 1 and features >= 2, got {num_outputs}, {features}"
            )
        channels = list(
            reassemble_channels or (embed_dim // 4, embed_dim // 2, embed_dim, embed_dim)
        )
        if len(channels) != 4 or min(channels) < 1:
            raise ConfigError(f"reassemble_channels must be 4 positive ints, got {channels}")
        self.embed_dim = embed_dim
        self.layer_indices = list(layer_indices)
        self.num_outputs = num_outputs
        self.patch_size = patch_size
        self.project = nn.ModuleList(nn.Conv2d(embed_dim, c, kernel_size=1) for c in channels)
        self.resample = nn.ModuleList(
            _resample(c, scale) for c, scale in zip(channels, dpt_scales(patch_size), strict=True)
        )
        self.to_features = nn.ModuleList(
            nn.Conv2d(c, features, kernel_size=3, padding=1, bias=False) for c in channels
        )
        self.fusion = nn.ModuleList(
            _FusionBlock(features, batch_norm, has_skip=i < 3) for i in range(4)
        )
        self.head = nn.Sequential(
            nn.Conv2d(features, features // 2, kernel_size=3, padding=1),
        )
        self.head_out = nn.Sequential(
            nn.Conv2d(features // 2, head_channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout) if dropout > 0 else nn.Identity(),
            nn.Conv2d(head_channels, num_outputs, kernel_size=1),
        )

    def forward(self, features: Sequence[Tensor], size: Sequence[int] | None = None) -> Tensor:
        """Decode four (B, D, h, w) feature maps (shallow to deep) into (B, K, H, W).

        Args:
            features: feature maps of the four layers, shallowest first.
            size: output (H, W); default ``(h * patch_size, w * patch_size)``.
        """
        feats = _check_features(features, 4, self.embed_dim, "DPTDecoder")
        target = _output_size(feats[-1], self.patch_size, size)
        maps = [
            conv(resample(project(f)))
            for f, project, resample, conv in zip(
                feats, self.project, self.resample, self.to_features, strict=True
            )
        ]
        # coarse to fine: maps[3] (1/2 grid) -> maps[2] (grid) -> maps[1] (2x) -> maps[0] (4x)
        path = self.fusion[3](maps[3], None, tuple(maps[2].shape[-2:]))
        path = self.fusion[2](path, maps[2], tuple(maps[1].shape[-2:]))
        path = self.fusion[1](path, maps[1], tuple(maps[0].shape[-2:]))
        h0, w0 = maps[0].shape[-2:]
        path = self.fusion[0](path, maps[0], (2 * h0, 2 * w0))
        out = self.head(path)
        out = F.interpolate(out, size=target, mode="bilinear", align_corners=False)
        result: Tensor = self.head_out(out)
        return result
