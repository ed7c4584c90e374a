"""Labelled chips for the dense heads: imagery + label rasters or vectors, split by spatial blocks.

:class:`LabeledChipDataModule` pairs one or more images with labels (a class/height raster, or a
GeoPackage/Shapefile/GeoJSON of polygons and points, :class:`~dinogeo.trainers.chip_labels.Labels`),
reads the imagery in the weight card's band order and normalisation, cuts the grid into blocks,
assigns whole blocks to validation and keeps the chips (inside one block) that hold labels
(:func:`~dinogeo.trainers.chip_selection.select_chips`); its datasets are
:class:`~dinogeo.trainers.chip_dataset.LabeledChipDataset`.
:class:`~dinogeo.trainers.change_pairs.ChangePairDataModule` does the same for (date 1, date 2,
change mask) triples, resampling date 2 onto date 1's grid when grids differ.

The module is built from records it holds: the scenes' images
(:class:`~dinogeo.trainers.imagery.SceneImages`: single images or date pairs, the one thing the
change module changes), how they are read (:class:`~dinogeo.data.imagery_spec.ImagerySpec`),
how the labels are read (:class:`~dinogeo.labels.label_spec.LabelSpec`, one for the training and
one for any separate validation labels) and how scenes are cut and split
(:class:`~dinogeo.labels.split.ChipSplit`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, RandomSampler

from dinogeo.data.imagery_spec import DEFAULT_BACKBONE, ImagerySpec
from dinogeo.data.sample_types import LabeledSample
from dinogeo.errors import ConfigError, NoValidDataError
from dinogeo.labels.independence import check_independent
from dinogeo.labels.label_spec import LabelSpec
from dinogeo.labels.sources import LabelKeys, parse_label_source
from dinogeo.labels.split import BlockSplit, ChipSplit
from dinogeo.labels.vectors import IGNORE_INDEX
from dinogeo.models.card import WeightCard
from dinogeo.models.task_card import load_task_card
from dinogeo.trainers.base import resolve_backbone
from dinogeo.trainers.chip_dataset import Chip, LabeledChipDataset
from dinogeo.trainers.chip_labels import Labels
from dinogeo.trainers.chip_selection import hold_out_blocks, select_chips
from dinogeo.trainers.imagery import ImageReader, SceneImages, scene_grid

__all__ = ["CONFIG_PREFIX", "LabeledChipDataModule", "as_list", "fixed_loader"]

#: where a ``dinogeo fit`` config holds the data module's options (named in label errors)
CONFIG_PREFIX = "data.init_args."


def as_list(value: str | Sequence[str] | None) -> list[str]:
    """One path or several as a list of strings (None: empty)."""
    if value is None:
        return []
    return [value] if isinstance(value, str | Path) else [str(v) for v in value]


def fixed_loader(dataset: Dataset[LabeledSample], hparams: Any) -> DataLoader[LabeledSample]:
    """An unshuffled loader of fixed chips (validation or selection) with the module's batch settings."""
    return DataLoader(dataset, batch_size=hparams["batch_size"], num_workers=hparams["num_workers"])


