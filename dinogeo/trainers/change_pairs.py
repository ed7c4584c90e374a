"""Change pairs: (date 1, date 2, change mask) triples for :class:`~dinogeo.trainers.ChangeTask`."""

from __future__ import annotations

from typing import Any

from dinogeo.errors import ConfigError
from dinogeo.trainers.datamodule import CONFIG_PREFIX, LabeledChipDataModule, as_list
from dinogeo.trainers.imagery import SceneImages

__all__ = ["ChangePairDataModule"]


class ChangePairDataModule(LabeledChipDataModule):
    """(date 1, date 2, change mask) triples, split by spatial blocks of date 1's grid.

    Everything but the images is :class:`LabeledChipDataModule`'s, whose arguments pass through
    unchanged (``**kwargs``, which ``dinogeo fit`` resolves to the full list): the same imagery,
    label and split records (vector labels with ``label_field``/``label_layer``/
    ``point_radius``, separate ``val_labels``, ``split_by``...). The module only holds other
    scene images: date pairs (:class:`~dinogeo.trainers.imagery.SceneImages`), date 2 read on
    date 1's grid.

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
        #: date pairs instead of single images
        self.scenes = SceneImages.pairs(
            as_list(date1), as_list(date2), (f"{CONFIG_PREFIX}date1", f"{CONFIG_PREFIX}date2")
        )
        if self.task_card.kind != "change":
            raise ConfigError(
                f"ChangePairDataModule needs a change task card, got {self.task_card.name!r} "
                f"({self.task_card.kind})"
            )
