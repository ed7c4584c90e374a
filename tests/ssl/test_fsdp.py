"""SSLFSDPStrategy (FSDP2) rehearsed on CPU: clipping by the global norm, resuming into the Gram
stage, and ``dinogeo pretrain`` with ``configs/ssl/fsdp.yaml`` on 2 gloo ranks on real imagery.

The step-level equality of 2 FSDP ranks with 1 process and the exact resume of a sharded
checkpoint are in tests/ssl/test_distributed_step.py.
"""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from dinogeo.errors import CheckpointError
from dinogeo.models.backbone_file import load_backbone
from dinogeo.ssl.fsdp import SSLFSDPStrategy
from dinogeo.ssl.grad_clip import clip_gradients_per_module
from dinogeo.ssl.module import SSLTask
from dinogeo.ssl.task_config import DINOHeadConfig, GramConfig

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs" / "ssl"
S2_10M = "sentinel2-l1c-virginia-sattestdata/S2_18SVG_20160112_10m_B02-B03-B04-B08_crop.tif"
HEAD = DINOHeadConfig(out_dim=16, hidden_dim=16, bottleneck_dim=8)


def _task(gram: bool) -> SSLTask:
    return SSLTask(
        arch="vit_test_patch16_dinov3",
        in_chans=3,
        img_size=32,
        dino_head=HEAD,
        ibot_head=HEAD,
        gram=GramConfig(enabled=gram, from_ema_at_start=gram),
    )


# ---------------------------------------------------------------- resuming into the Gram stage
@pytest.fixture
def recorder(monkeypatch):
    """Lightning's loading replaced: record which parts of the model it would load into."""
    seen: list[bool] = []

    def fake_load(self, checkpoint_path, weights_only=None):
        seen.append(self.lightning_module.gram_teacher is not None)
        return {}

    monkeypatch.setattr(ModelParallelStrategy, "load_checkpoint", fake_load)
    return seen


def _strategy(module: SSLTask) -> SSLFSDPStrategy:
    strategy = SSLFSDPStrategy()
    strategy._lightning_module = module
    return strategy


def test_stage1_checkpoint_resumes_into_gram_stage(tmp_path, recorder):
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": _task(gram=False).state_dict()}, path)
    stage2 = _task(gram=True)
    _strategy(stage2).load_checkpoint(path)
    assert recorder == [False]  # the Gram teacher is left out of the load
    assert stage2.gram_teacher is not None  # and put back afterwards


def test_checkpoint_with_gram_teacher_loads_everything(tmp_path, recorder):
    path = tmp_path / "last.ckpt"
    stage2 = _task(gram=True)
    torch.save({"state_dict": stage2.state_dict()}, path)
    _strategy(stage2).load_checkpoint(path)
    assert recorder == [True]


def test_missing_backbone_weights_are_an_error(tmp_path, recorder):
    path = tmp_path / "last.ckpt"
    state = _task(gram=False).state_dict()
    del state["student.backbone.vit.blocks.0.attn.qkv.weight"]
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError, match="student.backbone.vit.blocks.0.attn.qkv.weight"):
        _strategy(_task(gram=True)).load_checkpoint(path)
    assert recorder == []
    with pytest.raises(CheckpointError, match="not found"):
        _strategy(_task(gram=True)).load_checkpoint(tmp_path / "missing.ckpt")


# ---------------------------------------------------------------- clipping by the global norm
def _modules() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {"a": nn.Sequential(nn.Linear(6, 10), nn.Linear(10, 3)), "b": nn.Linear(5, 7)}


def _set_grads(modules: dict[str, nn.Module], scale: float) -> None:
    gen = torch.Generator().manual_seed(1)
    for module in modules.values():
        for p in module.parameters():
            grad = torch.randn(p.shape, generator=gen) * scale
            p.grad = grad if not hasattr(p, "device_mesh") else _shard_like(grad, p)


def _shard_like(full: torch.Tensor, param) -> torch.Tensor:
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(full, param.device_mesh, param.placements)


