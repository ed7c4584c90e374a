"""Multi-student distillation on rank subgroups, rehearsed on CPU with gloo.

Two students, one rank each, on two processes: each rank runs the teacher on its half of the
global batch; the teacher's bottlenecks, crops and masks are gathered so that each student sees
the whole global batch with the teacher's targets. Each student's loss and gradients must equal
a single-process run of that student alone on the whole batch with the same teacher targets.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dinogeo.models.backbone_file import load_backbone
from dinogeo.ssl.distill_config import StudentConfig, TeacherConfig
from dinogeo.ssl.distill_step import distill_losses
from dinogeo.ssl.distill_task import DistillTask
from dinogeo.ssl.distill_teacher import file_sha256, teacher_targets
from tests.data.distill import data as fx
from tests.ssl.test_distill import CONFIGS, real_batch, tiny_args

pytestmark = pytest.mark.distributed

WORLD = 2
STUDENTS = [
    StudentConfig(name="narrow", arch="vit_test_patch16_dinov3", img_size=32, ranks=1,
                  backbone_kwargs={"embed_dim": 32, "num_heads": 2, "init_values": 0.1}),
    StudentConfig(name="shallow", arch="vit_test_patch16_dinov3", img_size=32, ranks=1,
                  backbone_kwargs={"depth": 2, "init_values": 0.1}),
]  # fmt: skip


def make_task(teacher: str) -> DistillTask:
    task = DistillTask(
        teacher=TeacherConfig(path=teacher), students=STUDENTS, in_chans=4, band_names=fx.BANDS
    )
    task.configure_model()
    return task


def share(batch: dict, rank: int) -> dict:
    """Rank ``rank``'s half of a crop-major batch (what its data loader would give)."""
    b = batch["global_crops"].shape[0] // 2
    half = b // WORLD
    pick = slice(rank * half, (rank + 1) * half)
    n_loc = batch["local_crops"].shape[0] // b
    return {
        "global_crops": batch["global_crops"].unflatten(0, (2, b))[:, pick].flatten(0, 1),
        "local_crops": batch["local_crops"].unflatten(0, (n_loc, b))[:, pick].flatten(0, 1),
        "masks": batch["masks"].unflatten(0, (2, b))[:, pick].flatten(0, 1),
    }


def run_student(task: DistillTask, name: str, targets) -> dict:
    torch.manual_seed(1)  # the same RoPE rescaling draws (the student trains)
    student = task.students[name]
    out = distill_losses(student, targets, dino_loss=task.dino_loss, ibot_loss=task.ibot_loss,
                         loss_cfg=task.loss_cfg)  # fmt: skip
    out.loss.backward()
    return {
        "loss": out.loss.detach(),
        "grads": {k: p.grad.clone() for k, p in student.named_parameters() if p.grad is not None},
        "dino": targets.dino,
        "ibot": targets.ibot,
    }


def worker(rank: int, world: int, init_file: str, teacher: str, batch: dict, out: str) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        task = make_task(teacher)
        (name,) = list(task.students)
        targets = teacher_targets(task.teacher["backbone"], task.teacher, share(batch, rank),
                                  student_patch=16, teacher_temp=0.07,
                                  subgroups=task.subgroups)  # fmt: skip
        result = run_student(task, name, targets)
        result.update(name=name, subgroup=(task.subgroups.size, task.subgroups.rank))
        torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shared_data):
    tmp = tmp_path_factory.mktemp("distill_gloo")
    teacher = str(fx.write_teachers(tmp)["ckpt"])
    batch = {k: v for k, v in real_batch(shared_data, batch_size=4).items() if torch.is_tensor(v)}
    mp.spawn(worker, args=(WORLD, str(tmp / "rendezvous"), teacher, batch, str(tmp)),
             nprocs=WORLD, join=True)  # fmt: skip
    return teacher, batch, [torch.load(tmp / f"rank{r}.pt") for r in range(WORLD)]


def test_each_rank_trains_its_own_student(runs):
    _, _, ranks = runs
    assert [r["name"] for r in ranks] == ["narrow", "shallow"]
    assert all(r["subgroup"] == (1, 0) for r in ranks)


def test_two_ranks_equal_each_student_alone_with_the_same_targets(runs):
    teacher, batch, ranks = runs
    single = make_task(teacher)  # one process: both students, the whole global batch
    batch = {**batch, "mask_indices": batch["masks"].flatten().nonzero().flatten()}
    targets = teacher_targets(single.teacher["backbone"], single.teacher, batch, student_patch=16,
                              teacher_temp=0.07)  # fmt: skip
    for res in ranks:
        # the targets gathered over the two ranks are the single-process targets
        torch.testing.assert_close(res["dino"], targets.dino)
        torch.testing.assert_close(res["ibot"], targets.ibot)
        alone = run_student(single, res["name"], targets)
        torch.testing.assert_close(res["loss"], alone["loss"])
        assert res["grads"].keys() == alone["grads"].keys() and len(res["grads"]) > 10
        for key, grad in alone["grads"].items():
            torch.testing.assert_close(res["grads"][key], grad, msg=key)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_distill_ddp_config_on_two_gloo_ranks(shared_data, tmp_path):
    """configs/ssl/distill_ddp.yaml through torchrun: one student per rank, a head-less teacher."""
    teacher = fx.write_teachers(tmp_path / "teacher")["safetensors"]
    students = (
        "[{name: narrow, arch: vit_test_patch16_dinov3, img_size: 32, ranks: 1, backbone_kwargs: "
        "{embed_dim: 32, num_heads: 2, init_values: 0.1}, export_path: out/narrow.safetensors}, "
        "{name: shallow, arch: vit_test_patch16_dinov3, img_size: 32, ranks: 1, backbone_kwargs: "
        "{depth: 2, init_values: 0.1}, export_path: out/shallow.safetensors}]"
    )
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
        "-m", "dinogeo.cli.main", "pretrain",
        "--config", str(CONFIGS / "distill.yaml"), "--config", str(CONFIGS / "distill_ddp.yaml"),
        *tiny_args(shared_data, teacher, 4), "--trainer.devices", "2",
        "--trainer.strategy.init_args.process_group_backend", "gloo",
        "--model.students", students, "--data.batch_size", "2",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                         env.get("PYTHONPATH", "")])  # fmt: skip
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    ckpt = torch.load(
        tmp_path / "runs" / "distill" / "checkpoints" / "last.ckpt", weights_only=True
    )
    state = ckpt["state_dict"]
    assert ckpt["global_step"] == 4
    for name in ("narrow", "shallow"):  # rank 0 saved both subgroups' students and optimizers
        assert any(k.startswith(f"students.{name}.") for k in state)
        assert any(k.startswith(f"students_ema.{name}.") for k in state)
        assert ckpt["distill_optimizer_states"][name]["state"]
        backbone, card = load_backbone(tmp_path / "out" / f"{name}.safetensors")
        assert card.training_config["teacher"]["sha256"] == file_sha256(teacher)
        for key, value in backbone.state_dict().items():
            torch.testing.assert_close(value, state[f"students_ema.{name}.backbone.{key}"])
