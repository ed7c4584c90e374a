"""Change pairs: (date 1, date 2, change mask) triples for :class:`~dinogeo.trainers.ChangeTask`."""

from __future__ import annotations

from dinogeo.errors import ConfigError
from dinogeo.trainers.datamodule import (
    LabeledChipDataModule,
    LabeledChipDataset,
    _as_list,
    _check_nonempty,
    select_chips,
)
from dinogeo.trainers.imagery import ImageReader

__all__ = ["ChangePairDataModule"]


class ChangePairDataModule(LabeledChipDataModule):
    """(date 1, date 2, change mask) triples, split by spatial blocks of date 1's grid.

    Args:
        date1: date-1 image path(s) (their grids define the chips).
        date2: date-2 image path(s), resampled onto date 1's grid when grids differ.
        labels: change mask raster(s) (values from the change task card) or vectors.
        task: a change task card.
        **kwargs: the remaining :class:`LabeledChipDataModule` arguments.
    """

    def __init__(
        self,
        date1: str | list[str],
        date2: str | list[str],
        labels: str | list[str],
        task: str = "change",
        backbone: str = "vit_test_patch16_dinov3",
        sensor: str | None = None,
        bands: list[str] | None = None,
        scale: float | None = None,
        offset: float | None = None,
        chip_size: int = 64,
        block_size: int = 128,
        val_fraction: float = 0.2,
        min_labelled: int = 1,
        train_stride: int | None = None,
        chips_per_epoch: int | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
        augment: bool = True,
    ) -> None:
        super().__init__(
            image=date1,
            labels=labels,
            task=task,
            backbone=backbone,
            sensor=sensor,
            bands=bands,
            scale=scale,
            offset=offset,
            chip_size=chip_size,
            block_size=block_size,
            val_fraction=val_fraction,
            min_labelled=min_labelled,
            train_stride=train_stride,
            chips_per_epoch=chips_per_epoch,
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
            augment=augment,
        )
        self.cfg.update(date1=date1, date2=date2)
        if self.task_card.kind != "change":
            raise ConfigError(
                f"ChangePairDataModule needs a change task card, got {self.task_card.name!r} "
                f"({self.task_card.kind})"
            )

    def setup(self, stage: str | None = None) -> None:
        """Open the pairs (date 2 aligned to date 1) and select labelled chips."""
        if self.train_set is not None:
            return
        hp = self.cfg
        card = self.weight_card()
        d1, d2 = _as_list(hp["date1"]), _as_list(hp["date2"])
        if len(d1) != len(d2) or not d1:
            raise ConfigError(
                f"data.date1 and data.date2 must list the same number of images ({len(d1)} vs "
                f"{len(d2)})"
            )
        pairs = self._pair(d1, _as_list(hp["labels"]), "data.labels")
        readers: list[tuple[ImageReader, ImageReader]] = []
        for a, b in zip(d1, d2, strict=True):
            first = self._reader(a, card)
            readers.append((first, self._reader(b, card).aligned_to(first)))
        labels = [self._labels(lab, r[0]) for (_, lab), r in zip(pairs, readers, strict=True)]
        train, val = select_chips(
            readers,
            labels,
            chip_size=hp["chip_size"],
            block_size=hp["block_size"],
            val_fraction=hp["val_fraction"],
            min_labelled=hp["min_labelled"],
            train_stride=hp["train_stride"] or max(1, hp["chip_size"] // 4),
            seed=hp["seed"],
            splits_out=self.splits,
        )
        _check_nonempty(train, "training", pairs, hp)
        self.train_set = LabeledChipDataset(readers, labels, train, augment=hp["augment"])
        self.val_set = LabeledChipDataset(readers, labels, val)
