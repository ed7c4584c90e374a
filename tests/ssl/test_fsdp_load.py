"""Under FSDP the start checkpoint is read on rank 0 only and broadcast into the shards.

Two gloo ranks run Lightning's FSDP setup of an :class:`SSLTask` with ``init.load_on_rank0``
(configs/ssl/fsdp.yaml) from an official-layout checkpoint with the SAT ViT-L ``local_cls_norm``,
up to the first step. Each rank runs in its own folder and the path is relative: the file exists
only in rank 0's, as on a cluster where only the first node has it, and an audit hook records
every ``open`` of it. The sharded student, EMA teacher and Gram teacher must equal, gathered and
shard by shard, the weights a single process loads without FSDP.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import torch.multiprocessing as mp
from lightning.pytorch.callbacks import Callback
from torch.distributed.tensor import DTensor
from torch.utils.data import DataLoader

from dinogeo.errors import CheckpointError
from dinogeo.ssl.fsdp import SSLFSDPStrategy, full_state_dict
from dinogeo.ssl.module import SSLTask
from dinogeo.ssl.task_config import DINOHeadConfig, GramConfig, InitConfig
from tests.ssl import lightning_ranks as lr
from tests.ssl.test_distributed_step import assert_same_training

ARCH = "vit_test_patch16_dinov3"
BANDS = ["B04", "B03", "B02", "B08"]
HEAD = DINOHeadConfig(out_dim=16, hidden_dim=16, bottleneck_dim=8)
NAME = "start.pth"
WORLD = 2
BACKBONES = ("student.backbone.", "teacher.backbone.", "gram_teacher.backbone.")


def make_task(path: str, load_on_rank0: bool, arch: str = ARCH) -> SSLTask:
    return SSLTask(
        arch=arch, in_chans=len(BANDS), band_names=BANDS, img_size=32, dino_head=HEAD,
        ibot_head=HEAD, init=InitConfig(official_checkpoint=path, load_on_rank0=load_on_rank0),
        gram=GramConfig(enabled=True, from_initial=True, first_update=-1, max_updates=0),
    )  # fmt: skip


class StopAtStart(Callback):
    """At ``on_fit_start`` (the model set up, no step taken): record the weights, then stop."""

    def __init__(self) -> None:
        self.record: dict[str, Any] = {}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        params = dict(pl_module.named_parameters())
        self.record = {
            "full": {k: v.clone() for k, v in full_state_dict(pl_module).items()},
            "local": {k: v.to_local().clone() for k, v in params.items() if isinstance(v, DTensor)},
            "plain": sorted(k for k, v in params.items() if not isinstance(v, DTensor)),
            "meta": sorted(k for k, v in params.items() if v.is_meta),
        }
        trainer.should_stop = True


def worker(rank: int, port: int, root: str, arch: str) -> None:
    """One gloo rank in its own folder; only rank 0's folder holds ``start.pth``."""
    lr.join_ranks(rank, port)
    os.chdir(Path(root) / f"node{rank}")
    opened: list[str] = []

    def audit(event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and isinstance(args[0], str | bytes | Path) and NAME in str(args[0]):
            opened.append(str(args[0]))

    sys.addaudithook(audit)
    torch.manual_seed(0)  # the same random heads on every rank
    task = make_task(NAME, load_on_rank0=True, arch=arch)
    meta_before = all(p.is_meta for p in task.student_backbone.parameters())
    stop = StopAtStart()
    trainer = pl.Trainer(
        accelerator="cpu", devices=WORLD, strategy=SSLFSDPStrategy(process_group_backend="gloo"),
        max_steps=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, callbacks=[stop], default_root_dir=root,
        use_distributed_sampler=False,
    )  # fmt: skip
    error = None
    try:
        trainer.fit(task, train_dataloaders=DataLoader([torch.zeros(1)], batch_size=None))
    except CheckpointError as err:
        error = str(err)
    out = {**stop.record, "opened": opened, "meta_before": meta_before, "error": error}
    torch.save(out, Path(root) / f"rank{rank}.pt")
    # the record is on disk: leave at once. After a failed fit Lightning leaves the gloo group up,
    # and its threads torn down by the interpreter's exit can abort the process ("terminate called
    # without an active exception") after the test's outcome was written.
    os._exit(0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_ranks(root: Path, arch: str = ARCH) -> list[dict[str, Any]]:
    mp.spawn(worker, args=(free_port(), str(root), arch), nprocs=WORLD, join=True)
    return [torch.load(root / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.fixture
def nodes(tmp_path, ckpt_data):
    """``node0/start.pth`` (official layout with ``local_cls_norm``) and an empty ``node1``."""
    (tmp_path / "node0").mkdir()
    (tmp_path / "node1").mkdir()
    ckpt_data.write_meta_checkpoint(tmp_path / "node0" / NAME, ARCH, local_cls_norm=True, seed=5)
    return tmp_path


@pytest.mark.distributed
def test_rank0_load_equals_a_one_process_load(nodes):
    ranks = run_ranks(nodes)
    assert all(r["error"] is None and r["meta_before"] for r in ranks)
    # rank 1 never opened the file (it does not even exist in its folder); rank 0 did
    assert ranks[1]["opened"] == [] and ranks[0]["opened"]
    reference = make_task(str(nodes / "node0" / NAME), load_on_rank0=False)
    want = reference.student_backbone.state_dict()
    assert any(k.startswith("local_cls_norm.") for k in want)
    full = ranks[0]["full"]
    for prefix in BACKBONES:
        for key, value in want.items():
            got = full[prefix + key]
            assert got.dtype == value.dtype and torch.equal(got, value), prefix + key
    for rank, record in enumerate(ranks):
        assert record["meta"] == []
        # every backbone parameter is a shard, and each rank's shard is its part of the tensor
        assert not [k for k in record["plain"] if k.startswith(BACKBONES)]
        for prefix in BACKBONES:
            for key, value in reference.student_backbone.named_parameters():
                local = record["local"][prefix + key]
                rows = -(-value.shape[0] // WORLD)  # FSDP2: ceil-sized row blocks, last short
                part = value.detach()[rank * rows : (rank + 1) * rows]
                assert torch.equal(local, part), (rank, prefix + key)
    big = "student.backbone.vit.blocks.0.mlp.fc1.weight"
    assert ranks[0]["local"][big].numel() * WORLD == full[big].numel()
    # the teachers hold their own shards, equal to the student's
    assert full["teacher.dino_head.last_layer.weight"].equal(
        full["student.dino_head.last_layer.weight"]
    )


@pytest.mark.distributed
def test_a_checkpoint_that_does_not_fit_fails_on_every_rank(nodes):
    """Rank 0 finds the mismatch; the other rank raises the same error instead of waiting."""
    ranks = run_ranks(nodes, arch="vit_small_patch16_dinov3_qkvb")
    for record in ranks:
        assert record["error"] is not None and NAME in record["error"]
        assert "model.arch" in record["error"]
    assert ranks[1]["opened"] == []


def train_worker(rank: int, port: int, root: str, batches: list[dict[str, Any]]) -> None:
    """Lightning's full step for ``lr.STEPS`` steps after the rank-0 load (file in node0 only)."""
    lr.join_ranks(rank, port)
    os.chdir(Path(root) / f"node{rank}")
    init = InitConfig(official_checkpoint=NAME, load_on_rank0=True)
    result = lr.fit("fsdp", batches, Path(root) / "fsdp", lr.STEPS, init=init)
    torch.save(result, Path(root) / f"train{rank}.pt")


@pytest.mark.slow
@pytest.mark.distributed
def test_training_from_the_rank0_load_equals_one_process(nodes, shared_data):
    """The sharded start trains as the one-process start does: losses, norms, every parameter."""
    batches = lr.global_batches(shared_data)
    mp.spawn(train_worker, args=(free_port(), str(nodes), batches), nprocs=WORLD, join=True)
    rank0 = torch.load(nodes / "train0.pt", weights_only=False)
    init = InitConfig(official_checkpoint=str(nodes / "node0" / NAME))
    single = lr.fit("single", batches, nodes / "single", lr.STEPS, init=init)
    assert_same_training(rank0, single, atol=2e-6)
    assert "student.backbone.local_cls_norm.weight" in single["state"]
    assert single["losses"][-1] < single["losses"][0]