class LabeledChipDataModule(LightningDataModule):
    """Chips of images with raster or vector labels, split by spatial blocks.

    Args:
        image: image path(s).
        labels: label path(s): one per image, or one vector file for all images.
        task: task card name or path.
        backbone: backbone file or architecture name (its weight card fixes band order and
            normalisation).
        sensor: the imagery's sensor (name or YAML).
        bands: the file's band names in file order, when it holds a subset of the sensor.
        scale: override of the sensor's DN-to-reflectance scale.
        offset: override of the sensor's offset.
        label_field: class attribute of vector labels (guessed when None).
        label_layer: layer of a multi-layer GeoPackage (``labels`` may also be a QGIS layer
            source, ``labels.gpkg|layername=train``).
        label_crs: CRS of label coordinates stored without one (a CSV with X/Y or WKT columns
            and no ``.prj``), e.g. ``EPSG:4326``.
        point_radius: disk radius in pixels for point labels (0: one pixel).
        val_labels: separate validation labels (e.g. points): then training uses every block
            and validation uses these labels over whole images. They must not be the training
            labels (an error says so).
        val_label_layer: layer of the validation labels; without ``val_labels`` it is read from
            the training labels' file (one GeoPackage with a training and a validation layer).
        val_label_field: class attribute of the validation labels (default: ``label_field``).
        chip_size: chip side in pixels (a multiple of the patch size is best).
        block_size: spatial block side in pixels (>= chip_size).
        val_fraction: share of labelled pixels (by block) held out for validation.
        split_by: what ``val_fraction`` counts: ``"labelled"`` pixels, or ``"positive"`` ones
            (regression targets > 0, e.g. vegetation in a canopy height model that is mostly 0 m:
            validation blocks then always hold some canopy).
        min_labelled: minimum labelled pixels for a chip to be used.
        train_stride: stride of training chip positions inside a block (default chip_size // 4).
        chips_per_epoch: training samples per epoch (with replacement); None: each chip once.
        batch_size: batch size.
        num_workers: DataLoader workers.
        seed: seed of the block split.
        augment: random flips/rotations of training chips.
        select_fraction: share of the training chips, taken by whole blocks, held out as a
            selection set (``select_set``) for choosing the training length or checkpoint
            (:class:`~dinogeo.trainers.selection.BestOnSelection`) without looking at the
            validation blocks; 0: none.
    """

    def __init__(
        self,
        image: str | list[str],
        labels: str | list[str],
        task: str = "land_cover",
        backbone: str = DEFAULT_BACKBONE,
        sensor: str | None = None,
        bands: list[str] | None = None,
        scale: float | None = None,
        offset: float | None = None,
        label_field: str | None = None,
        label_layer: str | None = None,
        label_crs: str | None = None,
        point_radius: float = 0.0,
        val_labels: str | list[str] | None = None,
        val_label_layer: str | None = None,
        val_label_field: str | None = None,
        chip_size: int = 64,
        block_size: int = 128,
        val_fraction: float = 0.2,
        split_by: str = "labelled",
        min_labelled: int = 1,
        train_stride: int | None = None,
        chips_per_epoch: int | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
        augment: bool = True,
        select_fraction: float = 0.0,
    ) -> None:
        super().__init__()
        #: the backbone and how the imagery is read for it (``dinogeo fit`` links it into the model)
        self.imagery = ImagerySpec(backbone, sensor, bands, scale, offset)
        # the one record of the arguments; under LightningCLI it holds the arguments of the class
        # it built (a subclass's own, e.g. ``date1``/``date2`` instead of ``image``)
        self.save_hyperparameters()
        if block_size < chip_size:
            raise ConfigError(
                f"block_size ({block_size}) must be at least chip_size ({chip_size}) so chips fit "
                "inside one spatial block"
            )
        self.task_card = load_task_card(task)
        #: the scenes' images (the change data module holds date pairs instead)
        self.scenes = SceneImages(tuple(as_list(image)))
        #: how the training labels are read
        self.label_spec = LabelSpec(
            label_field, label_layer, label_crs, point_radius, LabelKeys.prefixed(CONFIG_PREFIX)
        )
        #: separate validation labels (none: validation blocks of the training labels)
        self.val_labels = as_list(val_labels)
        #: how the validation labels are read: their layer and field, the rest as training's
        self.val_label_spec = self.label_spec.for_validation(
            val_label_layer, val_label_field, LabelKeys.prefixed(CONFIG_PREFIX, validation=True)
        )
        if split_by not in ("labelled", "positive"):
            raise ConfigError(f"split_by must be 'labelled' or 'positive', got {split_by!r}")
        if split_by == "positive" and self.task_card.is_classification:
            raise ConfigError("split_by: positive is for regression targets; use 'labelled'")
        #: chip and block sizes, validation and selection shares, seed
        self.chip_split = ChipSplit(chip_size, block_size, val_fraction, seed, select_fraction)
        self.train_set: LabeledChipDataset | None = None
        self.val_set: LabeledChipDataset | None = None
        self.select_set: LabeledChipDataset | None = None
        self.splits: list[BlockSplit] = []

    # ------------------------------------------------------------------ helpers
    def weight_card(self) -> WeightCard:
        """The backbone's weight card (band order and normalisation of the inputs)."""
        _, card = resolve_backbone(self.imagery)
        return card

    def _labels(self, path: str, reader: ImageReader, *, validation: bool = False) -> Labels:
        spec = self.val_label_spec if validation else self.label_spec
        return Labels(path, self.task_card, reader, spec)

    def _validation_sources(self, train_labels: list[str]) -> list[str]:
        """The separate validation labels: ``val_labels``, or ``val_label_layer`` of the labels."""
        if self.val_labels or not self.val_label_spec.layer:
            return self.val_labels
        # one file with a training and a validation layer: drop any layer named in the URI
        return [str(parse_label_source(p).path) for p in train_labels]

    @staticmethod
    def _pair(images: list[str], labels: list[str], what: str) -> list[tuple[str, str]]:
        if len(labels) == 1 and len(images) > 1:
            labels = labels * len(images)
        if not images or len(labels) != len(images):
            raise ConfigError(
                f"{what}: give one label file per image or one for all ({len(images)} image(s), "
                f"{len(labels)} label file(s))"
            )
        return list(zip(images, labels, strict=True))

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary stored in the model bundle's training config."""
        out = {k: v for k, v in self.hparams.items() if not k.startswith("_")}
        out["train_chips"] = len(self.train_set) if self.train_set else 0
        out["val_chips"] = len(self.val_set) if self.val_set else 0
        return out

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str | None = None) -> None:
        """Open images and labels, split blocks and select labelled chips (once)."""
        if self.train_set is not None:
            return
        hp = self.hparams
        card = self.weight_card()
        pairs = self._pair(list(self.scenes.grids), as_list(hp["labels"]), f"{CONFIG_PREFIX}labels")
        readers = self.scenes.open(card, self.imagery)
        labels = [
            self._labels(lab, scene_grid(r)) for (_, lab), r in zip(pairs, readers, strict=True)
        ]
        val_sep = self._validation_sources([lab for _, lab in pairs])
        split = self.chip_split
        train, val = select_chips(
            readers,
            labels,
            replace(split, val_fraction=0.0) if val_sep else split,
            min_labelled=hp["min_labelled"],
            split_by=hp["split_by"],
            train_stride=hp["train_stride"] or max(1, split.chip_size // 4),
            splits_out=self.splits,
        )
        _check_nonempty(train, "training", pairs, hp)
        if split.select_fraction:
            train, select = hold_out_blocks(train, split)
            self.select_set = LabeledChipDataset(readers, labels, select)
        self.train_set = LabeledChipDataset(readers, labels, train, augment=hp["augment"])
        if val_sep:
            vpairs = self._pair([p for p, _ in pairs], val_sep, f"{CONFIG_PREFIX}val_labels")
            vlabels = [
                self._labels(lab, scene_grid(r), validation=True)
                for (_, lab), r in zip(vpairs, readers, strict=True)
            ]
            for train_lab, val_lab in zip(labels, vlabels, strict=True):
                check_independent(
                    train_lab.source,
                    val_lab.source,
                    train_lab.vector,
                    val_lab.vector,
                    keys=(
                        f"{CONFIG_PREFIX}labels",
                        f"{CONFIG_PREFIX}val_labels / {CONFIG_PREFIX}val_label_layer",
                    ),
                )
            _, val = select_chips(
                readers,
                vlabels,
                replace(split, val_fraction=0.0),
                min_labelled=1,
                train_stride=split.chip_size,
                all_to_val=True,
            )
            self.val_set = LabeledChipDataset(readers, vlabels, val)
        else:
            self.val_set = LabeledChipDataset(readers, labels, val)

    def class_frequencies(self, max_chips: int = 64) -> np.ndarray:
        """Labelled pixel count per class over (up to ``max_chips``) training chips."""
        if self.train_set is None:
            self.setup("fit")
        assert self.train_set is not None
        k = self.task_card.num_outputs
        counts = np.zeros(k, dtype=np.float64)
        ds = self.train_set
        step = max(1, len(ds.chips) // max_chips)
        for chip in ds.chips[::step]:
            m = ds.labels[chip.scene].read(chip.window)
            counts += np.bincount(m[m != IGNORE_INDEX].astype(np.int64), minlength=k)[:k]
        return counts

    def train_dataloader(self) -> DataLoader[LabeledSample]:
        """Shuffled training chips."""
        assert self.train_set is not None, "call setup() first"
        hp = self.hparams
        n = hp["chips_per_epoch"]
        sampler = RandomSampler(self.train_set, replacement=bool(n), num_samples=n)
        return DataLoader(
            self.train_set,
            batch_size=hp["batch_size"],
            sampler=sampler,
            num_workers=hp["num_workers"],
            drop_last=False,
        )

    def val_dataloader(self) -> DataLoader[LabeledSample]:
        """Validation chips (spatially separate blocks, or the separate validation labels)."""
        assert self.val_set is not None, "call setup() first"
        return fixed_loader(self.val_set, self.hparams)

    def select_dataloader(self) -> DataLoader[LabeledSample] | None:
        """The selection chips (training blocks held out by ``select_fraction``), or None."""
        return None if self.select_set is None else fixed_loader(self.select_set, self.hparams)


def _check_nonempty(chips: list[Chip], what: str, pairs: Any, hp: Any) -> None:
    if chips:
        return
    files = ", ".join(f"{img} + {lab}" for img, lab in pairs)
    raise NoValidDataError(
        f"no {what} chip left after filtering ({files}): no chip of {hp['chip_size']} px inside a "
        f"{what} block holds >= {hp['min_labelled']} labelled pixels over valid imagery. Fix: "
        "lower min_labelled, chip_size or val_fraction, or add labels over the imagery"
    )
