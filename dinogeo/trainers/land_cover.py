"""Land cover: per-pixel classes from dense or sparse (polygon/point) labels."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dinogeo.data.sample_types import LabeledSample
from dinogeo.errors import ConfigError
from dinogeo.labels.vectors import IGNORE_INDEX
from dinogeo.trainers.base import DenseTask
from dinogeo.trainers.baselines import fit_softmax_regression

__all__ = ["LandCoverTask"]

#: training chips read for the per-pixel start of the head
PIXEL_INIT_CHIPS = 64
#: labelled pixels (sampled, seeded) the joint linear probe of bands and features is fitted on
PROBE_PIXELS = 32768

#: class-weight modes computed from the training chips' class frequencies f: weight f ** -power
FREQUENCY_WEIGHTS = {"auto": 0.5, "balanced": 1.0}


class LandCoverTask(DenseTask):
    """Semantic segmentation with cross-entropy, class weights and ignored unlabelled pixels.

    Args:
        class_weights: one weight per task-card class, ``"auto"`` (inverse square root of the
            training-chip class frequencies, normalised to mean 1), ``"balanced"`` (inverse
            frequencies, normalised to mean 1: every class counts as much as the others in the
            loss, as in the per-pixel baseline; what mIoU rewards) or None (uniform).
        label_smoothing: cross-entropy label smoothing.
        pixel_init: when the head has its per-pixel linear term (``pixel_linear``), start it at
            the per-pixel softmax regression fitted on the training chips' labelled pixels
            (L-BFGS, balanced classes, up to ``PIXEL_INIT_CHIPS`` chips) and the rest of the
            head's output at 0: training starts from the per-pixel classifier and learns what
            context adds, instead of rediscovering band ratios by gradient descent. With
            ``feature_linear`` the fit is the joint linear probe of bands and frozen features
            (up to ``PROBE_PIXELS`` labelled pixels), so the head starts at what a linear probe
            of the backbone gets.
        **kwargs: the :class:`~dinogeo.trainers.base.DenseTask` arguments.
    """

    head_type = "segmentation"
    class_weight: Tensor

    def __init__(
        self,
        class_weights: list[float] | str | None = None,
        label_smoothing: float = 0.0,
        pixel_init: bool = True,
        **kwargs: Any,
    ) -> None:
        self._class_weights_arg = class_weights
        self._label_smoothing = float(label_smoothing)
        self._pixel_init = bool(pixel_init)
        super().__init__(**kwargs)

    def configure_losses(self) -> None:
        """Cross-entropy weights (uniform until ``"auto"`` weights are computed at fit start)."""
        k = self.task_card.num_outputs
        weights = self._class_weights_arg
        if isinstance(weights, str) and weights not in FREQUENCY_WEIGHTS:
            raise ConfigError(
                f"class_weights must be a list, 'auto', 'balanced' or null, got {weights!r}"
            )
        if isinstance(weights, list | tuple):
            if len(weights) != k or any(float(w) < 0 for w in weights):
                raise ConfigError(
                    f"class_weights needs {k} non-negative values (one per class of task card "
                    f"{self.task_card.name!r}: {self.task_card.class_names}), got {weights}"
                )
            tensor = torch.tensor([float(w) for w in weights])
        else:
            tensor = torch.ones(k)
        self.register_buffer("class_weight", tensor)

    def on_fit_start(self) -> None:
        """Compute ``"auto"`` / ``"balanced"`` class weights from the training chips."""
        self._init_class_weights()

    def setup(self, stage: str) -> None:
        """Start the per-pixel term at the per-pixel classifier of the training chips.

        Runs before a checkpoint is restored, so resumed runs keep their trained weights.
        """
        if stage != "fit" or self._trainer is None:
            return
        if self._pixel_init and self.model.pixel_linear is not None:
            dataset = getattr(getattr(self.trainer, "datamodule", None), "train_set", None)
            if dataset is not None and len(dataset):
                step = max(1, len(dataset) // PIXEL_INIT_CHIPS)
                samples = [dataset[i] for i in range(0, len(dataset), step)]
                self.init_pixel_linear(
                    torch.stack([s["image"] for s in samples]),
                    torch.stack([s["mask"] for s in samples]),
                )

    def init_pixel_linear(self, images: Tensor, masks: Tensor) -> None:
        """Start the per-pixel linear term at the softmax regression of ``masks`` on the pixels.

        Args:
            images: normalised training chips (N, C, H, W).
            masks: their class indices (N, H, W), ``IGNORE_INDEX`` where unlabelled.
        """
        y = masks.reshape(-1)
        keep = torch.nonzero(y != IGNORE_INDEX).ravel()
        if not len(keep):
            return
        if self.model.feature_linear is not None and len(keep) > PROBE_PIXELS:
            pick = torch.randperm(len(keep), generator=torch.Generator().manual_seed(0))
            keep = keep[pick[:PROBE_PIXELS]]
        x, scaling = self.probe_inputs(images, keep)
        fitted = fit_softmax_regression(
            x.numpy(), y[keep].numpy(), self.task_card.num_outputs, l2=1e-3
        )
        self.start_pixel_linear(fitted, scaling)

    def _init_class_weights(self) -> None:
        if self._class_weights_arg not in FREQUENCY_WEIGHTS:
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "class_frequencies"):
            return
        counts = np.asarray(datamodule.class_frequencies(), dtype=np.float64)
        present = counts > 0
        weights = np.zeros_like(counts)
        power = FREQUENCY_WEIGHTS[str(self._class_weights_arg)]
        weights[present] = (counts[present] / counts[present].sum()) ** -power
        weights[present] /= weights[present].mean()
        self.class_weight.copy_(torch.as_tensor(weights, dtype=self.class_weight.dtype))

    def loss(self, output: Tensor, batch: LabeledSample) -> Tensor:
        """Weighted cross-entropy over labelled pixels (0 when a batch has none)."""
        target = batch["mask"].long()
        if not (target != IGNORE_INDEX).any():
            return output.sum() * 0.0
        return F.cross_entropy(
            output,
            target,
            weight=self.class_weight.to(output.dtype),
            ignore_index=IGNORE_INDEX,
            label_smoothing=self._label_smoothing,
        )
