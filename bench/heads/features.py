"""What the frozen features hold, pretrained vs random init: statistics and linear probes.

``python -m bench.heads.features --backbone FILE --tasks aber,nc,chm`` prints, for each chip
task and both backbones (the file, and its architecture randomly initialised as in the heads
benchmark), per decoder layer:

* statistics of the cached features of the training pool (up to 200 chips): median per-channel
  standard deviation, largest / median, largest absolute channel mean, the top channel's and
  top five channels' share of the variance, the effective rank (exp of the entropy of the
  covariance spectrum) and the first principal component's share;
* a closed-form probe per pixel (features repeated over each token's pixels): softmax
  regression of the classes (mIoU) or ridge regression of the heights (R2) on the standardised
  ``[bands, layer features]``, fitted on the training pool (60,000 pixels at most) and scored on
  the selection chips (held-out training blocks), never the validation blocks; the same on the
  bands alone.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dinogeo._paths import shared_data_dir
from dinogeo.labels import IGNORE_INDEX
from dinogeo.trainers.canopy_height import CanopyHeightTask
from dinogeo.trainers.datamodule import LabeledChipDataModule
from dinogeo.trainers.feature_cache import CachedFeatureDataModule, FeatureCache
from dinogeo.trainers.land_cover import LandCoverTask

from . import baselines
from .common import TRAIN_STRIDE, finetune_config, for_sensor, linked, random_twin

TASKS: dict[str, tuple[str, type[LandCoverTask] | type[CanopyHeightTask]]] = {
    "aber": ("land_cover_aberystwyth", LandCoverTask),
    "nc": ("land_cover_nc_polygons", LandCoverTask),
    "chm": ("canopy_height_swiss", CanopyHeightTask),
}


def pools(task: str, backbone: str, shared: Path, work: Path) -> CachedFeatureDataModule:
    """The heads benchmark's cached training and selection pools of a task for ``backbone``."""
    config, cls = TASKS[task]
    model_args, data_args, _ = finetune_config(config, shared)
    data = {**data_args, "backbone": for_sensor(backbone, data_args, work), "select_fraction": 0.2}
    data.setdefault("train_stride", TRAIN_STRIDE)
    head = cls(**{**model_args, "features": 32, **linked(data)})
    cached = CachedFeatureDataModule(
        LabeledChipDataModule(**data), FeatureCache(head.model, work / "feature_cache"), log=None
    )
    cached.setup("fit")
    return cached


def statistics(maps: torch.Tensor) -> str:
    """One line of statistics of (N, D, h, w) features."""
    x = maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1]).double()
    std, mean = x.std(0), x.mean(0)
    share = (std**2).sort(descending=True).values / (std**2).sum()
    ev = torch.linalg.eigvalsh(torch.cov(x.T)).clamp(min=0).flip(0)
    p = ev / ev.sum()
    rank = float(torch.exp(-(p[p > 0] * p[p > 0].log()).sum()))
    return (
        f"std median {std.median():.3f}, max/median {std.max() / std.median():.1f}, "
        f"|mean| max {mean.abs().max():.2f}, top channel {share[0]:.2f}, top 5 "
        f"{share[:5].sum():.2f}, effective rank {rank:.1f}/{maps.shape[1]}, PC1 {p[0]:.2f}"
    )


def _pixels(
    samples: list[dict[str, Any]], layer: int | None, patch: int, limit: int | None
) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for s in samples:
        image, target = s["image"].numpy(), s["mask"].numpy().ravel()
        keep = np.isfinite(target) if target.dtype.kind == "f" else target != IGNORE_INDEX
        parts = [image.reshape(image.shape[0], -1)]
        if layer is not None:
            f = s["features"][layer].float().numpy().repeat(patch, 1).repeat(patch, 2)
            parts.append(f[:, : image.shape[1], : image.shape[2]].reshape(f.shape[0], -1))
        xs.append(np.concatenate(parts).T[keep])
        ys.append(target[keep])
    x, y = np.concatenate(xs), np.concatenate(ys)
    if limit is not None and len(x) > limit:
        pick = np.random.default_rng(0).choice(len(x), limit, replace=False)
        x, y = x[pick], y[pick]
    return x.astype(np.float64), y


def probe(cached: CachedFeatureDataModule, layer: int | None, patch: int) -> float:
    """Selection-set mIoU (classes) or R2 (heights) of a linear probe on [bands, layer]."""
    assert cached.train_pool is not None and cached.select_pool is not None
    card = cached.inner.task_card
    x, y = _pixels(cached.train_pool.samples, layer, patch, 60000)
    xs, ys = _pixels(cached.select_pool.samples, layer, patch, None)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    x, xs = (x - mu) / sd, (xs - mu) / sd
    if card.is_classification:
        fit = baselines.softmax_regression(x.astype(np.float32), y, card.num_outputs)
        scores = baselines.classify(fit, xs.astype(np.float32))
        return baselines.class_metrics(card, scores, ys)["miou"]
    coef = baselines.ridge(x, y, l2=1.0)
    pred = baselines.ridge_predict(coef, xs, card.valid_range)
    return baselines.height_metrics(card, pred, ys)["r2"]


def main(argv: list[str] | None = None) -> None:
    """Print the statistics and probes of every task and backbone."""
    p = argparse.ArgumentParser(prog="python -m bench.heads.features", description=__doc__)
    p.add_argument("--backbone", required=True, help="pretrained backbone file")
    p.add_argument("--tasks", default="aber,nc,chm")
    p.add_argument("--shared", default=str(shared_data_dir()))
    p.add_argument("--work", default="bench/_work/features")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    backbones = {"pretrained": args.backbone, "random init": random_twin(args.backbone, work)}
    for task in [t for t in args.tasks.split(",") if t]:
        for label, path in backbones.items():
            cached = pools(task, path, Path(args.shared), work)
            assert cached.train_pool is not None
            samples = cached.train_pool.samples[:200]
            feats = torch.stack([s["features"].float() for s in samples])  # (N, L, D, h, w)
            patch = int(samples[0]["image"].shape[-1]) // int(feats.shape[-1])
            print(f"{task}, {label}: bands only, probe {probe(cached, None, patch):.3f}")
            for i in range(feats.shape[1]):
                score = probe(cached, i, patch)
                print(f"  layer {i}: {statistics(feats[:, i])}; probe {score:.3f}", flush=True)


if __name__ == "__main__":
    main()
