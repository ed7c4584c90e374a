"""``SSLDataModule``: random chips of an imagery archive turned into DINOv3 multi-crop batches.

Sources are files, folders or globs (or a GeoParquet index from ``dinogeo index``): an archive,
sorted by :func:`dinogeo.data.archive.scan_archive` into the files of the run's sensor (named, or
inferred with ``sensor="auto"``) and the skipped ones, reported in the log and in
``skipped_files.csv`` beside the run. A
distributed-aware random chip sampler cuts chips (at least as large as the Gram crop's region
needs). With ``augment_on="device"`` (the default) the workers only read raw chips and
:class:`~dinogeo.ssl.device_augment.DeviceMultiCrop` normalises, augments and masks the whole
batch on the training device in :meth:`SSLDataModule.on_after_batch_transfer`; with
``augment_on="workers"`` the dataset workers apply
:class:`~dinogeo.ssl.augment.MultiCropAugmentation` to each chip and
:func:`~dinogeo.ssl.collate.collate_multicrop` stacks crops and draws the iBOT masks.

Every random draw is a function of ``(seed, epoch, position)`` (see
:mod:`dinogeo.ssl.checkpointing`), and the data position is saved in checkpoints, so a run
resumed in the middle of an epoch sees exactly the batches it would have seen.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from dinogeo.data.archive import AUTO as SENSOR_AUTO
from dinogeo.data.archive import Archive, scan_archive
from dinogeo.data.chip_grid import AUTO, chip_grids, describe_grids, parse_chip_align
from dinogeo.data.dataset import ChipDataset
from dinogeo.data.imagery_spec import ImagerySpec
from dinogeo.data.samplers import RandomChipSampler
from dinogeo.data.sensors import Sensor
from dinogeo.data.source import Source
from dinogeo.errors import ConfigError
from dinogeo.ssl.augment import MultiCropAugmentation, Photometric
from dinogeo.ssl.batch_types import MultiCropBatch
from dinogeo.ssl.checkpointing import ResumableSampler, SeededRNG, sample_seed
from dinogeo.ssl.collate import collate_multicrop
from dinogeo.ssl.crop_mix import CropMix, CropMixEntry
from dinogeo.ssl.device_augment import DeviceMultiCrop, collate_raw, is_raw_batch, sensor_affine
from dinogeo.ssl.probe_set import load_probe_set

__all__ = ["SKIPPED_CSV", "SSLDataModule"]

#: the skip report's file name, in the run's ``default_root_dir``
SKIPPED_CSV = "skipped_files.csv"


class _MultiCropDataset(Dataset[dict[str, Any]]):
    """Read a chip and augment it with random draws seeded by ``(seed, epoch, position)``.

    With a crop mix, ``augments`` holds one augmentation per entry and the batch's entry is
    ``mix.choose(seed, epoch, batch)``. The sampler yields consecutive positions and the
    DataLoader (``drop_last=True``) groups them by ``batch_size``, so batch ``k`` of an epoch
    holds positions ``[phase + k B, phase + (k+1) B)``, where ``phase`` is 0 except in an epoch
    resumed after a number of samples that is not a multiple of ``B`` (a batch size changed at
    resume): ``phases`` maps that epoch to the offset so that each batch still has one size.
    """

    def __init__(
        self,
        chips: ChipDataset,
        augments: list[MultiCropAugmentation],
        seed: int,
        mix: CropMix | None = None,
        batch_size: int = 1,
        phases: dict[int, int] | None = None,
    ) -> None:
        self.chips = chips
        self.augments = augments
        self.seed = seed
        self.mix = mix
        self.batch_size = batch_size
        self.phases = dict(phases or {})

    def entry(self, epoch: int, position: int) -> int:
        """The crop-mix entry (index into ``augments``) of the batch holding ``position``."""
        if self.mix is None:
            return 0
        batch = (position - self.phases.get(epoch, 0)) // self.batch_size
        return self.mix.choose(self.seed, epoch, batch)

    def augmentation(self, epoch: int, position: int) -> MultiCropAugmentation:
        """The augmentation (crop sizes) of the batch holding ``position`` of ``epoch``."""
        return self.augments[self.entry(epoch, position)]

    def __getitem__(self, key: tuple[int, int, Any]) -> dict[str, Any]:
        epoch, position, query = key
        seed = sample_seed(self.seed, epoch, position)
        with SeededRNG(seed):
            sample = self.chips[query]
        generator = torch.Generator().manual_seed(seed)
        augment = self.augmentation(epoch, position)
        crops: dict[str, Any] = dict(augment(sample["image"].float(), generator=generator))
        crops["_seed"] = seed
        return crops


class _RawChipDataset(_MultiCropDataset):
    """Read a raw chip only (no normalisation, no augmentation): for ``augment_on="device"``.

    The chip and the crop-mix entry are drawn exactly as in :class:`_MultiCropDataset`.
    """

    def __getitem__(self, key: tuple[int, int, Any]) -> dict[str, Any]:
        epoch, position, query = key
        seed = sample_seed(self.seed, epoch, position)
        with SeededRNG(seed):
            q, raw, valid = self.chips.read_raw_chip(query)
        return {
            "raw": raw,
            "valid": valid,
            "affine": sensor_affine(self.chips.sources[q.source].sensor),
            "crop": self.entry(epoch, position),
            "_seed": seed,
        }


def _collate(
    samples: list[dict[str, Any]],
    patch_size: int,
    mask_ratio: tuple[float, float],
    mask_probability: float,
) -> MultiCropBatch:
    seed = sample_seed(*(int(s.pop("_seed")) for s in samples))
    generator = torch.Generator().manual_seed(seed)
    return collate_multicrop(samples, patch_size, mask_ratio, mask_probability, generator)


class SSLDataModule(pl.LightningDataModule):
    """Multi-crop batches from random chips of an imagery archive.

    Args:
        sources: raster files, folders or globs (GeoTIFF/COG/JP2/VRT/zarr).
        index: a GeoParquet index written by ``dinogeo index`` (instead of, or with, ``sources``).
        sensor: a shipped sensor name (``dinogeo sensors``), a sensor YAML path, or ``"auto"``:
            inferred when the archive's files agree on one shipped sensor (ambiguous cases stop
            with the candidates listed). Files of other sensors, label rasters, masks and
            unreadable files are skipped and reported.
        bands: band names or aliases to use, in order; default: all bands of the sensor.
        strict: make any skipped file an error instead of a line of the skip report.
        scale: override the sensor's DN scale (reflectance = DN * scale + offset), e.g. 1e-3
            for surface reflectance exported x1000.
        offset: override the sensor's offset.
        chip_size: side of the random chips in pixels; default: enough for the Gram crops
            (``gram_size``) or the global crops (the largest of ``crop_mix`` when given).
        chip_align: where chips start. ``"auto"`` (default): snapped to each file's storage
            tiles (GeoTIFF tiles, zarr chunks; read from the index or the file), so each chip
            decodes the fewest tiles (2.4-2.6x faster reads on 256-px DEFLATE COGs), at the cost
            of chips that never straddle their span of tiles (the crops inside stay random);
            striped or untiled files keep any offset. One line at start says what each file got.
            A number: offsets are multiples of it for every file (1: any pixel offset).
        samples_per_epoch: chips per epoch over all ranks.
        min_valid_fraction: chips with fewer valid pixels are rejected and redrawn.
        batch_size: images per batch and rank.
        num_workers: DataLoader worker processes.
        global_size: global crop side (256 in DINOv3).
        local_size: local crop side (112 in DINOv3).
        n_local: local crops per image (8 in DINOv3).
        global_scale: area range of the global crops.
        local_scale: area range of the local crops.
        gram_size: Gram teacher crop side (2 x global in DINOv3), or ``None`` for none.
        flips: random D4 flips and quarter turns.
        patch_size: backbone patch size (for the iBOT masks).
        mask_ratio: iBOT (min, max) mask ratio.
        mask_probability: fraction of masked global crops.
        seed: seed of the sampler and of every augmentation draw.
        probe_image: optional labelled raster for the kNN probe (same sensor and bands).
        probe_labels: its class raster (same grid; 0 = nodata).
        probe_chip_size: probe chip side in pixels.
        augment_on: where the multi-crop augmentation runs. ``"device"`` (default): the
            workers only read raw chips, the batch goes through pinned memory and the crops,
            D4, jitter, blur, solarisation and iBOT masks are computed batched on the training
            device (GPU, or CPU on CPU runs) in :meth:`on_after_batch_transfer`.
            ``"workers"``: every chip is augmented in the DataLoader workers, one sample at a
            time (the CPU-bound path; same parameters and distributions).
        crop_mix: several crop resolutions, one per batch (DINOv3's
            ``global_local_crop_pairs_ratios``): a list of
            ``{global_size, local_size, gram_size, weight}`` (:class:`CropMixEntry`). Each batch
            uses one entry, drawn with the normalised weights as a function of
            ``(seed, epoch, batch index)``, identical on every worker and rank and after a
            resume. When given, it replaces ``global_size``, ``local_size`` and ``gram_size``;
            the chips are cut at the largest Gram/global size of the mix, so every entry
            crops the same ground regions at its own resolution. ``None``: one size.
        photometric: the photometric distortions (:class:`~dinogeo.ssl.augment.Photometric`,
            e.g. ``--data.photometric.grayscale_p 0``); ``None``: the recipe's.
    """

    def __init__(
        self,
        sources: list[str] | None = None,
        index: str | None = None,
        sensor: str = SENSOR_AUTO,
        bands: list[str] | None = None,
        strict: bool = False,
        scale: float | None = None,
        offset: float | None = None,
        chip_size: int | None = None,
        chip_align: int | str = "auto",
        samples_per_epoch: int = 1024,
        min_valid_fraction: float = 0.5,
        batch_size: int = 16,
        num_workers: int = 2,
        global_size: int = 224,
        local_size: int = 96,
        n_local: int = 8,
        global_scale: tuple[float, float] = (0.32, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.32),
        gram_size: int | None = None,
        flips: bool = True,
        patch_size: int = 16,
        mask_ratio: tuple[float, float] = (0.1, 0.5),
        mask_probability: float = 0.5,
        seed: int = 0,
        probe_image: str | None = None,
        probe_labels: str | None = None,
        probe_chip_size: int = 32,
        crop_mix: list[CropMixEntry] | None = None,
        augment_on: str = "device",
        photometric: Photometric | None = None,
    ) -> None:
        super().__init__()
        # plain dicts in the hyperparameters: checkpoints stay loadable with weights_only=True
        self.save_hyperparameters(ignore=["crop_mix", "photometric"])
        self.photometric = photometric or Photometric()
        self.hparams["photometric"] = asdict(self.photometric)
        self.crop_mix = CropMix(crop_mix, patch_size) if crop_mix is not None else None
        self.hparams["crop_mix"] = self.crop_mix.to_config() if self.crop_mix else None
        if not sources and not index:
            raise ConfigError(
                "SSLDataModule: give data.sources (files, folders or globs) or data.index "
                "(a GeoParquet index from `dinogeo index`)"
            )
        if global_size % patch_size:
            raise ConfigError(
                f"global_size={global_size} is not a multiple of the patch size {patch_size}: "
                f"use e.g. {global_size // patch_size * patch_size or patch_size}"
            )
        if self.crop_mix is not None:
            needed = self.crop_mix.largest
            what = "largest Gram/global crop of data.crop_mix"
        else:
            needed = gram_size or global_size
            what = f"{'Gram' if gram_size else 'global'} crop size"
        self.chip_size = int(chip_size or needed)
        if self.chip_size < needed:
            raise ConfigError(
                f"chip_size={self.chip_size} is smaller than the {what} {needed}: raise "
                f"data.chip_size to at least {needed} or leave it unset"
            )
        self.chip_align = parse_chip_align(chip_align)
        if (probe_image is None) != (probe_labels is None):
            raise ConfigError("give both data.probe_image and data.probe_labels, or neither")
        self.sources_arg = list(sources or [])
        self.index_arg = index
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        #: how the archive is read: sensor (or ``auto``), bands and scale/offset overrides
        self.imagery = ImagerySpec(sensor=sensor, bands=bands, scale=scale, offset=offset)
        self.strict = strict
        self._archive: Archive | None = None
        sizes = (
            [(e.global_size, e.local_size, e.gram_size) for e in self.crop_mix.entries]
            if self.crop_mix is not None
            else [(global_size, local_size, gram_size)]
        )
        self.augments = [
            MultiCropAugmentation(
                global_size=g,
                local_size=loc,
                n_local=n_local,
                global_scale=global_scale,
                local_scale=local_scale,
                gram_size=gram,
                flips=flips,
                **self.photometric.kwargs(),
            )
            for g, loc, gram in sizes
        ]
        if augment_on not in ("device", "workers"):
            raise ConfigError(
                f"data.augment_on={augment_on!r} must be 'device' (batched on the training "
                "device) or 'workers' (per sample in the DataLoader workers)"
            )
        self.augment_on = augment_on
        self.device_augment = DeviceMultiCrop(
            self.augments,
            patch_size,
            (float(mask_ratio[0]), float(mask_ratio[1])),
            mask_probability,
        )
        self.collate = partial(
            _collate,
            patch_size=patch_size,
            mask_ratio=(float(mask_ratio[0]), float(mask_ratio[1])),
            mask_probability=mask_probability,
        )
        self._sampler: ResumableSampler | None = None
        self._resume: tuple[int, int] | None = None
        self._probe: tuple[Tensor, Tensor, Tensor] | None = None

    # ------------------------------------------------------------------ properties
    @property
    def archive(self) -> Archive:
        """The scanned archive: usable sources, the run's sensor, the skipped files."""
        if self._archive is None:
            min_valid = float(self.hparams["min_valid_fraction"])
            self._archive = scan_archive(
                self.sources_arg,
                self.index_arg,
                self.imagery.sensor or SENSOR_AUTO,
                self.imagery.bands,
                scale=self.imagery.scale,
                offset=self.imagery.offset,
                strict=self.strict,
                chip_size=self.chip_size,
                min_valid=min_valid,
            )
        return self._archive

    @property
    def sensor(self) -> Sensor:
        """The run's sensor, restricted to the selected bands (what the backbone reads)."""
        base, bands = self.archive.sensor, self.imagery.band_list
        return base.select(bands) if bands else base

    @property
    def num_bands(self) -> int:
        """Number of input bands (linked to the model's ``in_chans``)."""
        return len(self.sensor.band_names)

    @property
    def band_names(self) -> list[str]:
        """Band names in input order (linked to the model's ``band_names``)."""
        return list(self.sensor.band_names)

    # ------------------------------------------------------------------ sources
    def open_sources(self) -> list[Source]:
        """The archive's usable rasters, opened lazily (scanned once per process)."""
        return self.archive.sources

    def setup(self, stage: str | None = None) -> None:
        """Scan the archive on every rank; rank 0 logs the skip report and writes its CSV."""
        archive = self.archive
        trainer = self.trainer
        if trainer is not None and not trainer.is_global_zero:
            return
        csv_path = None
        if trainer is not None and archive.skipped:
            csv_path = archive.write_skipped(Path(trainer.default_root_dir) / SKIPPED_CSV)
        print(archive.report(csv_path), file=sys.stderr)  # the run's log, as `dinogeo index` does

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def train_dataloader(self) -> DataLoader[dict[str, Any]]:
        """The multi-crop DataLoader over a resumable, distributed-aware chip sampler."""
        sources = self.open_sources()
        rank, world = self._rank_world()
        per_rank = math.ceil(self.hparams["samples_per_epoch"] / world)
        min_valid = float(self.hparams["min_valid_fraction"])
        grids = chip_grids(sources, self.chip_align)
        if self.chip_align == AUTO:
            rank_zero_info(describe_grids(grids, sources, self.chip_size))
        base = RandomChipSampler(
            sources,
            self.chip_size,
            per_rank * world,
            min_valid=min_valid,
            seed=self.seed,
            rank=rank,
            world_size=world,
            align=grids,
            footprints=self.archive.footprints if any(self.archive.footprints) else None,
        )
        chips = ChipDataset(sources, min_valid=min_valid, validity=base.validity)
        sampler = ResumableSampler(base)
        phases: dict[int, int] = {}
        if self._resume is not None:
            sampler.set_epoch(self._resume[0])
            sampler.skip(*self._resume)
            phases[self._resume[0]] = self._resume[1] % self.batch_size
            self._resume = None
        self._sampler = sampler
        on_device = self.augment_on == "device"
        kind = _RawChipDataset if on_device else _MultiCropDataset
        dataset = kind(chips, self.augments, self.seed, self.crop_mix, self.batch_size, phases)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate_raw if on_device else self.collate,
            drop_last=True,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """With ``augment_on="device"``: normalise, augment and mask the raw batch on its device.

        Batches that are already augmented (``augment_on="workers"``) pass through unchanged, so
        code that iterates :meth:`train_dataloader` itself can call this on every batch.
        """
        return self.device_augment(batch) if is_raw_batch(batch) else batch

    # ------------------------------------------------------------------ resume state
    def state_dict(self) -> dict[str, Any]:
        """Data position: the epoch and the number of samples it has consumed on this rank."""
        trainer = self.trainer
        if trainer is None:
            return {}
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        return {
            "epoch": int(trainer.current_epoch),
            # processed, not completed: a callback saving at the end of a batch runs before
            # the batch is marked completed (Lightning completes it again on restore)
            "samples": int(getattr(progress, "processed", progress.completed)) * self.batch_size,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the data position saved by :meth:`state_dict`."""
        if state_dict:
            self._resume = (int(state_dict["epoch"]), int(state_dict["samples"]))

    # ------------------------------------------------------------------ kNN probe
    def probe_data(self) -> tuple[Tensor, Tensor, Tensor] | None:
        """Normalised probe chips, their majority labels and a reference/query split."""
        if self.hparams["probe_image"] is None:
            return None
        if self._probe is None:
            self._probe = load_probe_set(
                self.hparams["probe_image"],
                self.hparams["probe_labels"],
                self.sensor,
                chip_size=self.hparams["probe_chip_size"],
            )
        return self._probe
