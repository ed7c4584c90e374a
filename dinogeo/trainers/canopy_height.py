"""Canopy height: binned regression (soft-argmax over log-spaced bins), L1 + scale-invariant log."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from dinogeo.trainers.base import DenseTask
from dinogeo.trainers.heads import HeadConfig

__all__ = ["CanopyHeightTask", "silog_loss"]


def silog_loss(pred: Tensor, target: Tensor, *, variance_focus: float = 0.85) -> Tensor:
    """Scale-invariant log loss (Eigen et al. 2014) on ``log(1 + h)``.

    ``sqrt(mean(d^2) - variance_focus * mean(d)^2)`` with ``d = log1p(pred) - log1p(target)``;
    ``log1p`` keeps the many 0 m (no vegetation) pixels finite.

    Args:
        pred: predicted heights (N,), metres, >= 0.
        target: reference heights (N,), metres, >= 0.
        variance_focus: weight of the squared-mean term (1: fully scale invariant).
    """
    d = torch.log1p(pred.clamp(min=0)) - torch.log1p(target.clamp(min=0))
    value = (d.pow(2).mean() - variance_focus * d.mean().pow(2)).clamp(min=1e-8)
    return value.sqrt()


class CanopyHeightTask(DenseTask):
    """Canopy height in metres from a height raster; nodata in the reference is ignored.

    Args:
        bins: number of log-spaced height bins.
        min_height: centre of the lowest bin (m).
        max_height: centre of the highest bin (m).
        silog_weight: weight of the scale-invariant log loss added to the L1 loss.
        **kwargs: the :class:`~dinogeo.trainers.base.DenseTask` arguments.
    """

    head_type = "height"

    def __init__(
        self,
        bins: int = 256,
        min_height: float = 1e-3,
        max_height: float = 96.0,
        silog_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        self._bins = (int(bins), float(min_height), float(max_height))
        self._silog_weight = float(silog_weight)
        kwargs.setdefault("task", "canopy_height")
        super().__init__(**kwargs)

    def head_config(self) -> HeadConfig:
        """Height head: one output, binned."""
        config = super().head_config()
        config.bins, config.min_height, config.max_height = self._bins
        return config

    def loss(self, output: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """L1 + ``silog_weight`` x SILog over pixels with a finite reference height."""
        target = batch["mask"].to(output.dtype).reshape(output.shape[0], *output.shape[-2:])
        pred = output.reshape(target.shape)
        keep = torch.isfinite(target)
        if not keep.any():
            return output.sum() * 0.0
        p, t = pred[keep], target[keep]
        loss = (p - t).abs().mean()
        if self._silog_weight:
            loss = loss + self._silog_weight * silog_loss(p, t)
        return loss
