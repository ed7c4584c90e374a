"""Canopy height: binned regression (soft-argmax over log-spaced bins), L1 + scale-invariant log.

Two things keep the soft-argmax head from collapsing to a constant on scenes where most
reference pixels are 0 m (lakes, roads, roofs), both measured on the Swiss CHM (see
``docs/heads.md``):

* **bin-logit prior** (``bin_prior``): the bias of the layer producing the bin logits starts at
  the log of the training heights' histogram over the bins (0 m counts in the lowest bin, every
  bin keeps a small floor). The head then starts at the data's height distribution instead of
  the ~8.8 m mean of uniformly weighted log-spaced bins; starting there, the first steps of L1
  drive all the mass into the lowest bins, the softmax saturates and the gradient to the canopy
  bins vanishes (``p_k (c_k - h)`` with ``p_k`` ~ 0), leaving a flat ~0 m map.
* **bin cross-entropy** (``bin_ce_weight``): an optional cross-entropy term on the reference's
  nearest bin, whose gradient (``p_k - 1`` on the target bin) does not vanish when the softmax is
  saturated.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dinogeo.data.sample_types import LabeledSample
from dinogeo.errors import ConfigError
from dinogeo.models.heads import DenseModel, HeadConfig, HeightModel
from dinogeo.trainers.base import DenseTask
from dinogeo.trainers.baselines import fit_softmax_regression

__all__ = ["CanopyHeightTask", "bin_indices", "height_bin_prior", "silog_loss"]

#: training chips read for the per-pixel start of the head
PIXEL_INIT_CHIPS = 64


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


def bin_indices(heights: Tensor, centres: Tensor) -> Tensor:
    """Index of the nearest bin centre in log space (heights below the first centre -> 0).

    Args:
        heights: heights in metres (any shape, finite).
        centres: the log-spaced bin centres (K,).
    """
    logs = torch.log(centres.to(heights.dtype))
    step = (logs[-1] - logs[0]) / (len(centres) - 1)
    h = heights.clamp(min=float(centres[0]), max=float(centres[-1]))
    return ((torch.log(h) - logs[0]) / step).round().long().clamp(0, len(centres) - 1)


def height_bin_prior(heights: np.ndarray, centres: Tensor, *, floor: float = 1e-4) -> Tensor:
    """Probabilities of the bins in a sample of reference heights, with a floor on every bin.

    Args:
        heights: reference heights in metres (NaN = nodata, ignored).
        centres: the bin centres (K,).
        floor: probability added to every bin before normalising (keeps all bins trainable).

    Returns:
        (K,) probabilities summing to 1.
    """
    values = torch.from_numpy(np.asarray(heights, dtype=np.float32).ravel())
    values = values[torch.isfinite(values)]
    counts = torch.bincount(bin_indices(values, centres), minlength=len(centres)).double()
    prob = counts / max(1.0, float(counts.sum())) + floor
    return (prob / prob.sum()).float()


class CanopyHeightTask(DenseTask):
    """Canopy height in metres from a height raster; nodata in the reference is ignored.

    Args:
        bins: number of log-spaced height bins.
        min_height: centre of the lowest bin (m).
        max_height: centre of the highest bin (m).
        silog_weight: weight of the scale-invariant log loss.
        bin_prior: start the bin logits at the training heights' histogram (read from up to 64
            training chips when fitting starts); False keeps the default initialisation.
        bin_ce_weight: weight of a cross-entropy term on the reference's nearest bin (0: off).
            Alone (``l1_weight`` and ``silog_weight`` 0) it trains the bin probabilities as the
            per-pixel start was fitted: a proper scoring rule keeps them calibrated, so their
            soft-argmax estimates the conditional mean height, what MSE and R2 reward (L1 pulls
            towards the median, 0 m on scenes that are mostly open ground; docs/heads.md).
        l1_weight: weight of the L1 loss on the heights in metres.
        pixel_init: when the head has its per-pixel linear term (``pixel_linear``), start it at
            a per-pixel softmax regression of the reference's nearest bin on the bands (fitted
            on up to 32768 pixels of 64 training chips, unweighted so that its probabilities
            stay calibrated: its soft-argmax is a per-pixel estimate of the height) and the rest
            of the head's output at 0; this replaces ``bin_prior`` (whose histogram it contains
            as the case of no band information). With ``feature_linear`` the regression is
            on bands and frozen features together (the joint linear probe).
        **kwargs: the :class:`~dinogeo.trainers.base.DenseTask` arguments.
    """

    head_type = "height"

    def __init__(
        self,
        bins: int = 256,
        min_height: float = 1e-3,
        max_height: float = 96.0,
        silog_weight: float = 1.0,
        bin_prior: bool = True,
        bin_ce_weight: float = 5.0,
        pixel_init: bool = True,
        l1_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        self._pixel_init = bool(pixel_init)
        self._bins = (int(bins), float(min_height), float(max_height))
        self._silog_weight = float(silog_weight)
        self._bin_prior = bool(bin_prior)
        self._ce_weight = float(bin_ce_weight)
        self._l1_weight = float(l1_weight)
        weights = {
            "l1_weight": l1_weight,
            "silog_weight": silog_weight,
            "bin_ce_weight": bin_ce_weight,
        }
        if min(weights.values()) < 0 or max(weights.values()) <= 0:
            raise ConfigError(
                f"the canopy loss weights must be >= 0 with at least one > 0, got {weights}: "
                "set e.g. bin_ce_weight: 5.0"
            )
        self._logits: Tensor | None = None
        kwargs.setdefault("task", "canopy_height")
        super().__init__(**kwargs)

    def head_config(self) -> HeadConfig:
        """Height head: one output, binned."""
        config = super().head_config()
        config.bins, config.min_height, config.max_height = self._bins
        return config

    def setup(self, stage: str) -> None:
        """Initialise the bin logits at the training heights' histogram (``bin_prior``).

        Runs before a checkpoint is restored, so resumed runs keep their trained weights.
        """
        if stage != "fit" or self._trainer is None:
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        dataset = getattr(datamodule, "train_set", None)
        if dataset is None or not len(dataset):
            return
        if self._pixel_init and self.model.pixel_linear is not None:
            step = max(1, len(dataset) // PIXEL_INIT_CHIPS)
            samples = [dataset[i] for i in range(0, len(dataset), step)]
            self.init_pixel_linear(
                torch.stack([s["image"] for s in samples]),
                torch.stack([s["mask"] for s in samples]),
            )
            return
        if not self._bin_prior:
            return
        chips = dataset.chips[:: max(1, len(dataset.chips) // 64)]
        heights = np.concatenate(
            [dataset.labels[c.scene].read(c.window).ravel() for c in chips]
        ).astype(np.float32)
        self.init_bin_prior(heights)

    def init_pixel_linear(self, images: Tensor, heights: Tensor, max_pixels: int = 32768) -> None:
        """Start the per-pixel term at a softmax regression of the height bins on the pixels.

        Args:
            images: normalised training chips (N, C, H, W).
            heights: their reference heights (N, H, W), NaN where unknown.
            max_pixels: pixels sampled (seeded) for the fit.
        """
        h = heights.reshape(-1)
        keep = torch.nonzero(torch.isfinite(h)).ravel()
        if not len(keep):
            return
        pick = torch.randperm(len(keep), generator=torch.Generator().manual_seed(0))[:max_pixels]
        keep = keep[pick]
        x, scaling = self.probe_inputs(images, keep)
        centres = self._centres().cpu()
        fitted = fit_softmax_regression(
            x.numpy(),
            bin_indices(h[keep], centres).numpy(),
            len(centres),
            l2=1e-3,
            max_iter=100,
            balanced=False,
        )
        self.start_pixel_linear(fitted, scaling)

    def init_bin_prior(self, heights: np.ndarray) -> Tensor:
        """Set the bin-logit bias to the log of the bins' probabilities in ``heights``.

        Args:
            heights: a sample of reference heights in metres (NaN ignored).

        Returns:
            The prior probabilities (K,).
        """
        centres = self._centres()
        prior = height_bin_prior(heights, centres.cpu())
        layer = self.model.output_layer()
        assert layer.bias is not None and layer.out_channels == len(centres)  # one logit per bin
        with torch.no_grad():
            layer.bias.copy_(prior.log().to(layer.bias))
        return prior

    @property
    def _height_model(self) -> HeightModel:
        model = self.model
        assert isinstance(model, HeightModel)  # build_model makes one for the height task
        return model

    def _centres(self) -> Tensor:
        return self._height_model.bin_centres

    def forward(self, *images: Tensor, features: Any = None) -> Tensor:
        """Heights in metres (B, 1, H, W); the bin logits are kept for the loss."""
        (image,) = images
        logits = DenseModel.forward(self.model, image, features)
        self._logits = logits
        return self._height_model.heights(logits)

    def loss(self, output: Tensor, batch: LabeledSample) -> Tensor:
        """L1 + SILog + bin cross-entropy (as weighted) over pixels with a finite reference height."""
        target = batch["mask"].to(output.dtype).reshape(output.shape[0], *output.shape[-2:])
        pred = output.reshape(target.shape)
        keep = torch.isfinite(target)
        if not keep.any():
            return output.sum() * 0.0
        p, t = pred[keep], target[keep]
        loss = output.sum() * 0.0
        if self._l1_weight:
            loss = loss + self._l1_weight * (p - t).abs().mean()
        if self._silog_weight:
            loss = loss + self._silog_weight * silog_loss(p, t)
        if self._ce_weight and self._logits is not None:
            index = bin_indices(torch.nan_to_num(target), self._centres())
            index = torch.where(keep, index, torch.full_like(index, -100))
            ce = F.cross_entropy(self._logits, index, ignore_index=-100)
            loss = loss + self._ce_weight * ce
        return loss