def clip_worker(rank: int, world: int, init_file: str, out: str) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        mesh = init_device_mesh("cpu", (world,))
        modules = _modules()
        for module in modules.values():
            fully_shard(module, mesh=mesh)
        _set_grads(modules, scale=1.0)
        local_sq = sum(float(p.grad.to_local().square().sum()) for p in modules["a"].parameters())
        norms = clip_gradients_per_module(modules, max_norm=0.5)
        grads = {
            f"{name}.{n}": p.grad.full_tensor()
            for name, m in modules.items()
            for n, p in m.named_parameters()
        }
        result = {"norms": {k: float(v) for k, v in norms.items()}, "grads": grads}
        torch.save({**result, "local_sq": local_sq}, os.path.join(out, f"clip{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_clipping_under_fsdp_uses_the_global_norm(tmp_path):
    mp.spawn(clip_worker, args=(2, str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"clip{r}.pt") for r in range(2)]
    single = _modules()
    _set_grads(single, scale=1.0)
    expected = {
        name: float(torch.nn.utils.clip_grad_norm_(m.parameters(), 0.5))
        for name, m in single.items()
    }
    # each rank's shard alone has a smaller norm: clipping by it would differ between ranks
    assert all(r["local_sq"] ** 0.5 < expected["a"] * 0.95 for r in ranks)
    assert ranks[0]["norms"] == ranks[1]["norms"]  # the same factor on every rank
    for name, value in expected.items():
        assert ranks[0]["norms"][name] == pytest.approx(value, rel=1e-6)
    for name, module in single.items():
        for n, p in module.named_parameters():
            for rank in ranks:
                torch.testing.assert_close(rank["grads"][f"{name}.{n}"], p.grad)


def test_clipping_of_whole_tensors_is_torchs():
    """One process / DDP: the same numbers as ``torch.nn.utils.clip_grad_norm_``."""
    mine, ref = _modules(), _modules()
    _set_grads(mine, scale=2.0)
    _set_grads(ref, scale=2.0)
    norms = clip_gradients_per_module(mine, max_norm=1.0)
    for name, module in ref.items():
        assert float(norms[name]) == float(torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0))
        for p, q in zip(mine[name].parameters(), module.parameters(), strict=True):
            assert torch.equal(p.grad, q.grad)
    assert float(clip_gradients_per_module({"none": nn.Linear(2, 2)}, 1.0)["none"]) == 0.0


# ---------------------------------------------------------------- the CLI on 2 CPU ranks
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    env["MASTER_PORT"] = str(free_port())
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "dinogeo.cli.main", "pretrain", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def fsdp_args(shared: Path, run: Path, steps: int) -> list[str]:
    """The issue's command (default.yaml + fsdp.yaml on 2 CPU ranks), shortened and sharded."""
    return [
        "--config", str(CONFIGS / "default.yaml"), "--config", str(CONFIGS / "fsdp.yaml"),
        "--trainer.accelerator", "cpu", "--trainer.devices", "2",
        "--trainer.max_steps", str(steps), "--trainer.enable_progress_bar", "false",
        "--trainer.strategy.init_args.save_distributed_checkpoint", "true",
        "--trainer.default_root_dir", str(run),
        "--trainer.logger", f"[{{class_path: lightning.pytorch.loggers.CSVLogger, init_args: "
        f"{{save_dir: {run}, name: csv, version: steps{steps}}}}}]",
        "--trainer.callbacks", f"[{{class_path: lightning.pytorch.callbacks.ModelCheckpoint, "
        f"init_args: {{dirpath: {run / 'checkpoints'}, save_last: true, save_top_k: 0, "
        "every_n_train_steps: 2}}]",
        "--model.optim.schedule_steps", "6", "--model.export_path", str(run / "teacher.safetensors"),
        "--data.sources", f"[{shared / S2_10M}]", "--data.sensor", "sentinel2_l1c",
        "--data.bands", "[B02, B03, B04, B08]", "--data.batch_size", "4",
        "--data.samples_per_epoch", "16", "--data.global_size", "32", "--data.local_size", "16",
        "--data.n_local", "2", "--data.chip_size", "64", "--data.gram_size", "64",
        "--model.loss.koleo_group_size", "8", "--collapse.start_step", "100",
    ]  # fmt: skip


def metrics(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
@pytest.mark.distributed
def test_pretrain_fsdp_config_on_two_cpu_ranks(shared_data, tmp_path):
    """Stage 1 on 2 gloo ranks (sharded checkpoints, teacher exported with its card), then the
    Gram stage resumed from stage 1's sharded checkpoint, which has no Gram teacher."""
    run = tmp_path / "run"
    done = cli(fsdp_args(shared_data, run, 4), tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    last = run / "checkpoints" / "last.ckpt"
    assert last.is_dir() and len(list(last.glob("*.distcp"))) == 2  # one shard file per rank
    dcp_to_torch_save(last, tmp_path / "full.pt")
    state = torch.load(tmp_path / "full.pt", weights_only=False)["state_dict"]
    backbone, card = load_backbone(run / "teacher.safetensors")
    assert card.band_names == ["B02", "B03", "B04", "B08"]
    assert card.training_config["trainer"]["world_size"] == 2
    for key, value in backbone.state_dict().items():  # the exported EMA teacher, gathered
        torch.testing.assert_close(value, state[f"teacher.backbone.{key}"], atol=0, rtol=0)
    assert not any(k.startswith("gram_teacher.") for k in state)
    rows = metrics(run / "csv" / "steps4" / "metrics.csv")
    losses = [float(r["loss/total"]) for r in rows if r.get("loss/total")]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    assert {"grad_norm/backbone", "loss/ibot", "loss/koleo"} <= set(rows[0])

    stage2 = [
        *fsdp_args(shared_data, run, 6), "--ckpt_path", str(last), "--model.gram.enabled", "true",
        "--model.gram.from_ema_at_start", "true", "--model.gram.weight", "1.0",
    ]  # fmt: skip
    done = cli(stage2, tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    rows = metrics(run / "csv" / "steps6" / "metrics.csv")
    gram = [(int(r["step"]), float(r["loss/gram"])) for r in rows if r.get("loss/gram")]
    assert [s for s, _ in gram] == [4, 5] and all(v > 0 for _, v in gram)
    dcp_to_torch_save(last, tmp_path / "full6.pt")
    assert any(
        k.startswith("gram_teacher.") for k in torch.load(tmp_path / "full6.pt")["state_dict"]
    )
