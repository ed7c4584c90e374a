"""Harness: the full Lightning training step of :class:`SSLTask` on 1 process or 2 gloo ranks.

The same global batches of real Sentinel-2 multi-crops feed both: one process takes the whole
batch, each of two ranks its half (crop-major split, iBOT weights recomputed per rank as the data
module would). The task has no per-rank randomness (no drop path, no RoPE jitter), so the 2-rank
run must reproduce the 1-process run: losses, gradient norms and, after the optimiser, the EMA
and the Gram teacher, every parameter. Used by tests/ssl/test_fsdp.py and test_ddp_step.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy, Strategy
from torch.utils.data import DataLoader

from dinogeo.ssl.datamodule import SSLDataModule
from dinogeo.ssl.fsdp import SSLFSDPStrategy, full_state_dict
from dinogeo.ssl.grad_clip import local_shard
from dinogeo.ssl.module import SSLTask
from dinogeo.ssl.task_config import (
    DINOHeadConfig,
    GramConfig,
    InitConfig,
    LossConfig,
    OptimConfig,
)

S2_10M = "sentinel2-l1c-virginia-sattestdata/S2_18SVG_20160112_10m_B02-B03-B04-B08_crop.tif"
BANDS = ["B02", "B03", "B04", "B08"]
GLOBAL_BATCH = 8
STEPS = 4
WORLD = 2
HEAD = DINOHeadConfig(out_dim=32, hidden_dim=32, bottleneck_dim=16)


def global_batches(shared: Path, steps: int = STEPS) -> list[dict[str, Any]]:
    """``steps`` multi-crop batches of ``GLOBAL_BATCH`` real chips (with 64-px Gram crops)."""
    dm = SSLDataModule(
        sources=[str(shared / S2_10M)], sensor="sentinel2_l1c", bands=BANDS,
        samples_per_epoch=GLOBAL_BATCH * steps, batch_size=GLOBAL_BATCH, num_workers=0,
        global_size=32, local_size=16, n_local=2, gram_size=64, chip_size=64, seed=0,
    )  # fmt: skip
    dm.setup("fit")
    raw = zip(range(steps), dm.train_dataloader(), strict=False)
    return [dict(dm.on_after_batch_transfer(b, i)) for i, b in raw]  # multi-crops and masks


def rank_share(batch: dict[str, Any], rank: int, world: int) -> dict[str, Any]:
    """Rank ``rank``'s part of a crop-major batch, as its own data loader would collate it."""
    b = batch["global_crops"].shape[0] // 2
    part = slice(rank * b // world, (rank + 1) * b // world)

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(0, (x.shape[0] // b, b))[:, part].flatten(0, 1)

    masks = split(batch["masks"])
    per_image = masks.sum(dim=-1, keepdim=True).clamp(min=1).float()
    return {
        "global_crops": split(batch["global_crops"]),
        "local_crops": split(batch["local_crops"]),
        "gram_crops": split(batch["gram_crops"]),
        "masks": masks,
        "mask_indices": masks.flatten().nonzero().flatten(),
        "masks_weight": (1.0 / per_image).expand_as(masks)[masks],
        "n_masked_patches": int(masks.sum()),
        "n_masked_images": int(masks.shape[0]),
    }


class FixedBatches(pl.LightningDataModule):
    """This rank's share of fixed global batches; its state is the number of batches consumed."""

    def __init__(self, batches: list[dict[str, Any]], world: int) -> None:
        super().__init__()
        self.batches = batches
        self.world = world
        self.batch_size = GLOBAL_BATCH // world  # per rank, read for the lr scaling
        self.start = 0

    def train_dataloader(self) -> DataLoader:
        rank = self.trainer.global_rank
        shares = [rank_share(b, rank, self.world) for b in self.batches[self.start :]]
        return DataLoader(shares, batch_size=None, shuffle=False)  # type: ignore[arg-type]

    def state_dict(self) -> dict[str, Any]:
        return {"start": self.trainer.global_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.start = int(state["start"])


class Record(Callback):
    """Per step: the loss averaged over ranks and this rank's logged gradient norms."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.norms: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"].detach().clone()
        if dist.is_initialized():
            dist.all_reduce(loss)
            loss /= dist.get_world_size()
        self.losses.append(float(loss))
        metrics = trainer.callback_metrics
        self.norms.append({k: float(v) for k, v in metrics.items() if k.startswith("grad_norm/")})


def make_task(init: InitConfig | None = None) -> SSLTask:
    """Tiny ViT, both heads, distributed KoLeo over the global batch, Gram anchoring from step 0,
    a clipping threshold that every step exceeds (so the global norm decides the update);
    random weights unless ``init`` names a start checkpoint."""
    return SSLTask(
        arch="vit_test_patch16_dinov3", in_chans=len(BANDS), band_names=BANDS, img_size=32, init=init,
        drop_path_rate=0.0, rope_rescale_coords=None, backbone_kwargs={"init_values": 0.1},
        dino_head=HEAD, ibot_head=HEAD,
        loss=LossConfig(koleo_group_size=GLOBAL_BATCH, teacher_temp_warmup_steps=2),
        optim=OptimConfig(lr=2e-3, warmup_steps=1, schedule_steps=STEPS, clip_grad=0.05,
                          momentum=0.9, momentum_end=0.95),
        gram=GramConfig(enabled=True, from_ema_at_start=True, first_update=3, update_frequency=1,
                        max_updates=1),
        autocast="fp32", seed=0,
    )  # fmt: skip


def make_strategy(kind: str, sharded_checkpoint: bool = True) -> Strategy:
    if kind == "single":
        return SingleDeviceStrategy(torch.device("cpu"))
    if kind == "ddp":
        return DDPStrategy(process_group_backend="gloo")
    return SSLFSDPStrategy(
        process_group_backend="gloo", save_distributed_checkpoint=sharded_checkpoint
    )


def fit(
    kind: str,
    batches: list[dict[str, Any]],
    root: Path,
    max_steps: int,
    *,
    ckpt_every: int = 0,
    ckpt_path: str | None = None,
    init: InitConfig | None = None,
) -> dict[str, Any]:
    """Train ``max_steps`` steps; return the losses, norms and (rank 0) the full state dict."""
    world = 1 if kind == "single" else WORLD
    torch.manual_seed(0)  # identical initial weights on every rank and in the single process
    task = make_task(init)
    record = Record()
    callbacks: list[Callback] = [record]
    if ckpt_every:
        callbacks.append(
            ModelCheckpoint(
                dirpath=root, filename="{step}", save_top_k=-1, every_n_train_steps=ckpt_every
            )  # fmt: skip
        )
    trainer = pl.Trainer(
        accelerator="cpu", devices=world, strategy=make_strategy(kind), max_steps=max_steps,
        logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=bool(ckpt_every), callbacks=callbacks, use_distributed_sampler=False,
        default_root_dir=root, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(task, datamodule=FixedBatches(batches, world), ckpt_path=ckpt_path)
    state = {k: v.detach().clone() for k, v in full_state_dict(task).items()}
    params = list(task.parameters())
    numel = (sum(local_shard(p).numel() for p in params), sum(p.numel() for p in params))
    return {
        "losses": record.losses,
        "norms": record.norms,
        "state": state,
        "numel": numel,
        "global_batch": task.global_batch_size(),
        "lr": task._schedule("lr", 1),
    }


def join_ranks(rank: int, port: int) -> None:
    """Make this process rank ``rank`` of ``WORLD`` gloo ranks on this host (Lightning reads the
    environment), one thread each."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD),
        LOCAL_RANK=str(rank), NODE_RANK="0", GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1",
    )  # fmt: skip
    torch.set_num_threads(1)


def worker(rank: int, port: int, batches: list[dict[str, Any]], out: str, runs: list) -> None:
    """One of ``WORLD`` processes: Lightning reads its rank from the environment."""
    join_ranks(rank, port)
    results = {}
    for name, kind, kwargs in runs:
        results[name] = fit(kind, batches, Path(out) / name, **kwargs)
    torch.save(results, Path(out) / f"rank{rank}.pt")
