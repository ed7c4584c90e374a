"""Change pairs: (date 1, date 2, change mask) triples for :class:`~dinogeo.trainers.ChangeTask`."""

from __future__ import annotations

from typing import Any

from dinogeo.errors import ConfigError
from dinogeo.models.card import WeightCard
from dinogeo.trainers.datamodule import CONFIG_PREFIX, LabeledChipDataModule, as_list
from dinogeo.trainers.imagery import Scene

__all__ = ["ChangePairDataModule"]


class ChangePairDataModule(LabeledChipDataModule):
    """(date 1, date 2, change mask) triples, split by spatial blocks of date 1's grid.

    Everything but the images is :class:`LabeledChipDataModule`'s: vector labels with
    ``label_field``/``label_layer``/``point_radius``, separate ``val_labels``, ``split_by``...;
    only opening a scene differs (a date pair, date 2 aligned to date 1).

    Args:
        date1: date-1 image path(s) (their grids define the chips).
        date2: date-2 image path(s), resampled onto date 1's grid when grids differ.
        labels: change mask raster(s) (values from the change task card) or vectors.
        task: a change task card.
        **kwargs: every other :class:`LabeledChipDataModule` argument (``backbone``,
            ``sensor``, ``bands``, ``label_field``, ``val_labels``, ``chip_size``...).
    """

    def __init__(
        self,
        date1: str | list[str],
        date2: str | list[str],
        labels: str | list[str],
        task: str = "change",
        **kwargs: Any,
    ) -> None:
        super().__init__(image=date1, labels=labels, task=task, **kwargs)
        first, second = as_list(date1), as_list(date2)
        if len(first) != len(second) or not first:
            raise ConfigError(
                f"{CONFIG_PREFIX}date1 and {CONFIG_PREFIX}date2 must list the same number of "
                f"images ({len(first)} vs {len(second)})"
            )
        if self.task_card.kind != "change":
            raise ConfigError(
                f"ChangePairDataModule needs a change task card, got {self.task_card.name!r} "
                f"({self.task_card.kind})"
            )

    def _scene_images(self) -> list[str]:
        """Date 1 of each pair (its grid defines the chips)."""
        return as_list(self.hparams["date1"])

    def _open_images(self, images: list[str], card: WeightCard) -> list[Scene]:
        """Date pairs: date 2 aligned to date 1's grid."""
        second = as_list(self.hparams["date2"])  # as many as date 1 (checked in __init__)
        pairs: list[Scene] = []
        for a, b in zip(images, second, strict=True):
            first = self._reader(a, card)
            pairs.append((first, self._reader(b, card).aligned_to(first)))
        return pairs
