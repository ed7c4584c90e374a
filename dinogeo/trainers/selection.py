"""Best-on-selection training: keep the head weights that score best on held-out training data.

A head trained for a fixed number of steps can end worse than where it started (the per-pixel
classifier it is initialised at) or stop before it is done. :class:`BestOnSelection` scores the
task's metric on a *selection set* carved from the training data (whole training blocks held
out by the data module's ``select_fraction``; never the validation blocks) before the first
step and every ``every`` steps, keeps a copy of the best weights and restores them when
training ends. Because the initial weights are scored too, the selected head is never worse on
the selection set than its initialisation.

With ``ema`` > 0 the callback keeps an exponential moving average of the trainable weights
(updated after every optimiser step, started at the initial weights) and scores and returns that
average instead of the raw weights of the step: the average damps the step-to-step noise of
small batches, so the scores are steadier, the chosen step matters less and heads trained with
different seeds end closer together (Polyak averaging). Step 0 is still the initial weights.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.utils.data import DataLoader

from dinogeo.data.sample_types import LabeledSample
from dinogeo.errors import ConfigError
from dinogeo.models.task_card import TaskCard
from dinogeo.trainers.metrics import TaskMetrics

__all__ = ["SELECTION_METRICS", "BestOnSelection", "selection_score"]

#: the metric (higher is better) a task kind is selected on
SELECTION_METRICS = {"segmentation": "miou", "change": "change_f1", "regression": "r2"}


def selection_score(task: Any, loader: DataLoader[LabeledSample], metric: str) -> float:
    """The task's ``metric`` on every batch of ``loader``, computed in eval mode.

    Args:
        task: a :class:`~dinogeo.trainers.base.DenseTask` (its ``inputs``, ``cached_features``
            and task card).
        loader: batches with the task's inputs and ``mask``.
        metric: a key of :class:`~dinogeo.trainers.metrics.TaskMetrics`'s results.
    """
    metrics = TaskMetrics(task.task_card)
    was_training = task.training
    task.eval()
    with torch.no_grad():
        for batch in loader:
            batch = {k: _to(v, task.device) for k, v in batch.items()}
            output = task(*task.inputs(batch), features=task.cached_features(batch))
            metrics.update(output, batch["mask"])
    task.train(was_training)
    value = metrics.compute().get(metric, float("nan"))
    return value if math.isfinite(value) else -math.inf


def _to(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, list | tuple):
        return type(value)(_to(v, device) for v in value)
    return value


class BestOnSelection(Callback):
    """Score the selection set before training and every ``every`` steps; restore the best.

    The selection batches come from the data module's ``select_dataloader()``
    (:class:`~dinogeo.trainers.datamodule.LabeledChipDataModule`,
    :class:`~dinogeo.trainers.synthetic_change.SyntheticChangeDataModule`,
    :class:`~dinogeo.trainers.feature_cache.CachedFeatureDataModule` with ``select_fraction`` >
    0).

    Only the trainable weights (and buffers) are copied: a frozen backbone does not change.

    Args:
        every: optimiser steps between two scorings (the last step is always scored).
        metric: the metric to maximise; None: ``SELECTION_METRICS`` of the task's kind
            (mIoU, change F1, R2).
        report: printer of one line per scoring (None: silent).
        ema: decay of the moving average of the trainable weights that is scored and restored
            (e.g. 0.95: a horizon of ~20 steps); 0: the raw weights of each scored step.

    Attributes:
        history: ``(step, score)`` of every scoring, step 0 being the initial weights.
        best_step: the step whose weights were restored.
        best_score: their score.
    """

    def __init__(
        self, every: int = 25, metric: str | None = None, report: Any = None, ema: float = 0.0
    ) -> None:
        if every < 1:
            raise ConfigError(f"BestOnSelection.every must be >= 1 step, got {every}")
        if not 0.0 <= ema < 1.0:
            raise ConfigError(f"BestOnSelection.ema must be in [0, 1) (0: no average), got {ema}")
        self.every = every
        self.ema = ema
        self._average: dict[str, torch.Tensor] | None = None
        self.metric = metric
        self.report = report
        self.history: list[tuple[int, float]] = []
        self.best_step = 0
        self.best_score = -math.inf
        self._best: dict[str, torch.Tensor] | None = None
        self._loader: DataLoader[LabeledSample] | None = None

    def _metric(self, task: LightningModule) -> str:
        if self.metric is not None:
            return self.metric
        card: TaskCard = getattr(task, "task_card")  # noqa: B009 (a DenseTask's)
        return SELECTION_METRICS[card.kind]

    def _score(self, trainer: Trainer, task: LightningModule) -> None:
        step = int(trainer.global_step)
        if self.history and self.history[-1][0] == step:
            return
        assert self._loader is not None
        self.metric = self._metric(task)
        with self._averaged(task):
            score = selection_score(task, self._loader, self.metric)
            self.history.append((step, score))
            if score > self.best_score:
                self.best_score, self.best_step = score, step
                frozen = {name for name, p in task.named_parameters() if not p.requires_grad}
                self._best = {
                    k: v.detach().clone() for k, v in task.state_dict().items() if k not in frozen
                }
        if self.report is not None:
            self.report(
                f"  step {step}: selection {self._metric(task)} {score:.4f} "
                f"(best {self.best_score:.4f} at step {self.best_step})"
            )

    @contextmanager
    def _averaged(self, task: LightningModule) -> Iterator[None]:
        """Within the block the task holds the averaged weights (``ema`` > 0), then its own."""
        if self._average is None:
            yield
            return
        params = dict(task.named_parameters())
        own = {k: params[k].detach().clone() for k in self._average}
        with torch.no_grad():
            for k, v in self._average.items():
                params[k].copy_(v)
        try:
            yield
        finally:
            with torch.no_grad():
                for k, v in own.items():
                    params[k].copy_(v)

    def _update_average(self, task: LightningModule) -> None:
        if self._average is None:
            return
        params = dict(task.named_parameters())
        with torch.no_grad():
            for k, v in self._average.items():
                v.mul_(self.ema).add_(params[k].detach(), alpha=1.0 - self.ema)

    def summary(self) -> dict[str, Any]:
        """JSON-ready record of the selection (stored in the model bundle's training config)."""
        return {
            "every": self.every,
            "ema": self.ema,
            "metric": self.metric,
            "best_step": self.best_step,
            "best_score": self.best_score,
            "history": [[step, score] for step, score in self.history],
        }

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Score the initial weights."""
        datamodule = getattr(trainer, "datamodule", None)
        make = getattr(datamodule, "select_dataloader", None)
        self._loader = make() if make is not None else None
        if self._loader is None:
            raise ConfigError(
                "BestOnSelection needs a selection set: set the data module's select_fraction "
                "(e.g. 0.2) so that whole training blocks are held out for it"
            )
        self.history, self.best_step, self.best_score, self._best = [], 0, -math.inf, None
        self._average = None
        if self.ema:
            self._average = {
                k: p.detach().clone() for k, p in pl_module.named_parameters() if p.requires_grad
            }
        self._score(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        """Update the weight average; score every ``every`` steps."""
        self._update_average(pl_module)
        if trainer.global_step % self.every == 0:
            self._score(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Score the last step and restore the best weights."""
        if self._loader is None:
            return
        self._score(trainer, pl_module)
        if self._best is not None:
            pl_module.load_state_dict(self._best, strict=False)
