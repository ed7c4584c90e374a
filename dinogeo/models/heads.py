"""Dense models on a (frozen) backbone: segmentation, binned canopy height and siamese change.

Every model is a backbone plus a decoder (linear or DPT, from :mod:`dinogeo.models.decoders`)
over a few intermediate layers, and is fully described by a JSON-ready :class:`HeadConfig`, so a
model bundle rebuilds it without executing code from the file.

* :class:`SegmentationModel`: class logits (B, K, H, W).
* :class:`HeightModel`: the decoder predicts logits over ``bins`` log-spaced height bins (up to
  ``max_height`` metres) and the height is their soft-argmax (the probability-weighted mean of the
  bin centres), as the DINOv3 canopy-height (CHMv2) model does. Output (B, 1, H, W) in metres.
* :class:`ChangeModel`: the same backbone runs on both dates; per layer the two feature maps are
  fused from their concatenation and absolute difference (1x1 convolution) and decoded into
  change logits (B, K, H, W).

Optional ``image_skip``: a small full-resolution convolutional branch on the input pixels is
concatenated with the upsampled decoder output before the last layers. With 16-pixel patches a
10 m Sentinel-2 patch token covers 160 m; the branch lets class boundaries follow the pixels.
Optional ``pixel_linear``: a per-pixel linear map of the input bands added to the output logits,
so the head contains the per-pixel linear classifier on the raw bands (and a trainer can start it
at that classifier's fit: see ``LandCoverTask``'s ``pixel_init``).
Optional ``feature_linear`` (segmentation and height): a linear map of the decoder layers'
features (a 1x1 convolution at token resolution, bilinearly upsampled) added to the output, so
the head also contains the linear probe of the frozen features; with ``pixel_init`` the trainer
starts the two linear terms at the joint linear probe of bands and features (LP-FT).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinogeo.errors import ConfigError
from dinogeo.models.backbone import Backbone
from dinogeo.models.decoders import DPTDecoder, LinearDecoder, dpt_layer_indices

__all__ = [
    "ChangeModel",
    "DenseModel",
    "HeadConfig",
    "HeightModel",
    "SegmentationModel",
    "build_model",
    "change_pixels",
    "height_bin_centres",
]

HEAD_TYPES = ("segmentation", "height", "change")
DECODERS = ("linear", "dpt")


def height_bin_centres(bins: int, min_height: float, max_height: float) -> Tensor:
    """Log-spaced (geometric) bin centres from ``min_height`` to ``max_height`` metres."""
    if bins < 2 or not 0 < min_height < max_height:
        raise ConfigError(
            f"height bins need bins >= 2 and 0 < min_height < max_height, got {bins}, "
            f"{min_height}, {max_height}"
        )
    return torch.logspace(math.log10(min_height), math.log10(max_height), bins)


@dataclass
class HeadConfig:
    """Everything needed to rebuild a dense model around a backbone.

    Attributes:
        type: ``"segmentation"``, ``"height"`` or ``"change"``.
        num_outputs: classes K (segmentation/change) or 1 (height).
        decoder: ``"dpt"`` or ``"linear"``.
        layer_indices: backbone blocks whose patch tokens feed the decoder (the linear decoder
            uses the last one).
        features: DPT hidden width.
        image_skip: channels of the full-resolution image branch (0 turns it off).
        bins: height bins (height models).
        min_height: centre of the lowest bin, metres.
        max_height: centre of the highest bin, metres.
        pixel_linear: add a per-pixel linear map of the input bands (1x1 convolution) to the
            outputs (False in bundles written before it existed).
        feature_linear: add a linear map of the decoder layers' features (1x1 convolution at
            token resolution, bilinearly upsampled) to the outputs: the linear probe of the
            backbone inside the head (segmentation and height heads; False in older bundles).
    """

    type: str
    num_outputs: int
    decoder: str = "dpt"
    layer_indices: list[int] = field(default_factory=list)
    features: int = 128
    image_skip: int = 0
    bins: int = 256
    min_height: float = 1e-3
    max_height: float = 96.0
    pixel_linear: bool = False
    feature_linear: bool = False

    def __post_init__(self) -> None:
        if self.type not in HEAD_TYPES:
            raise ConfigError(f"head type {self.type!r} is not one of {list(HEAD_TYPES)}")
        if self.decoder not in DECODERS:
            raise ConfigError(f"decoder {self.decoder!r} is not one of {list(DECODERS)}")
        if self.num_outputs < 1 or self.image_skip < 0 or self.features < 1:
            raise ConfigError(
                "num_outputs and features must be positive and image_skip >= 0, got "
                f"{self.num_outputs}, {self.features}, {self.image_skip}"
            )
        if self.feature_linear and self.type == "change":
            raise ConfigError(
                "feature_linear is for segmentation and height heads: a change head's features "
                "are fused by learned layers, so there is no frozen feature to probe; set "
                "feature_linear: false"
            )
        self.layer_indices = [int(i) for i in self.layer_indices]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeadConfig:
        """Rebuild from :meth:`to_dict` output (unknown keys raise ConfigError)."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"head config has unknown keys {sorted(unknown)}")
        return cls(**data)


