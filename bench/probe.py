"""Frozen-feature land-cover probe of a small ViT pretrained with dinogeo on the shared imagery.

1. Pretrain (DINOv3 recipe: DINO + iBOT + KoLeo, Sinkhorn-Knopp, EMA teacher) a small ViT with
   patch size 2 on the Sentinel-2 scenes of ../shared/data for a fixed CPU time or step budget:
   the Aberystwyth 10-band image (its labels are never used here) and the 21 Rufiji dates.
   Patch 2 at 10-20 m keeps a token at 20-40 m, fine enough for a per-pixel probe (with patch 4
   the 160 values of a 10-band patch no longer fit the 96-wide tokens and every frozen backbone,
   pretrained or not, fell below the per-pixel baseline).
2. Probe on the Aberystwyth scene (4 classes: forest, grass, urban, water) with a spatial split:
   128-pixel blocks in a checkerboard, "black" blocks train and "white" blocks test. Features
   are computed tile by tile (one tile = one block, so no test pixel feeds a training feature)
   from the last 4 blocks (concatenated, as DINOv2's "linear4" probe) and brought to pixel
   resolution by shift-and-stitch (the tile is run once per offset within a
   patch, so every pixel gets the token of the patch centred on it); a multinomial logistic
   regression is fitted on training pixels.
3. Print the test mIoU of: the pretrained teacher backbone, the same backbone randomly
   initialised (the very weights pretraining started from, plus two other seeds to show the
   spread of random features), and a per-pixel linear classifier on the 10 raw (normalised) bands.

Usage: python bench/probe.py [--minutes 15 | --steps N] [--threads 1] [--out runs/bench_probe]
"""

from __future__ import annotations

import argparse
import copy
import glob
import logging
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import rasterio
import torch
import torch.nn.functional as F
from rasterio.windows import Window

from dinogeo._paths import shared_data_dir
from dinogeo.data.opener import open_source
from dinogeo.data.sensors import load_sensor
from dinogeo.models.backbone import Backbone
from dinogeo.ssl.augment import Photometric
from dinogeo.ssl.datamodule import SSLDataModule
from dinogeo.ssl.module import SSLTask
from dinogeo.ssl.module_step import ssl_losses
from dinogeo.ssl.task_config import DINOHeadConfig, GramConfig, LossConfig, OptimConfig

BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]
ABER = "sentinel2-landcover-aberystwyth-rsgislib/sen2_20210527_aber_10band_crop.tif"
LABELS = "sentinel2-landcover-aberystwyth-rsgislib/sen2_20210527_aber_cls_crop.tif"
RUFIJI = "sentinel2-timeseries-rufiji-rsgislib/SEN2_*_T37MEM_20m_10band.tif"
CLASSES = ["forest", "grass", "urban", "water"]
BLOCK = 128
PATCH = 2
LAYERS = 4  # the probe concatenates the last 4 blocks' normalised patch tokens (DINOv2 "linear4")
BACKBONE = {"patch_size": PATCH, "embed_dim": 96, "depth": 4, "num_heads": 3, "init_values": 0.1}


def pretraining_sources(shared: Path) -> list[str]:
    """The Aberystwyth image (no labels) and the Rufiji dates that are mostly cloud-free."""
    sensor = load_sensor("sentinel2_l2a").select(BANDS)
    rufiji = [
        p
        for p in sorted(glob.glob(str(shared / RUFIJI)))
        if open_source(p, sensor=sensor).valid_fraction() >= 0.9
    ]
    return [str(shared / ABER), *rufiji]


def make_datamodule(
    shared: Path,
    batch_size: int,
    sources: list[str],
    num_workers: int = 0,
    photometric: Photometric | None = None,
) -> SSLDataModule:
    return SSLDataModule(
        sources=sources,
        sensor="sentinel2_l2a",
        bands=BANDS,
        scale=1e-3,  # the rsgislib exports are surface reflectance x1000
        offset=0.0,
        chip_size=48,
        samples_per_epoch=20_000,
        min_valid_fraction=0.5,
        batch_size=batch_size,
        num_workers=num_workers,
        global_size=32,
        local_size=16,
        n_local=4,
        patch_size=PATCH,
        seed=0,
        photometric=photometric,
    )


