"""Train heads on cached frozen-backbone features: the backbone runs once per chip, not per step.

With a frozen backbone, a head's training chips go through the same backbone at every step and
every seed. :class:`FeatureCache` computes the decoder layers' features of a chip once and keeps
them in memory and, optionally, on disk (float16 ``.npy`` files keyed by a digest of the
backbone's weights and layers and of the chip's normalised pixels, so a cache never serves
features of another backbone or chip). :class:`CachedFeatureDataModule` wraps a data module
(:class:`~dinogeo.trainers.datamodule.LabeledChipDataModule`,
:class:`~dinogeo.trainers.synthetic_change.SyntheticChangeDataModule`, ...): it draws a fixed
pool of training samples (every training chip, or ``pool_size`` synthetic pairs), attaches
their features (``features``, or ``features1``/``features2`` for change pairs) and applies the
random flips/rotations to images, masks and feature maps together. The tasks
(:class:`~dinogeo.trainers.base.DenseTask` and subclasses) use the features a batch carries
instead of running the backbone, so training is the same head, loss and schedule, only faster.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler

from dinogeo.data.sample_types import LabeledSample
from dinogeo.errors import ConfigError
from dinogeo.models.heads import DenseModel

__all__ = ["CachedFeatureDataModule", "FeatureCache", "backbone_digest"]

IMAGE_KEYS = ("image", "image1", "image2")
FEATURE_KEYS = {"image": "features", "image1": "features1", "image2": "features2"}


def backbone_digest(model: DenseModel) -> str:
    """A short digest of the backbone's weights and the decoder layers it feeds."""
    h = hashlib.sha1(repr(list(model.layers)).encode())
    for name, tensor in sorted(model.backbone.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class FeatureCache:
    """The decoder layers' features of a frozen backbone, per chip, in memory and on disk.

    Args:
        model: the dense model whose (frozen) backbone and layers produce the features.
        directory: folder for float16 ``.npy`` files (a subfolder per backbone digest);
            None keeps the features in memory only.
        batch_size: chips per backbone forward pass when filling the cache.
    """

    def __init__(
        self, model: DenseModel, directory: str | Path | None = None, *, batch_size: int = 16
    ) -> None:
        if not model.backbone_frozen:
            raise ConfigError(
                "features can only be cached for a frozen backbone: set unfreeze_last_blocks: 0"
            )
        self.model = model
        self.digest = backbone_digest(model)
        self.directory = Path(directory) / self.digest if directory is not None else None
        self.batch_size = batch_size
        self.computed = 0
        self.loaded = 0

    @staticmethod
    def key(image: Tensor) -> str:
        """Digest of a chip's normalised pixels (C, H, W)."""
        array = image.detach().cpu().float().contiguous().numpy()
        h = hashlib.sha1(repr(array.shape).encode())
        h.update(array.tobytes())
        return h.hexdigest()

    def _load(self, key: str) -> Tensor | None:
        if self.directory is None:
            return None
        path = self.directory / f"{key}.npy"
        if not path.exists():
            return None
        self.loaded += 1
        return torch.from_numpy(np.load(path))

    def _store(self, key: str, feats: Tensor) -> None:
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f"{key}.tmp.npy"
        np.save(tmp, feats.numpy())
        tmp.replace(self.directory / f"{key}.npy")

    def features(
        self, images: Sequence[Tensor], *, progress: Callable[[int, int], None] | None = None
    ) -> list[Tensor]:
        """Features of each chip: a float16 (L, D, h, w) tensor per (C, H, W) image.

        Args:
            images: normalised chips of one size, in the backbone's band order.
            progress: called with (done, total) after each backbone batch.
        """
        keys = [self.key(im) for im in images]
        out: list[Tensor | None] = [self._load(k) for k in keys]
        missing = [i for i, f in enumerate(out) if f is None]
        for start in range(0, len(missing), self.batch_size):
            index = missing[start : start + self.batch_size]
            batch = torch.stack([images[i] for i in index]).float()
            padded, _, _ = self.model._pad(batch)
            with torch.no_grad():
                layers = self.model.encode(padded)
            stacked = torch.stack(layers, dim=1).to(torch.float16)
            for j, i in enumerate(index):
                feats = stacked[j].clone()
                self._store(keys[i], feats)
                out[i] = feats
            self.computed += len(index)
            if progress is not None:
                progress(start + len(index), len(missing))
        return [f for f in out if f is not None]


def _d4(array: Tensor, k: int, flip: bool) -> Tensor:
    out = torch.rot90(array, k, dims=(-2, -1))
    return out.flip(-1) if flip else out


def _crop(sample: dict[str, Tensor], size: int) -> dict[str, Tensor]:
    """A random ``size``-pixel window of a sample, aligned to the patch grid of its features."""
    key = next(k for k in FEATURE_KEYS if k in sample)
    height, width = sample[key].shape[-2:]
    grid = sample[FEATURE_KEYS[key]].shape[-1]
    patch = width // grid
    if size >= min(height, width) or size % patch:
        return sample
    r = int(torch.randint((height - size) // patch + 1, ())) * patch
    c = int(torch.randint((width - size) // patch + 1, ())) * patch
    out = {}
    for k, v in sample.items():
        if k in FEATURE_KEYS.values():
            out[k] = v[..., r // patch : (r + size) // patch, c // patch : (c + size) // patch]
        else:
            out[k] = v[..., r : r + size, c : c + size]
    return out


class _CachedSamples(Dataset[LabeledSample]):
    """Samples with their features; random crops and flips/rotations of all maps alike."""

    def __init__(
        self, samples: list[dict[str, Tensor]], *, augment: bool, crop: int | None = None
    ) -> None:
        self.samples = samples
        self.augment = augment
        self.crop = crop

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> LabeledSample:
        sample = self.samples[index]
        if self.crop:
            sample = _crop(sample, self.crop)
        out: dict[str, Any] = {}
        k, flip = 0, False
        if self.augment:  # torch's generator: reproducible under seed_everything
            k, flip = int(torch.randint(4, ())), bool(torch.randint(2, ()))
        for key, value in sample.items():
            if key in FEATURE_KEYS.values():
                out[key] = list(_d4(value.float(), k, flip).unbind(0))
            else:
                out[key] = _d4(value, k, flip).contiguous()
        return cast(LabeledSample, out)


class CachedFeatureDataModule(LightningDataModule):
    """A data module whose batches carry the frozen backbone's features of their chips.

    Args:
        datamodule: the wrapped data module (its ``train_set``/``val_set`` after ``setup``).
        cache: the feature cache of the model being trained.
        batch_size: training batch size.
        steps_per_epoch: training batches per epoch (drawn with replacement from the pool).
        pool_size: most training samples drawn once into the pool (every chip of a chip
            dataset; ``pool_size`` pairs of a synthetic one, whose length is its epoch size).
        pool_seed: torch seed for drawing the pool (synthetic pairs), fixed so that runs with
            different seeds share one pool and one cache.
        augment: random flips and 90-degree rotations of images, masks and features together.
        crop: train on random windows of this many pixels cut from the cached chips (aligned to
            the patch grid; the features keep the whole chip's context), which makes each step
            cheaper for a head working at pixel resolution; None: whole chips.
        log: progress printer (None: silent).
    """

    def __init__(
        self,
        datamodule: LightningDataModule,
        cache: FeatureCache,
        *,
        batch_size: int = 8,
        steps_per_epoch: int = 100,
        pool_size: int = 512,
        pool_seed: int = 0,
        augment: bool = True,
        crop: int | None = None,
        log: Callable[[str], None] | None = print,
    ) -> None:
        super().__init__()
        self.inner: Any = datamodule  # LabeledChipDataModule, SyntheticChangeDataModule...
        self.cache = cache
        self.batch_size = batch_size
        self.steps_per_epoch = steps_per_epoch
        self.pool_size = pool_size
        self.pool_seed = pool_seed
        self.augment = augment
        self.crop = crop
        self.log = log
        self.train_pool: _CachedSamples | None = None
        self.val_pool: _CachedSamples | None = None
        self.select_pool: _CachedSamples | None = None

    # the wrapped module's data description, for the tasks' fit-start hooks and bundles
    @property
    def train_set(self) -> Any:
        """The wrapped module's training set (chip list and labels, e.g. for a bin prior)."""
        return self.inner.train_set

    def class_frequencies(self, max_chips: int = 64) -> np.ndarray:
        """Labelled pixels per class of the wrapped module's training chips."""
        return np.asarray(self.inner.class_frequencies(max_chips))

    def describe(self) -> dict[str, Any]:
        """The wrapped module's description plus the cache's."""
        inner = getattr(self.inner, "describe", None)
        out: dict[str, Any] = dict(inner()) if inner is not None else {}
        out["feature_cache"] = {"backbone_digest": self.cache.digest, "pool": self.pool_size}
        return out

    def _samples(
        self, dataset: Dataset[LabeledSample], count: int, what: str
    ) -> list[dict[str, Tensor]]:
        state = torch.random.get_rng_state()
        torch.manual_seed(self.pool_seed)
        try:
            samples = [cast(dict[str, Tensor], dict(dataset[i])) for i in range(count)]
        finally:
            torch.random.set_rng_state(state)
        start = time.time()

        def progress(done: int, total: int) -> None:
            if self.log is not None and total:
                spent = time.time() - start
                eta = spent / done * (total - done)
                self.log(f"  {what} features: {done}/{total} chips, ETA {eta:.0f} s")

        for image_key, feature_key in FEATURE_KEYS.items():
            if image_key not in samples[0]:
                continue
            feats = self.cache.features([s[image_key] for s in samples], progress=progress)
            for s, f in zip(samples, feats, strict=True):
                s[feature_key] = f
        return samples

    def setup(self, stage: str | None = None) -> None:
        """Set the wrapped module up and fill the training, validation and selection pools."""
        if self.train_pool is not None:
            return
        self.inner.setup("fit")
        train, val = self.inner.train_set, self.inner.val_set
        if hasattr(train, "augment"):
            train.augment = False  # augmentation happens here, on images and features together
        count = min(len(train), self.pool_size)
        self.train_pool = _CachedSamples(
            self._samples(train, count, "training"), augment=self.augment, crop=self.crop
        )
        self.val_pool = _CachedSamples(self._samples(val, len(val), "validation"), augment=False)
        select = getattr(self.inner, "select_set", None)
        if select is not None and len(select):
            self.select_pool = _CachedSamples(
                self._samples(select, len(select), "selection"), augment=False
            )

    def train_dataloader(self) -> DataLoader[LabeledSample]:
        """Random training samples with replacement, ``steps_per_epoch`` batches."""
        assert self.train_pool is not None, "call setup() first"
        sampler = RandomSampler(
            self.train_pool, replacement=True, num_samples=self.batch_size * self.steps_per_epoch
        )
        return DataLoader(self.train_pool, batch_size=self.batch_size, sampler=sampler)

    def val_dataloader(self) -> DataLoader[LabeledSample]:
        """The validation samples in order."""
        assert self.val_pool is not None, "call setup() first"
        return DataLoader(self.val_pool, batch_size=self.batch_size)

    def select_dataloader(self) -> DataLoader[LabeledSample] | None:
        """The selection samples (the wrapped module's ``select_set``) in order, or None."""
        if self.select_pool is None:
            return None
        return DataLoader(self.select_pool, batch_size=self.batch_size)
