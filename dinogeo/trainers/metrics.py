"""Task metrics (torchmetrics): per-class IoU/F1, mIoU and accuracy; MAE, RMSE, R2 and bias.

:class:`TaskMetrics` wraps one torchmetrics collection per task kind. It takes model outputs and
targets as produced by the trainers (class logits or probabilities with ``IGNORE_INDEX`` for
unlabelled pixels; heights with NaN where the reference is nodata), drops unlabelled pixels, and
returns flat ``{name: float}`` dictionaries with per-class entries named after the task card.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassJaccardIndex,
)
from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError, R2Score

from dinogeo.labels.vectors import IGNORE_INDEX
from dinogeo.models.task_card import TaskCard

__all__ = ["MeanBias", "TaskMetrics"]


class MeanBias(Metric):
    """Mean signed error ``mean(prediction - target)`` (positive = over-estimation)."""

    full_state_update = False
    total: Tensor
    count: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.add_state(
            "total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Accumulate a batch of predictions and targets (same shape)."""
        self.total += (preds.double() - target.double()).sum()
        self.count += target.numel()

    def compute(self) -> Tensor:
        """Return the mean bias (NaN before any update)."""
        if int(self.count) == 0:
            return torch.tensor(float("nan"))
        return (self.total / self.count).float()


class TaskMetrics(nn.Module):
    """Metrics of one task card, fed with model outputs and targets.

    Args:
        task: the task card (kind and class names).
    """

    def __init__(self, task: TaskCard) -> None:
        super().__init__()
        self.task = task
        if task.is_classification:
            k = task.num_outputs
            self.metrics = MetricCollection(
                {
                    "iou": MulticlassJaccardIndex(k, average="none", ignore_index=IGNORE_INDEX),
                    "f1": MulticlassF1Score(k, average="none", ignore_index=IGNORE_INDEX),
                    "miou": MulticlassJaccardIndex(k, average="macro", ignore_index=IGNORE_INDEX),
                    "accuracy": MulticlassAccuracy(k, average="micro", ignore_index=IGNORE_INDEX),
                }
            )
        else:
            self.metrics = MetricCollection(
                {
                    "mae": MeanAbsoluteError(),
                    "rmse": MeanSquaredError(squared=False),
                    "r2": R2Score(),
                    "bias": MeanBias(),
                }
            )
        self.count = 0

    def update(self, output: Tensor, target: Tensor) -> None:
        """Add a batch.

        Args:
            output: class scores (B, K, H, W) or predicted values (B, 1, H, W).
            target: class indices (B, H, W) with ``IGNORE_INDEX`` where unlabelled, or values
                (B, H, W) / (B, 1, H, W) with NaN where unknown.
        """
        if self.task.is_classification:
            pred = output.argmax(dim=1)
            keep = target != IGNORE_INDEX
            if keep.any():
                self.metrics.update(pred[keep], target[keep].long())
                self.count += int(keep.sum())
            return
        values = output.reshape(output.shape[0], *output.shape[-2:]).float()
        ref = target.reshape(values.shape).float()
        keep = torch.isfinite(ref)
        if keep.any():
            self.metrics.update(values[keep], ref[keep])
            self.count += int(keep.sum())

    def compute(self) -> dict[str, float]:
        """Return ``{name: value}``: summary metrics plus ``iou/<class>`` and ``f1/<class>``."""
        if self.count == 0:
            return {}
        raw = self.metrics.compute()
        out: dict[str, float] = {"pixels": float(self.count)}
        for name, value in raw.items():
            if value.ndim == 0:
                out[name] = float(value)
            else:
                for cls, v in zip(self.task.class_names, value.tolist(), strict=True):
                    out[f"{name}/{cls}"] = float(v)
        if self.task.kind == "change" and len(self.task.classes) == 2:
            change = self.task.class_names[1]
            out["change_iou"] = out[f"iou/{change}"]
            out["change_f1"] = out[f"f1/{change}"]
        return out

    def reset(self) -> None:
        """Forget all batches."""
        self.metrics.reset()
        self.count = 0
