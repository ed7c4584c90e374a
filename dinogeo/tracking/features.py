"""Frozen backbone features per date as index channels of the change statistic.

Each date of a tile is normalised with the backbone's weight card, run through the frozen
backbone, and the patch tokens of its last block are upsampled (bilinear) back to the pixel
grid. A fixed random projection (seeded, so identical for every tile and run) reduces the
``D`` feature dimensions to ``dims`` channels, which the statistic treats like bands
(``magnitude`` mode: a direction-free change of the features). Invalid pixels of a date stay
invalid. A backbone trained on another sensor is carried over with
:func:`dinogeo.models.adapt.adapt_backbone` (bands matched by name or alias).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dinogeo.data.sensors import Sensor
from dinogeo.tracking.statistic import IndexSeries

__all__ = ["FeatureExtractor"]


class FeatureExtractor:
    """Per-date backbone features of a tile.

    Args:
        path: backbone safetensors file (``dinogeo pretrain`` / ``dinogeo adapt`` output).
        sensor: the series' sensor (the backbone is adapted to it when its bands differ).
        dims: channels kept after the random projection.
        batch: dates per forward pass.
    """

    def __init__(self, path: str | Path, sensor: Sensor, *, dims: int = 16, batch: int = 8) -> None:
        import torch

        from dinogeo.models.adapt import adapt_backbone
        from dinogeo.models.backbone_file import load_backbone

        backbone, card = load_backbone(path)
        if list(card.band_names) != list(sensor.band_names):
            backbone, card = adapt_backbone(backbone, card, sensor)
        self.backbone = backbone.eval()
        self.patch = int(card.patch_size)
        self.mean = np.array(card.mean, np.float32)[:, None, None]
        self.std = np.array(card.std, np.float32)[:, None, None]
        gen = torch.Generator().manual_seed(0)
        d = int(backbone.embed_dim)
        self.proj = torch.randn(d, dims, generator=gen) / np.sqrt(d)
        self.dims = dims
        self.batch = batch

    def __call__(self, x: np.ndarray) -> IndexSeries:
        """Features of a (T, C, h, w) window in physical units (NaN invalid)."""
        import torch
        import torch.nn.functional as F

        t, _, h, w = x.shape
        ph, pw = -h % self.patch, -w % self.patch
        valid = np.isfinite(x).all(axis=1)
        norm = np.nan_to_num((x - self.mean) / self.std).astype(np.float32)
        norm = np.pad(norm, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="reflect")
        out = np.empty((t, self.dims, h, w), np.float32)
        with torch.no_grad():
            for i in range(0, t, self.batch):
                feats: Any = self.backbone.get_intermediate_layers(
                    torch.from_numpy(norm[i : i + self.batch]), [-1]
                )[0]
                feats = torch.einsum("bdhw,dk->bkhw", feats, self.proj)
                up = F.interpolate(
                    feats, size=(h + ph, w + pw), mode="bilinear", align_corners=False
                )
                out[i : i + self.batch] = up[:, :, :h, :w].numpy()
        out[np.broadcast_to(~valid[:, None], out.shape)] = np.nan
        return IndexSeries(out, tuple(f"f{k}" for k in range(self.dims)), "magnitude")
