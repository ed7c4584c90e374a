"""Synthetic change pairs from real imagery: paste real patches from elsewhere into date 2.

No georeferenced change labels ship with dinogeo's sample data, so change detection can also be
trained with a standard pretext (as in self-supervised change detection work that pastes
foreign image content into one date, e.g. "copy-paste" augmentations for change detection):

1. read a chip of a real image as date 1;
2. date 2 is the same chip with a global radiometric jitter (per-band gain and offset, as between
   two acquisitions) that must *not* count as change;
3. 1-N shapes (rectangles and ellipses) of real imagery cut from another, randomly chosen place
   are pasted into date 2; the pasted pixels are the change mask (a paste that looks like what
   it covers, mean absolute difference below ``min_contrast``, is drawn again).

Validation pairs come from held-out images (``val_images``) or from held-out spatial blocks and
are fixed (seeded by their index), so validation metrics are comparable between epochs. Selection
pairs (to choose a head's training step without the validation pairs) come from held-out blocks
of the training images (``select_fraction``) or from other images (``select_images``): a scene of
another place and date, so that the choice sees a shift like the one between the training and
validation scenes, which pairs from the training scene do not show.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from rasterio.windows import Window
from torch.utils.data import DataLoader, Dataset

from dinogeo.data.imagery_spec import DEFAULT_BACKBONE, ImagerySpec
from dinogeo.data.sample_types import LabeledSample
from dinogeo.errors import ConfigError, NoValidDataError
from dinogeo.labels.split import ChipSplit, block_split
from dinogeo.models.task_card import load_task_card
from dinogeo.trainers.base import resolve_backbone
from dinogeo.trainers.datamodule import fixed_loader
from dinogeo.trainers.imagery import ImageReader

__all__ = ["SyntheticChangeDataModule", "SyntheticChangeDataset", "paste_change"]


def _shape_mask(rng: np.random.Generator, size: int, lo: int, hi: int) -> np.ndarray:
    h, w = (int(v) for v in rng.integers(lo, hi + 1, size=2))
    top, left = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
    mask = np.zeros((size, size), dtype=bool)
    if rng.random() < 0.5:
        mask[top : top + h, left : left + w] = True
    else:
        yy, xx = np.mgrid[0:size, 0:size]
        cy, cx = top + (h - 1) / 2, left + (w - 1) / 2
        mask = ((yy - cy) / (h / 2)) ** 2 + ((xx - cx) / (w / 2)) ** 2 <= 1.0
    return mask


def paste_change(
    image: np.ndarray,
    donors: list[np.ndarray],
    rng: np.random.Generator,
    *,
    patch_min: int,
    patch_max: int,
    min_contrast: float = 0.25,
    jitter: float = 0.05,
) -> tuple[np.ndarray, np.ndarray]:
    """Make date 2 from date 1 by jittering it and pasting donor shapes.

    Args:
        image: date 1, normalised (C, S, S).
        donors: normalised (C, S, S) chips from other places, one per pasted shape.
        rng: random generator.
        patch_min: smallest shape side in pixels.
        patch_max: largest shape side in pixels.
        min_contrast: minimum mean absolute difference (normalised units) between the pasted
            and covered pixels; lower-contrast shapes are skipped.
        jitter: standard deviation of the global per-band gain and offset (no-change nuisance).

    Returns:
        ``(date 2, change mask)``: (C, S, S) float32 and (S, S) uint8 (1 = pasted).
    """
    c, size, _ = image.shape
    gain = 1.0 + rng.normal(0.0, jitter, size=(c, 1, 1))
    bias = rng.normal(0.0, jitter, size=(c, 1, 1))
    second = (image * gain + bias).astype(np.float32)
    change = np.zeros((size, size), dtype=np.uint8)
    for donor in donors:
        for _ in range(4):
            shape = _shape_mask(rng, size, patch_min, min(patch_max, size))
            diff = np.abs(donor[:, shape] - image[:, shape]).mean()
            if diff >= min_contrast:
                second[:, shape] = donor[:, shape]
                change[shape] = 1
                break
    return second, change


class SyntheticChangeDataset(Dataset[LabeledSample]):
    """Synthetic change pairs drawn from allowed windows of real images.

    Args:
        readers: the images.
        regions: per image, a bool (H, W) mask of pixels chips may cover (a spatial split).
        length: samples per epoch.
        chip_size: chip side in pixels.
        patch_min: smallest pasted shape side.
        patch_max: largest pasted shape side.
        max_patches: most pasted shapes per pair (at least 1).
        min_valid: minimum valid fraction of a chip.
        seed: None draws fresh pairs each time (training; reproducible under torch's seed, e.g.
            ``seed_everything``); an int fixes pair ``i`` (validation).
    """

    def __init__(
        self,
        readers: list[ImageReader],
        regions: list[np.ndarray],
        *,
        length: int,
        chip_size: int,
        patch_min: int,
        patch_max: int,
        max_patches: int,
        min_valid: float = 0.9,
        seed: int | None = None,
    ) -> None:
        self.readers = readers
        self.chip_size = chip_size
        self.length = length
        self.patch = (patch_min, patch_max)
        self.max_patches = max(1, max_patches)
        self.min_valid = min_valid
        self.seed = seed
        self.anchors = []  # (image, row, col) of allowed chip corners
        for i, region in enumerate(regions):
            ok = _chip_corners(region, chip_size)
            self.anchors += [(i, int(r), int(c)) for r, c in zip(*np.nonzero(ok), strict=True)]
        if not self.anchors:
            raise NoValidDataError(
                f"no {chip_size}x{chip_size} chip fits in the allowed area of "
                f"{[str(r.path) for r in readers]}: lower chip_size or val_fraction"
            )

    def __len__(self) -> int:
        return self.length

    def _chip(self, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int, int]]:
        for _ in range(50):
            i, r, c = self.anchors[int(rng.integers(len(self.anchors)))]
            image, valid = self.readers[i].read(Window(c, r, self.chip_size, self.chip_size))
            if valid.mean() >= self.min_valid:
                return image, (i, r, c)
        raise NoValidDataError(
            f"could not find a chip with >= {self.min_valid:.0%} valid pixels in "
            f"{[str(r.path) for r in self.readers]} after 50 tries: the images are mostly nodata"
        )

    def __getitem__(self, index: int) -> LabeledSample:
        # training pairs: fresh each time, drawn from torch's generator so that
        # seed_everything (and the DataLoader's per-worker seeding) makes a run reproducible
        fresh = int(torch.randint(0, 2**62, ()).item())
        rng = np.random.default_rng(fresh if self.seed is None else (self.seed, index))
        first, where = self._chip(rng)
        donors = []
        for _ in range(int(rng.integers(1, self.max_patches + 1))):
            donor, other = self._chip(rng)
            tries = 0
            while other[0] == where[0] and _near(other, where, self.chip_size) and tries < 10:
                donor, other = self._chip(rng)
                tries += 1
            donors.append(donor)
        second, change = paste_change(
            first, donors, rng, patch_min=self.patch[0], patch_max=self.patch[1]
        )
        if self.seed is None and rng.random() < 0.5:  # pasted content may be in either date
            first, second = second, first
        return {
            "image1": torch.from_numpy(first),
            "image2": torch.from_numpy(second),
            "mask": torch.from_numpy(change.astype(np.int64)),
            "valid": torch.ones(change.shape, dtype=torch.bool),
        }


def _near(a: tuple[int, int, int], b: tuple[int, int, int], size: int) -> bool:
    return abs(a[1] - b[1]) < size and abs(a[2] - b[2]) < size


def _chip_corners(region: np.ndarray, size: int) -> np.ndarray:
    """Corners (r, c) whose size x size chip lies fully in ``region`` (every 4 pixels)."""
    h, w = region.shape
    if h < size or w < size:
        return np.zeros((0, 0), dtype=bool)
    integral = np.pad(region.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    total = (
        integral[size:, size:]
        - integral[:-size, size:]
        - integral[size:, :-size]
        + integral[:-size, :-size]
    )
    ok = total == size * size
    keep: np.ndarray = np.zeros_like(ok)
    keep[::4, ::4] = ok[::4, ::4]
    return keep


class SyntheticChangeDataModule(LightningDataModule):
    """Change pairs synthesised from real imagery (see the module docstring).

    Args:
        images: training images.
        val_images: held-out images for validation; None holds out spatial blocks of ``images``.
        task: a change task card with two classes (no change, change).
        backbone: backbone file or architecture name.
        sensor: the imagery's sensor.
        bands: the files' band names in file order.
        scale: DN-to-reflectance scale override.
        offset: offset override.
        chip_size: chip side in pixels.
        patch_min: smallest pasted shape side in pixels.
        patch_max: largest pasted shape side in pixels.
        max_patches: most pasted shapes per pair.
        block_size: spatial block side when holding out blocks.
        val_fraction: share of blocks held out when ``val_images`` is None.
        chips_per_epoch: training pairs per epoch.
        val_chips: fixed validation pairs.
        batch_size: batch size.
        num_workers: DataLoader workers.
        seed: seed of the split and the validation pairs.
        select_fraction: share of the training area, by whole blocks, held out for a fixed
            selection set (``select_set``, ``val_chips`` pairs whose donors come from the same
            held-out area) to choose the training length or checkpoint
            (:class:`~dinogeo.trainers.selection.BestOnSelection`) without the validation
            pairs; 0: none.
        select_images: images of other scenes (neither training nor validation images) for the
            fixed selection set instead of held-out training blocks: ``val_chips`` pairs, donors
            from the same images. Excludes ``select_fraction``.
        select_sensor: the sensor of ``select_images`` (a shipped name or a sensor YAML), read
            with that sensor's scale and offset and the files' band descriptions; None: the
            training images' ``sensor``, ``bands``, ``scale`` and ``offset``.
    """

    def __init__(
        self,
        images: list[str],
        val_images: list[str] | None = None,
        task: str = "change",
        backbone: str = DEFAULT_BACKBONE,
        sensor: str | None = None,
        bands: list[str] | None = None,
        scale: float | None = None,
        offset: float | None = None,
        chip_size: int = 64,
        patch_min: int = 8,
        patch_max: int = 24,
        max_patches: int = 3,
        block_size: int = 128,
        val_fraction: float = 0.25,
        chips_per_epoch: int = 256,
        val_chips: int = 64,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
        select_fraction: float = 0.0,
        select_images: list[str] | None = None,
        select_sensor: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        #: the backbone and how the imagery is read for it (``dinogeo fit`` links it into the model)
        self.imagery = ImagerySpec(backbone, sensor, bands, scale, offset)
        self.task_card = load_task_card(task)
        if self.task_card.kind != "change" or self.task_card.num_outputs != 2:
            raise ConfigError(
                f"synthetic change pairs are binary: use a change task card with two classes "
                f"(e.g. 'change'), got {self.task_card.name!r}"
            )
        if not images:
            raise ConfigError("data.images is empty: list at least one real image")
        #: chip and block sizes, validation and selection shares, seed
        self.chip_split = ChipSplit(chip_size, block_size, val_fraction, seed, select_fraction)
        if select_images and select_fraction:
            raise ConfigError(
                f"select_images and select_fraction ({select_fraction}) both define the "
                "selection set: set one of them (select_fraction: 0 with select_images)"
            )
        if select_sensor and not select_images:
            raise ConfigError("select_sensor is set without select_images: list the images")
        reused = _same_files(select_images or [], [*images, *(val_images or [])])
        if reused:
            raise ConfigError(
                f"select_images {reused} are also training or validation images: selection "
                "needs other scenes (or set select_fraction to hold out training blocks)"
            )
        self.train_set: SyntheticChangeDataset | None = None
        self.val_set: SyntheticChangeDataset | None = None
        self.select_set: SyntheticChangeDataset | None = None

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary stored in the model bundle."""
        return dict(self.hparams)

    def setup(self, stage: str | None = None) -> None:
        """Open the images and define training/validation areas."""
        if self.train_set is not None:
            return
        hp = self.hparams
        _, card = resolve_backbone(self.imagery)

        def reader(path: str, sensor: str | None = None) -> ImageReader:
            if sensor is not None:  # another sensor: its own scale, offset and band names
                return ImageReader(path, card, ImagerySpec(sensor=sensor))
            return ImageReader(path, card, self.imagery)

        split = self.chip_split
        train = [reader(p) for p in hp["images"]]
        common = {
            "chip_size": split.chip_size,
            "patch_min": hp["patch_min"],
            "patch_max": hp["patch_max"],
            "max_patches": hp["max_patches"],
        }
        if hp["val_images"]:
            val = [reader(p) for p in hp["val_images"]]
            train_regions = [np.ones((r.height, r.width), dtype=bool) for r in train]
            val_regions = [np.ones((r.height, r.width), dtype=bool) for r in val]
        else:
            val = train
            splits = [
                block_split(
                    r.width,
                    r.height,
                    block_size=split.block_size,
                    val_fraction=split.val_fraction,
                    seed=split.seed,
                )
                for r in train
            ]
            train_regions = [s.mask("train") for s in splits]
            val_regions = [s.mask("val") for s in splits]
        if split.select_fraction:
            held = [
                block_split(
                    r.width,
                    r.height,
                    block_size=split.block_size,
                    val_fraction=split.select_fraction,
                    seed=split.seed + 1,
                    weights=_block_sums(region, split.block_size),
                ).mask("val")
                for r, region in zip(train, train_regions, strict=True)
            ]
            select_regions = [region & h for region, h in zip(train_regions, held, strict=True)]
            train_regions = [region & ~h for region, h in zip(train_regions, held, strict=True)]
            self.select_set = SyntheticChangeDataset(
                train, select_regions, length=hp["val_chips"], seed=split.seed + 1, **common
            )
        elif hp.get("select_images"):
            chosen = [reader(p, hp.get("select_sensor")) for p in hp["select_images"]]
            self.select_set = SyntheticChangeDataset(
                chosen,
                [np.ones((r.height, r.width), dtype=bool) for r in chosen],
                length=hp["val_chips"],
                seed=split.seed + 1,
                **common,
            )
        self.train_set = SyntheticChangeDataset(
            train, train_regions, length=hp["chips_per_epoch"], **common
        )
        self.val_set = SyntheticChangeDataset(
            val, val_regions, length=hp["val_chips"], seed=split.seed, **common
        )

    def train_dataloader(self) -> DataLoader[LabeledSample]:
        """Fresh random pairs every epoch."""
        assert self.train_set is not None, "call setup() first"
        return DataLoader(
            self.train_set,
            batch_size=self.hparams["batch_size"],
            shuffle=False,
            num_workers=self.hparams["num_workers"],
        )

    def val_dataloader(self) -> DataLoader[LabeledSample]:
        """Fixed validation pairs."""
        assert self.val_set is not None, "call setup() first"
        return fixed_loader(self.val_set, self.hparams)

    def select_dataloader(self) -> DataLoader[LabeledSample] | None:
        """Fixed selection pairs (``select_fraction`` or ``select_images``), or None."""
        return None if self.select_set is None else fixed_loader(self.select_set, self.hparams)


def _block_sums(region: np.ndarray, block_size: int) -> np.ndarray:
    """Pixels of ``region`` per block (block rows, block cols): blocks outside it weigh 0."""
    h, w = region.shape
    rows, cols = -(-h // block_size), -(-w // block_size)
    padded = np.zeros((rows * block_size, cols * block_size), dtype=np.int64)
    padded[:h, :w] = region
    return padded.reshape(rows, block_size, cols, block_size).sum(axis=(1, 3)).astype(float)


def _same_files(paths: list[str], others: list[str]) -> list[str]:
    """The entries of ``paths`` that name a file of ``others`` (resolved paths compared)."""
    taken = {str(Path(o).resolve()) for o in others}
    return [p for p in paths if str(Path(p).resolve()) in taken]
