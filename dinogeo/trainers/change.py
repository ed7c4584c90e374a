"""Change detection: a siamese model on two dates (shared frozen backbone)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from dinogeo.errors import ConfigError
from dinogeo.labels.vectors import IGNORE_INDEX
from dinogeo.trainers.base import DenseTask

__all__ = ["ChangeTask"]


class ChangeTask(DenseTask):
    """Binary or multi-class change masks from (date 1, date 2) pairs.

    Batches carry ``image1``, ``image2`` (date 2 on date 1's grid) and ``mask`` (class indices of
    the change task card, ``IGNORE_INDEX`` where unknown).

    Args:
        class_weights: one cross-entropy weight per change class (None: uniform). Change is
            usually rare: e.g. ``[1.0, 3.0]``.
        **kwargs: the :class:`~dinogeo.trainers.base.DenseTask` arguments.
    """

    head_type = "change"
    class_weight: Tensor

    def __init__(self, class_weights: list[float] | None = None, **kwargs: Any) -> None:
        self._class_weights_arg = class_weights
        kwargs.setdefault("task", "change")
        super().__init__(**kwargs)

    def configure_losses(self) -> None:
        """Cross-entropy class weights."""
        k = self.task_card.num_outputs
        weights = self._class_weights_arg
        if weights is not None and (len(weights) != k or any(float(w) < 0 for w in weights)):
            raise ConfigError(
                f"class_weights needs {k} non-negative values (classes "
                f"{self.task_card.class_names}), got {weights}"
            )
        tensor = torch.tensor([float(w) for w in weights]) if weights else torch.ones(k)
        self.register_buffer("class_weight", tensor)

    def inputs(self, batch: dict[str, Tensor]) -> tuple[Tensor, ...]:
        """Both dates."""
        return batch["image1"], batch["image2"]

    def loss(self, output: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """Weighted cross-entropy over labelled pixels."""
        target = batch["mask"].long()
        if not (target != IGNORE_INDEX).any():
            return output.sum() * 0.0
        return F.cross_entropy(
            output, target, weight=self.class_weight.to(output.dtype), ignore_index=IGNORE_INDEX
        )
