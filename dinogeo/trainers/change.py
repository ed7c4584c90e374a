"""Change detection: a siamese model on two dates (shared frozen backbone)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from dinogeo.data.sample_types import LabeledSample
from dinogeo.errors import ConfigError
from dinogeo.labels.vectors import IGNORE_INDEX
from dinogeo.models.heads import change_pixels
from dinogeo.trainers.base import CachedFeatures, DenseTask
from dinogeo.trainers.baselines import fit_softmax_regression

__all__ = ["ChangeTask"]

#: training pairs read for the per-pixel start of the head
PIXEL_INIT_PAIRS = 64


class ChangeTask(DenseTask):
    """Binary or multi-class change masks from (date 1, date 2) pairs.

    Batches carry ``image1``, ``image2`` (date 2 on date 1's grid) and ``mask`` (class indices of
    the change task card, ``IGNORE_INDEX`` where unknown).

    Args:
        class_weights: one cross-entropy weight per change class (None: uniform). Change is
            usually rare: e.g. ``[1.0, 3.0]``.
        pixel_init: when the head has its per-pixel linear term (``pixel_linear``, on
            ``[date 1, date 2, |date 1 - date 2|]``), start it at the per-pixel softmax
            regression fitted on up to 65536 pixels of 64 training pairs (balanced classes) and
            the rest of the head's output at 0. The pairs are the first of the data module's
            fixed training pool when it has one (``CachedFeatureDataModule.train_pool``), so
            that every seed starts at the same classifier.
        **kwargs: the :class:`~dinogeo.trainers.base.DenseTask` arguments.
    """

    head_type = "change"
    class_weight: Tensor

    def __init__(
        self, class_weights: list[float] | None = None, pixel_init: bool = True, **kwargs: Any
    ) -> None:
        self._class_weights_arg = class_weights
        self._pixel_init = bool(pixel_init)
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

    def inputs(self, batch: LabeledSample) -> tuple[Tensor, ...]:
        """Both dates."""
        return batch["image1"], batch["image2"]

    def setup(self, stage: str) -> None:
        """Start the per-pixel term at the per-pixel classifier of training pairs.

        Runs before a checkpoint is restored, so resumed runs keep their trained weights.
        """
        if stage != "fit" or self._trainer is None:
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        # a fixed pool of training pairs (a feature cache's) when there is one: synthetic
        # training pairs are drawn afresh under the seed, which made each seed start elsewhere
        pool = getattr(getattr(datamodule, "train_pool", None), "samples", None)
        dataset = pool or getattr(datamodule, "train_set", None)
        if self._pixel_init and self.model.pixel_linear is not None and dataset is not None:
            count = min(len(dataset), PIXEL_INIT_PAIRS)
            samples = [dataset[i] for i in range(count)]
            if samples:
                self.init_pixel_linear(
                    torch.stack([s["image1"] for s in samples]),
                    torch.stack([s["image2"] for s in samples]),
                    torch.stack([s["mask"] for s in samples]),
                )

    def init_pixel_linear(
        self, image1: Tensor, image2: Tensor, masks: Tensor, max_pixels: int = 65536
    ) -> None:
        """Start the per-pixel term at the softmax regression of ``masks`` on the pixels.

        Args:
            image1: date 1 chips (N, C, H, W), normalised.
            image2: date 2 chips on the same grid.
            masks: change class indices (N, H, W), ``IGNORE_INDEX`` where unknown.
            max_pixels: pixels sampled (seeded) for the fit.
        """
        pixels = change_pixels(image1, image2)
        x = pixels.permute(0, 2, 3, 1).reshape(-1, pixels.shape[1])
        y = masks.reshape(-1)
        keep = torch.nonzero(y != IGNORE_INDEX).ravel()
        if not len(keep):
            return
        pick = torch.randperm(len(keep), generator=torch.Generator().manual_seed(0))[:max_pixels]
        keep = keep[pick]
        fitted = fit_softmax_regression(
            x[keep].numpy(), y[keep].numpy(), self.task_card.num_outputs, l2=1e-3
        )
        self.start_pixel_linear(fitted)

    def cached_features(self, batch: LabeledSample) -> CachedFeatures | None:
        """Precomputed backbone features of both dates (``features1``, ``features2``), or None."""
        if "features1" not in batch:
            return None
        return batch["features1"], batch["features2"]

    def loss(self, output: Tensor, batch: LabeledSample) -> Tensor:
        """Weighted cross-entropy over labelled pixels."""
        target = batch["mask"].long()
        if not (target != IGNORE_INDEX).any():
            return output.sum() * 0.0
        return F.cross_entropy(
            output, target, weight=self.class_weight.to(output.dtype), ignore_index=IGNORE_INDEX
        )