#: teacher temperature warm-up (start, end): sharper than the recipe's 0.04 -> 0.07, which left the
#: DINO and iBOT targets uniform for hundreds of steps (docs/pretraining.md, "Short runs")
TEACHER_TEMP = (0.01, 0.02)


def constant_optim(*, warmup_steps: int, schedule_steps: int, **extra: float) -> OptimConfig:
    """The probe's (and distillation's) v2-style constant schedules: lr 4e-3 after a linear
    warm-up, weight decay 0.04, EMA momentum 0.98 (the run length is a budget, not a schedule)."""
    return OptimConfig(
        lr=4e-3,
        lr_schedule="constant",
        warmup_steps=warmup_steps,
        weight_decay=0.04,
        weight_decay_end=0.04,
        momentum=0.98,
        momentum_end=0.98,
        schedule_steps=schedule_steps,
        **extra,  # type: ignore[arg-type]
    )


def make_task(steps: int = 100_000, temp_warmup_steps: int = 100) -> SSLTask:
    """The small SSL task; ``temp_warmup_steps`` is the teacher-temperature warm-up."""
    head = DINOHeadConfig(out_dim=512, hidden_dim=256, bottleneck_dim=64)
    return SSLTask(
        arch="vit_test_patch16_dinov3",
        in_chans=len(BANDS),
        band_names=BANDS,
        img_size=32,
        backbone_kwargs=dict(BACKBONE),
        dino_head=head,
        ibot_head=head,
        # v2-style constant schedules: the run length is set by the time budget, not a step count
        loss=LossConfig(
            teacher_temp_warmup=TEACHER_TEMP[0],
            teacher_temp=TEACHER_TEMP[1],
            teacher_temp_warmup_steps=temp_warmup_steps,
        ),
        optim=constant_optim(warmup_steps=50, schedule_steps=steps, freeze_last_layer_steps=10),
        gram=GramConfig(enabled=False),
        seed=0,
    )


def time_one_step(dm: SSLDataModule) -> float:
    """Seconds per training step (forward + backward of the full loss) on this machine."""
    task = make_task(100)
    dm.setup("fit")
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    opt = torch.optim.AdamW(task.parameters(), lr=1e-4)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        out = ssl_losses(
            task.student,
            task.teacher,
            batch,
            dino_loss=task.dino_loss,
            ibot_loss=task.ibot_loss,
            loss_cfg=task.loss_cfg,
            teacher_temp=0.04,
        )
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))


@torch.no_grad()
def dense_features(backbone: Backbone, image: torch.Tensor) -> torch.Tensor:
    """Per-pixel features ``(H, W, LAYERS*D)`` by shift-and-stitch, one BLOCK-pixel tile at a time.

    Each tile is reflect-padded by itself (no pixel of a neighbouring block is seen) and run
    ``p*p`` times, shifted by every offset within a patch, so that every pixel gets the token
    of the patch centred on it.
    """
    backbone.eval()
    p = backbone.patch_size
    c = p // 2
    _, height, width = image.shape
    out = torch.zeros(height, width, LAYERS * backbone.embed_dim)
    shifts = [(sy, sx) for sy in range(p) for sx in range(p)]
    for row in range(0, height, BLOCK):
        for col in range(0, width, BLOCK):
            tile = image[:, row : row + BLOCK, col : col + BLOCK].unsqueeze(0)
            padded = F.pad(tile, (p, p, p, p), mode="reflect")
            views = torch.cat(
                [
                    padded[:, :, p - c + sy : p - c + sy + BLOCK, p - c + sx : p - c + sx + BLOCK]
                    for sy, sx in shifts
                ]
            )
            maps = backbone.get_intermediate_layers(views, LAYERS)  # each (S, D, g, g)
            tokens = torch.cat(maps, dim=1).permute(0, 2, 3, 1)  # (S, g, g, n*D)
            for k, (sy, sx) in enumerate(shifts):
                out[row + sy : row + BLOCK : p, col + sx : col + BLOCK : p] = tokens[k]
    return out