class _PixelBranch(nn.Module):
    """Full-resolution conv branch on the input, fused with the upsampled decoder output."""

    def __init__(self, in_chans: int, hidden: int, channels: int, num_outputs: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, channels, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.GELU(),
        )
        self.fuse = nn.Sequential(
            nn.Conv2d(hidden + channels, channels, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(channels, num_outputs, 1),
        )

    def forward(self, decoded: Tensor, image: Tensor) -> Tensor:
        fused: Tensor = self.fuse(torch.cat([decoded, self.stem(image)], dim=1))
        return fused


class DenseModel(nn.Module):
    """Backbone + decoder producing a dense map the size of the input.

    Args:
        backbone: the ViT (frozen or partly trainable: see :meth:`Backbone.freeze`).
        config: the head configuration; empty ``layer_indices`` get the default.
        skip_in_chans: input channels of the image branch (defaults to the backbone's).
    """

    def __init__(
        self, backbone: Backbone, config: HeadConfig, *, skip_in_chans: int | None = None
    ) -> None:
        super().__init__()
        if not config.layer_indices:
            count = 4 if config.decoder == "dpt" else 1
            config.layer_indices = dpt_layer_indices(backbone.depth, count)
        self.backbone = backbone
        self.config = config
        self.patch_size = backbone.patch_size
        width = backbone.embed_dim
        decoder_out = config.features if config.image_skip else self.decoder_outputs
        if config.decoder == "dpt":
            self.decoder: nn.Module = DPTDecoder(
                width,
                config.layer_indices,
                decoder_out,
                features=config.features,
                patch_size=self.patch_size,
            )
            self.layers = list(config.layer_indices)
        else:
            self.decoder = LinearDecoder(width, decoder_out, patch_size=self.patch_size)
            self.layers = [config.layer_indices[-1]]
        self.skip: _PixelBranch | None = None
        if config.image_skip:
            self.skip = _PixelBranch(
                skip_in_chans or backbone.in_chans,
                config.features,
                config.image_skip,
                self.decoder_outputs,
            )
        self.pixel_linear: nn.Conv2d | None = None
        if config.pixel_linear:
            linear = nn.Conv2d(skip_in_chans or backbone.in_chans, self.decoder_outputs, 1)
            for param in linear.parameters():
                nn.init.zeros_(param)  # starts as no term at all
            self.pixel_linear = linear
        self.feature_linear: nn.Conv2d | None = None
        if config.feature_linear:
            probe = nn.Conv2d(width * len(self.layers), self.decoder_outputs, 1)
            for param in probe.parameters():
                nn.init.zeros_(param)  # starts as no term at all
            self.feature_linear = probe

    @property
    def decoder_outputs(self) -> int:
        """Channels of the final output before any activation."""
        return self.config.num_outputs

    def output_layer(self) -> nn.Conv2d:
        """The convolution producing the model's raw outputs (logits before any activation)."""
        layer: Any
        if self.skip is not None:
            layer = self.skip.fuse[-1]
        elif isinstance(self.decoder, DPTDecoder):
            layer = self.decoder.head_out[-1]
        else:
            layer = self.decoder.classifier
        assert isinstance(layer, nn.Conv2d)  # fixed by the decoders' construction
        return layer

    @property
    def backbone_frozen(self) -> bool:
        """True when no backbone parameter is trainable."""
        return not any(p.requires_grad for p in self.backbone.parameters())

    def _pad(self, x: Tensor) -> tuple[Tensor, int, int]:
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.patch_size, (-w) % self.patch_size
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        return x, h, w

    def encode(self, x: Tensor) -> list[Tensor]:
        """Feature maps (B, D, h, w) of the decoder layers (no autograd when frozen)."""
        if self.backbone_frozen:
            with torch.no_grad():
                return self.backbone.get_intermediate_layers(x, self.layers)
        return self.backbone.get_intermediate_layers(x, self.layers)

    def decode(
        self,
        feats: list[Tensor],
        size: tuple[int, int],
        image: Tensor,
        pixels: Tensor | None = None,
    ) -> Tensor:
        """Decoder output upsampled to ``size``, fused with the image branch when enabled.

        ``pixels``: the input of the per-pixel linear term (default ``image``).
        """
        out: Tensor = self.decoder(feats, size)
        if self.skip is not None:
            out = self.skip(out, image)
        if self.pixel_linear is not None:
            out = out + self.pixel_linear(image if pixels is None else pixels)
        if self.feature_linear is not None:
            probe = self.feature_linear(torch.cat(feats, dim=1))
            out = out + F.interpolate(probe, size=size, mode="bilinear", align_corners=False)
        return out

    def pixel_features(self, images: Tensor, index: Tensor) -> Tensor:
        """The decoder layers' features, bilinearly upsampled to the pixels, at ``index``.

        What :attr:`feature_linear` sees at each pixel (a linear map commutes with the
        upsampling), for fitting it as a linear probe.

        Args:
            images: normalised chips (N, C, H, W).
            index: flat indices into the N * H * W pixels.

        Returns:
            (len(index), F) features, F = width x decoder layers, in the order of ``index``.
        """
        _, _, h, w = images.shape
        chip = torch.div(index, h * w, rounding_mode="floor")
        out = torch.zeros(len(index), self.backbone.embed_dim * len(self.layers))
        for i in torch.unique(chip).tolist():
            rows = torch.nonzero(chip == i).ravel()
            padded, _, _ = self._pad(images[i : i + 1])
            with torch.no_grad():
                tokens = torch.cat(self.encode(padded), dim=1)
                size = (int(padded.shape[-2]), int(padded.shape[-1]))
                up = F.interpolate(tokens, size=size, mode="bilinear", align_corners=False)
            flat = up[0, :, :h, :w].reshape(up.shape[1], -1)
            out[rows] = flat[:, index[rows] - i * h * w].T.float()
        return out

    def forward(self, x: Tensor, features: list[Tensor] | None = None) -> Tensor:
        """Dense raw output (logits) the size of ``x``.

        Args:
            x: normalised image (B, C, H, W).
            features: the frozen backbone's :meth:`encode` output for ``x`` when already
                computed (a feature cache); None runs the backbone.
        """
        padded, h, w = self._pad(x)
        size = (int(padded.shape[-2]), int(padded.shape[-1]))
        feats = self.encode(padded) if features is None else list(features)
        out = self.decode(feats, size, padded)
        return out[..., :h, :w]


class SegmentationModel(DenseModel):
    """Per-pixel class logits (B, K, H, W)."""


class HeightModel(DenseModel):
    """Binned height regression: soft-argmax over log-spaced bins, output (B, 1, H, W) metres."""

    bin_centres: Tensor

    def __init__(self, backbone: Backbone, config: HeadConfig) -> None:
        super().__init__(backbone, config)
        self.register_buffer(
            "bin_centres",
            height_bin_centres(config.bins, config.min_height, config.max_height),
            persistent=False,
        )

    @property
    def decoder_outputs(self) -> int:
        """One logit per height bin."""
        return self.config.bins

    def forward(self, x: Tensor, features: list[Tensor] | None = None) -> Tensor:
        """Heights in metres (B, 1, H, W) (``features``: see :meth:`DenseModel.forward`)."""
        return self.heights(super().forward(x, features))

    def heights(self, logits: Tensor) -> Tensor:
        """Soft-argmax of bin logits (B, K, H, W): the expected bin centre, (B, 1, H, W) metres.

        Args:
            logits: one logit per height bin and pixel.

        Returns:
            Heights in metres.
        """
        prob = logits.softmax(dim=1)
        return torch.einsum("bkhw,k->bhw", prob, self.bin_centres.to(prob.dtype)).unsqueeze(1)


class ChangeModel(DenseModel):
    """Siamese change model: shared backbone, fused (concatenation + |difference|) features."""

    def __init__(self, backbone: Backbone, config: HeadConfig) -> None:
        super().__init__(backbone, config, skip_in_chans=3 * backbone.in_chans)
        width = backbone.embed_dim
        self.fuse = nn.ModuleList(
            nn.Sequential(nn.Conv2d(3 * width, width, 1), nn.GELU()) for _ in self.layers
        )

    def forward(  # type: ignore[override]
        self, x1: Tensor, x2: Tensor, features: tuple[list[Tensor], list[Tensor]] | None = None
    ) -> Tensor:
        """Change logits (B, K, H, W) on the grid of ``x1`` (``x2`` must share it).

        ``features``: the frozen backbone's :meth:`encode` outputs of both dates when already
        computed (a feature cache); None runs the backbone.
        """
        if x1.shape != x2.shape:
            raise ConfigError(
                f"change model inputs differ in shape: {tuple(x1.shape)} vs {tuple(x2.shape)}; "
                "resample date 2 onto date 1's grid first"
            )
        p1, h, w = self._pad(x1)
        p2, _, _ = self._pad(x2)
        f1, f2 = (self.encode(p1), self.encode(p2)) if features is None else features
        fused = [
            fuse(torch.cat([a, b, (a - b).abs()], dim=1))
            for fuse, a, b in zip(self.fuse, f1, f2, strict=True)
        ]
        image = torch.cat([p1, p2, p1 - p2], dim=1)
        size = (int(p1.shape[-2]), int(p1.shape[-1]))
        out = self.decode(fused, size, image, change_pixels(p1, p2))
        return out[..., :h, :w]


def change_pixels(x1: Tensor, x2: Tensor) -> Tensor:
    """Per-pixel change inputs ``[date 1, date 2, |date 1 - date 2|]`` (B, 3C, H, W)."""
    return torch.cat([x1, x2, (x1 - x2).abs()], dim=1)


def build_model(backbone: Backbone, config: HeadConfig) -> DenseModel:
    """Build the dense model a head config describes around ``backbone``."""
    if config.type == "segmentation":
        return SegmentationModel(backbone, config)
    if config.type == "height":
        return HeightModel(backbone, config)
    return ChangeModel(backbone, config)
