"""Shared machinery of the heads benchmark: configs, backbones, cached features, fits, rows.

Every head is trained by the library's own trainers (``dinogeo.trainers.LandCoverTask``...,
their losses, class weights, bin prior and schedule) under Lightning, on the features of a
frozen backbone cached once per task and backbone
(:class:`dinogeo.trainers.feature_cache.CachedFeatureDataModule`) and shared by the seeds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from lightning.pytorch import LightningDataModule, Trainer, seed_everything
from rasterio.windows import Window

from dinogeo._paths import config_text
from dinogeo.data.imagery_spec import ImagerySpec
from dinogeo.data.sensors import load_sensor
from dinogeo.models import (
    WeightCard,
    adapt_backbone_file,
    create_backbone_from_card,
    load_backbone,
    save_backbone,
)
from dinogeo.trainers.base import DenseTask
from dinogeo.trainers.datamodule import LabeledChipDataModule
from dinogeo.trainers.feature_cache import CachedFeatureDataModule, FeatureCache
from dinogeo.trainers.imagery import ImageReader
from dinogeo.trainers.selection import BestOnSelection

PRETRAINED, RANDOM = "pretrained", "random init"
#: attribute of a trained head holding the step whose weights it kept (best on selection)
STEP = "selected_step"
#: training chips every 32 pixels (heads train on random 32-pixel crops of them): a third of the
#: configs' chip_size // 4 chips to cache, covering the same pixels
TRAIN_STRIDE = 32


@dataclass
class Settings:
    """What every task of one benchmark run shares."""

    shared: Path
    work: Path
    backbones: dict[str, str]  # label -> backbone file ("pretrained", "random init")
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    steps: int = 300
    batch_size: int = 8
    features: int = 32
    crop: int | None = 32
    #: share of the training chips (whole blocks) held out to pick the best step; 0: last step
    select_fraction: float = 0.2
    #: steps between two scorings of the selection set
    select_every: int = 25
    #: decay of the moving average of the head weights that selection scores and keeps; 0: none
    ema: float = 0.95
    #: land-cover and canopy heads with the linear probe of the features inside (``feature_linear``);
    #: None: as the task's config says
    feature_linear: bool | None = None
    started: float = field(default_factory=time.time)
    fits_done: int = 0
    fits_total: int = 1

    def progress(self, what: str) -> None:
        """Print one line with the elapsed time and an ETA over all head fits."""
        spent = time.time() - self.started
        eta = spent / max(1, self.fits_done) * (self.fits_total - self.fits_done)
        print(
            f"[{spent:6.0f} s] {what} ({self.fits_done}/{self.fits_total} fits, ETA {eta:.0f} s)",
            flush=True,
        )


def finetune_config(name: str, shared: Path) -> tuple[dict, dict, str]:
    """(model init_args, data init_args, model class path) of a shipped finetune config."""
    text = config_text(f"finetune/{name}", shared)
    cfg = yaml.safe_load(text)
    return (
        dict(cfg["model"]["init_args"]),
        dict(cfg["data"]["init_args"]),
        cfg["model"]["class_path"],
    )


def linked(data: dict) -> dict:
    """The arguments a task takes from its data module (as ``dinogeo fit`` links them)."""
    keys = ("backbone", "sensor", "bands", "scale", "offset")
    return {"task": data.get("task"), "imagery": ImagerySpec(**{k: data.get(k) for k in keys})}


def random_twin(path: str, out: Path, seed: int = 0) -> str:
    """The architecture and weight card of a backbone file, randomly initialised."""
    _, card = load_backbone(path)
    torch.manual_seed(seed)
    twin = create_backbone_from_card(card, initialise=True)
    data = card.to_dict()
    data.update(
        training_config={"init": "random", "seed": seed, "architecture_of": card.config_hash},
        config_hash="",
        source="random-init",
    )
    target = out / f"random-init_{Path(path).name}"
    save_backbone(target, twin, WeightCard.from_dict(data))
    return str(target)


def for_sensor(backbone: str, data_args: dict, work: Path) -> str:
    """The backbone file, or a copy adapted to the task's sensor when the bands differ."""
    _, card = load_backbone(backbone)
    spec = load_sensor(data_args["sensor"])
    if data_args.get("bands"):
        spec = spec.select(data_args["bands"])
    if [b.lower() for b in card.band_names] == [b.lower() for b in spec.band_names]:
        return backbone
    out = work / f"{Path(backbone).stem}_to_{spec.name}.safetensors"
    if not out.exists():
        adapt_backbone_file(backbone, spec, out)
    return str(out)


