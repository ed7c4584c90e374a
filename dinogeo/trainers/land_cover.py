"""Land cover: per-pixel classes from dense or sparse (polygon/point) labels."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dinogeo.errors import ConfigError
from dinogeo.labels.vectors import IGNORE_INDEX
from dinogeo.trainers.base import DenseTask

__all__ = ["LandCoverTask"]


class LandCoverTask(DenseTask):
    """Semantic segmentation with cross-entropy, class weights and ignored unlabelled pixels.

    Args:
        class_weights: one weight per task-card class, ``"auto"`` (inverse square root of the
            training-chip class frequencies, normalised to mean 1) or None (uniform).
        label_smoothing: cross-entropy label smoothing.
        **kwargs: the :class:`~dinogeo.trainers.base.DenseTask` arguments.
    """

    head_type = "segmentation"
    class_weight: Tensor

    def __init__(
        self,
        class_weights: list[float] | str | None = None,
        label_smoothing: float = 0.0,
        **kwargs: Any,
    ) -> None:
        self._class_weights_arg = class_weights
        self._label_smoothing = float(label_smoothing)
        super().__init__(**kwargs)

    def configure_losses(self) -> None:
        """Cross-entropy weights (uniform until ``"auto"`` weights are computed at fit start)."""
        k = self.task_card.num_outputs
        weights = self._class_weights_arg
        if isinstance(weights, str) and weights != "auto":
            raise ConfigError(f"class_weights must be a list, 'auto' or null, got {weights!r}")
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
        """Compute ``"auto"`` class weights from the training chips."""
        if self._class_weights_arg != "auto":
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "class_frequencies"):
            return
        counts = np.asarray(datamodule.class_frequencies(), dtype=np.float64)
        present = counts > 0
        weights = np.zeros_like(counts)
        weights[present] = 1.0 / np.sqrt(counts[present] / counts[present].sum())
        weights[present] /= weights[present].mean()
        self.class_weight.copy_(torch.as_tensor(weights, dtype=self.class_weight.dtype))

    def loss(self, output: Tensor, batch: dict[str, Tensor]) -> Tensor:
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