def checkerboard(height: int, width: int) -> np.ndarray:
    rows = (np.arange(height) // BLOCK)[:, None]
    cols = (np.arange(width) // BLOCK)[None, :]
    return (rows + cols) % 2 == 0  # True = training block


def linear_probe_miou(
    features: torch.Tensor,
    labels: np.ndarray,
    train_mask: np.ndarray,
    seed: int = 0,
    max_train: int | None = None,
) -> float:
    """Multinomial logistic regression on (all, or ``max_train``) training pixels; test mIoU."""
    feats = features.reshape(-1, features.shape[-1]).float()
    y = torch.from_numpy(labels.reshape(-1).astype(np.int64)) - 1  # classes 1..4 -> 0..3
    labelled = torch.from_numpy(labels.reshape(-1) > 0)
    train = labelled & torch.from_numpy(train_mask.reshape(-1))
    test = labelled & ~torch.from_numpy(train_mask.reshape(-1))
    gen = torch.Generator().manual_seed(seed)
    idx = train.nonzero().flatten()
    idx = idx[torch.randperm(idx.numel(), generator=gen)[:max_train]]
    mean, std = feats[idx].mean(0), feats[idx].std(0).clamp_min(1e-6)
    x_train = (feats[idx] - mean) / std
    y_train = y[idx]
    n_classes = len(CLASSES)
    weight = torch.zeros(feats.shape[1], n_classes, requires_grad=True)
    bias = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = x_train @ weight + bias
        loss = F.cross_entropy(logits, y_train) + 1e-4 * weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        pred = (((feats[test] - mean) / std) @ weight + bias).argmax(1)
    truth = y[test]
    ious = []
    for c in range(n_classes):
        inter = ((pred == c) & (truth == c)).sum().item()
        union = ((pred == c) | (truth == c)).sum().item()
        if (truth == c).any():
            ious.append(inter / max(union, 1))
    return float(np.mean(ious))


def cpu_trainer(out: Path, *, minutes: float | None, steps: int | None) -> pl.Trainer:
    """The CPU Lightning trainer of the probe's (and distillation's) runs, logging to ``out``/csv.

    The run stops after ``steps`` optimiser steps when given (a budget that does not depend on
    the machine's load), else after ``minutes`` of wall time.
    """
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps if steps is not None else 100_000,
        max_time=None if steps is not None or minutes is None else {"minutes": minutes},
        logger=pl.loggers.CSVLogger(str(out), name="csv"),
        log_every_n_steps=10,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
    )


def pretrain(
    args: argparse.Namespace, dm: SSLDataModule, sources: list[str]
) -> tuple[SSLTask, Backbone]:
    """Pretrain for the step or time budget; return the task and the teacher's initial weights."""
    if args.steps is not None:
        expected = args.steps
        budget = f"{expected} steps"
    else:
        step_time = time_one_step(dm)
        expected = int(args.minutes * 60 / step_time)
        budget = f"{args.minutes:g} min (~{step_time:.2f} s/step now, ~{expected} steps)"
    # the recipe warms the teacher temperature up over 30 of its 100 epochs: keep that proportion
    # of the run the budget allows
    warmup = max(100, int(0.3 * expected))
    print(
        f"pretraining for {budget} on CPU (teacher temperature {TEACHER_TEMP[0]} -> "
        f"{TEACHER_TEMP[1]} over {warmup} steps)"
    )
    task = make_task(100_000, temp_warmup_steps=warmup)
    initial = copy.deepcopy(task.teacher_backbone)
    trainer = cpu_trainer(args.out, minutes=args.minutes, steps=args.steps)
    start = time.perf_counter()
    photometric = Photometric.spectral() if args.photometric == "spectral" else Photometric()
    trainer.fit(
        task,
        make_datamodule(
            shared_data_dir(), args.batch_size, sources, args.loader_workers, photometric
        ),
    )
    print(f"pretrained {trainer.global_step} steps in {(time.perf_counter() - start) / 60:.1f} min")
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(task.teacher_backbone.state_dict(), args.out / "teacher_backbone.pt")
    card_file = task.export_backbone(args.out / "backbone.safetensors")
    print(
        f"teacher backbone with its weight card: {card_file} (usable as bench/heads.py --backbone)"
    )
    return task, initial


def random_backbone(seed: int) -> Backbone:
    """The probe's architecture, randomly initialised from ``seed``."""
    torch.manual_seed(seed)
    return make_task(100).teacher_backbone


def run_probe(task: SSLTask, initial: Backbone | None, dm: SSLDataModule) -> None:
    shared = shared_data_dir()
    source = open_source(shared / ABER, sensor=dm.sensor)
    image_np, _ = source.read_normalized(Window(0, 0, source.width, source.height))
    image = torch.from_numpy(image_np).float()
    with rasterio.open(shared / LABELS) as ds:
        labels = ds.read(1)
    train_mask = checkerboard(*labels.shape)

    pretrained = task.teacher_backbone
    randoms = {f"seed {seed}": random_backbone(seed) for seed in (1, 2)}
    if initial is not None:
        randoms = {"the pretraining's initial weights": initial, **randoms}
    results = {
        "dinogeo pretrained (frozen)": linear_probe_miou(
            dense_features(pretrained, image), labels, train_mask
        ),
    }
    for name, backbone in randoms.items():
        results[f"same ViT, random init, {name}"] = linear_probe_miou(
            dense_features(backbone, image), labels, train_mask
        )
    results["linear on raw bands (per pixel)"] = linear_probe_miou(
        image.permute(1, 2, 0).contiguous(), labels, train_mask
    )
    print("\nAberystwyth land cover, checkerboard 128-px blocks, test mIoU (4 classes)")
    for name, value in results.items():
        print(f"  {name:<58s} {value:.3f}")
    best_baseline = max(v for k, v in results.items() if not k.startswith("dinogeo"))
    print(
        f"  pretrained - best baseline: {results['dinogeo pretrained (frozen)'] - best_baseline:+.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="CPU pretraining budget")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="pretrain for this many steps instead of --minutes (a budget independent of load)",
    )
    parser.add_argument(
        "--weights", type=Path, default=None, help="skip pretraining: probe these teacher weights"
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--photometric",
        choices=("recipe", "spectral"),
        default="spectral",
        help="photometric distortions while pretraining: 'spectral' (no band jitter, no band "
        "mean: the spectrum is left as it is) or the recipe's",
    )
    parser.add_argument(
        "--loader-workers", type=int, default=1, help="DataLoader workers while pretraining"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench_probe"))
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: the tiny ops are latency-bound; more threads oversubscribe a "
        "shared 2-core machine)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.minutes > 20:
        parser.error("--minutes is capped at 20 (the benchmark's CPU budget)")
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be at least 1")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    torch.manual_seed(0)
    shared = shared_data_dir()

    sources = pretraining_sources(shared)
    print(f"pretraining on {len(sources)} Sentinel-2 images (Aberystwyth + Rufiji dates)")
    dm = make_datamodule(shared, args.batch_size, sources)
    initial: Backbone | None = None
    if args.weights is not None:
        task = make_task(100)
        task.teacher_backbone.load_state_dict(torch.load(args.weights, weights_only=True))
    else:
        task, initial = pretrain(args, dm, sources)
    run_probe(task, initial, dm)


if __name__ == "__main__":
    main()