def fit_seeds(
    settings: Settings,
    name: str,
    label: str,
    task_cls: type[DenseTask],
    model_args: dict,
    datamodule: LightningDataModule,
    *,
    pool_size: int = 512,
) -> Iterator[tuple[int, DenseTask, CachedFeatureDataModule]]:
    """Train one head per seed on cached features; yields (seed, trained task, data module)."""
    cached: CachedFeatureDataModule | None = None
    for seed in settings.seeds:
        seed_everything(seed, verbose=False)
        task = task_cls(**model_args)
        if cached is None:
            cache = FeatureCache(task.model, settings.work / "feature_cache")
            cached = CachedFeatureDataModule(
                datamodule,
                cache,
                batch_size=settings.batch_size,
                steps_per_epoch=settings.steps,
                pool_size=pool_size,
                crop=settings.crop,
                log=None,
            )
            cached.setup("fit")  # draws its pool under its own seed, restoring torch's RNG
        select = (
            BestOnSelection(every=settings.select_every, ema=settings.ema)
            if settings.select_fraction
            else None
        )
        trainer = Trainer(
            max_steps=settings.steps,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            callbacks=[select] if select is not None else None,
        )
        start = time.time()
        trainer.fit(task, cached)
        task.eval()
        settings.fits_done += 1
        chosen = ""
        if select is not None:
            curve = " ".join(f"{step}:{score:.3f}" for step, score in select.history)
            chosen = f", selection {curve} -> step {select.best_step}"
        setattr(task, STEP, select.best_step if select is not None else settings.steps)
        settings.progress(
            f"{name}, {label}, seed {seed}: head trained in {time.time() - start:.0f} s{chosen}"
        )
        yield seed, task, cached


def fit_chip_heads(
    settings: Settings,
    title: str,
    task_cls: type[DenseTask],
    model_args: dict,
    data_args: dict,
    *,
    adapt: bool = True,
) -> Iterator[tuple[str, int, DenseTask, CachedFeatureDataModule]]:
    """Heads on labelled chips for every backbone and seed: (label, seed, task, data module).

    ``adapt``: carry the backbone over to the task's sensor when its bands differ.
    """
    for label, path in settings.backbones.items():
        backbone = for_sensor(path, data_args, settings.work) if adapt else path
        data = {**data_args, "backbone": backbone, "select_fraction": settings.select_fraction}
        data.setdefault("train_stride", TRAIN_STRIDE)
        dm = LabeledChipDataModule(**data)
        args = {**model_args, "features": settings.features, **linked(data)}
        if settings.feature_linear is not None:
            args["feature_linear"] = settings.feature_linear
        for seed, task, cached in fit_seeds(settings, title, label, task_cls, args, dm):
            yield label, seed, task, cached


def validate(task: DenseTask, datamodule: CachedFeatureDataModule) -> dict[str, float]:
    """The task's validation metrics (its own ``validation_step``) on the cached validation set."""
    trainer = Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.validate(task, datamodule=datamodule, verbose=False)
    return {
        k.removeprefix("val_"): float(v)
        for k, v in trainer.callback_metrics.items()
        if k.startswith("val_") and k != "val_loss"
    }


def _starts(length: int, chip: int) -> list[int]:
    if length <= chip:
        return [0]
    return [*range(0, length - chip, chip), length - chip]


def predict_tiled(
    task: DenseTask, cache: FeatureCache, *images: np.ndarray, chip: int = 64
) -> np.ndarray:
    """A trained task's raw output (logits or heights, (K, H, W)) on whole (C, H, W) images.

    The images are cut into ``chip``-pixel tiles (the last row and column shifted to end at the
    border), as the heads were trained; each tile's features come from the cache.
    """
    height, width = images[0].shape[-2:]
    out: np.ndarray | None = None
    for r in _starts(height, chip):
        for c in _starts(width, chip):
            tiles = [
                torch.from_numpy(np.ascontiguousarray(im[:, r : r + chip, c : c + chip]))
                for im in images
            ]
            feats: Any = [
                [layer[None] for layer in cache.features([t])[0].float().unbind(0)] for t in tiles
            ]
            feats = feats[0] if len(tiles) == 1 else tuple(feats)
            with torch.no_grad():
                pred = task(*(t[None] for t in tiles), features=feats)[0].numpy()
            if out is None:
                out = np.zeros((pred.shape[0], height, width), np.float32)
            out[:, r : r + chip, c : c + chip] = pred
    assert out is not None
    return out


def full(reader: ImageReader) -> tuple[np.ndarray, np.ndarray]:
    """A whole image (C, H, W) normalised for the backbone, and its validity mask."""
    return reader.read(Window(0, 0, reader.width, reader.height))


def pixels(image: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H * W, C)."""
    return image.reshape(image.shape[0], -1).T


def row(task: str, method: str, seed: int, metrics: dict[str, float], **extra: Any) -> dict:
    """One table row of one seed."""
    return {"task": task, "method": method, "seed": seed, **metrics, **extra}


def head_row(task: str, method: str, seed: int, head: DenseTask, metrics: dict[str, float]) -> dict:
    """One table row of a trained head, with the step its weights come from (``step``)."""
    return row(task, method, seed, metrics, step=float(getattr(head, STEP)))
