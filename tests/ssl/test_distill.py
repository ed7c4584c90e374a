"""Distillation (DistillTask): the teacher, its shared targets, the students and the exported cards."""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import pytest
import torch

from dinogeo.cli.main import main
from dinogeo.errors import BandMismatchError, CheckpointError, ConfigError
from dinogeo.models.backbone_file import load_backbone
from dinogeo.ssl.datamodule import SSLDataModule
from dinogeo.ssl.distill_config import StudentConfig, TeacherConfig
from dinogeo.ssl.distill_step import distill_losses
from dinogeo.ssl.distill_task import DistillTask
from dinogeo.ssl.distill_teacher import file_sha256, teacher_targets
from dinogeo.ssl.pretrain import stage_of
from dinogeo.ssl.task_config import DINOHeadConfig
from tests.data.distill import data as fx

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "ssl"
WIDE = StudentConfig(
    name="narrow", arch="vit_test_patch16_dinov3", img_size=32,
    backbone_kwargs={"embed_dim": 32, "num_heads": 2, "init_values": 0.1},
)  # fmt: skip
SHALLOW = StudentConfig(
    name="shallow", arch="vit_test_patch16_dinov3", img_size=32,
    backbone_kwargs={"depth": 2, "init_values": 0.1},
)  # fmt: skip


@pytest.fixture(scope="module")
def teachers(tmp_path_factory) -> dict[str, Path]:
    return fx.write_teachers(tmp_path_factory.mktemp("teachers"))


def real_batch(shared: Path, patch: int = 16, batch_size: int = 4) -> dict:
    """One multi-crop batch of the real Sentinel-2 scene, iBOT positions on a ``patch`` grid."""
    dm = SSLDataModule(
        sources=[str(shared / fx.S2_10M)], sensor=fx.SENSOR, bands=fx.BANDS,
        samples_per_epoch=batch_size, batch_size=batch_size, num_workers=0, global_size=32,
        local_size=16, n_local=2, chip_size=64, patch_size=patch, seed=0,
    )  # fmt: skip
    dm.setup("fit")
    return dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)


def task(teacher: Path, students: list[StudentConfig], **kwargs) -> DistillTask:
    t = DistillTask(
        teacher=TeacherConfig(path=str(teacher), head_warmup_steps=2),
        students=students, in_chans=4, band_names=fx.BANDS, **kwargs,
    )  # fmt: skip
    t.configure_model()
    return t


def test_ckpt_teacher_brings_its_heads_and_their_sizes(teachers):
    t = task(teachers["ckpt"], [WIDE])
    assert t.head_warmup is None and t.warmup_steps == 0
    state = torch.load(teachers["ckpt"], weights_only=True)["state_dict"]
    for key, value in t.teacher.state_dict().items():
        torch.testing.assert_close(value, state[f"teacher.{key}"])
    assert t.dino_head_cfg == fx.HEAD and t.ibot_head_cfg == fx.HEAD  # matched to the teacher
    assert not any(p.requires_grad for p in t.teacher.parameters())
    prov = t.teacher_provenance
    assert (
        prov["sha256"] == file_sha256(teachers["ckpt"])
        and prov["arch"] == "vit_test_patch16_dinov3"
    )
    with pytest.raises(ConfigError, match="prototypes"):
        task(
            teachers["ckpt"],
            [WIDE],
            dino_head=DINOHeadConfig(out_dim=128, hidden_dim=32, bottleneck_dim=16),
        )


def test_safetensors_teacher_gets_fresh_heads_to_warm_up(teachers):
    t = task(teachers["safetensors"], [WIDE], dino_head=fx.HEAD, ibot_head=fx.HEAD)
    assert t.head_warmup is not None and t.warmup_steps == 2
    assert t.teacher_provenance["heads"] == "warmed up on the frozen teacher"
    with pytest.raises(ConfigError, match="head_warmup_steps"):
        DistillTask(teacher=TeacherConfig(path=str(teachers["safetensors"]), head_warmup_steps=0),
                    students=[WIDE], in_chans=4, band_names=fx.BANDS)  # fmt: skip


def test_bad_teacher_and_bands_are_clear_errors(teachers, tmp_path):
    with pytest.raises(CheckpointError, match="model.teacher.path"):
        task(tmp_path / "missing.ckpt", [WIDE])
    with pytest.raises(BandMismatchError, match="dinogeo adapt"):
        DistillTask(teacher=TeacherConfig(path=str(teachers["ckpt"])), students=[WIDE],
                    in_chans=4, band_names=["B04", "B03", "B02", "B08"])  # fmt: skip
    patch8 = StudentConfig(
        name="p8", arch="vit_test_patch16_dinov3", backbone_kwargs={"patch_size": 8}
    )
    with pytest.raises(ConfigError, match="patch size"):
        task(teachers["ckpt"], [WIDE, patch8])
    with pytest.raises(ConfigError, match="unique"):
        task(teachers["ckpt"], [WIDE, WIDE])


def test_students_share_targets_and_equal_each_alone(teachers, shared_data):
    """Two students on one rank: the teacher runs once; each equals a run of it alone."""
    batch = real_batch(shared_data)
    both = task(teachers["ckpt"], [WIDE, SHALLOW])
    targets = teacher_targets(both.teacher["backbone"], both.teacher, batch, student_patch=16,
                              teacher_temp=0.07)  # fmt: skip
    for cfg in (WIDE, SHALLOW):
        alone = task(teachers["ckpt"], [cfg])
        # the same initial student whatever the other students (seeded by its name)
        mine = alone.students[cfg.name].state_dict()
        for key, value in both.students[cfg.name].state_dict().items():
            torch.testing.assert_close(mine[key], value, msg=key)
        own = teacher_targets(alone.teacher["backbone"], alone.teacher, batch, student_patch=16,
                              teacher_temp=0.07)  # fmt: skip
        torch.testing.assert_close(own.dino, targets.dino)
        torch.testing.assert_close(own.ibot, targets.ibot)
        torch.manual_seed(1)  # the same RoPE rescaling draw in both (students train)
        shared = distill_losses(both.students[cfg.name], targets, dino_loss=both.dino_loss,
                                ibot_loss=both.ibot_loss, loss_cfg=both.loss_cfg)  # fmt: skip
        torch.manual_seed(1)
        single = distill_losses(alone.students[cfg.name], own, dino_loss=alone.dino_loss,
                                ibot_loss=alone.ibot_loss, loss_cfg=alone.loss_cfg)  # fmt: skip
        torch.testing.assert_close(shared.loss, single.loss)
    # targets are balanced soft assignments; the students' input is unmasked
    assert torch.allclose(targets.dino.sum(-1), torch.ones(2, 4), atol=1e-4)
    assert targets.ibot.shape[0] == int(batch["masks"].sum())


def test_student_with_another_patch_size_gets_resampled_targets(teachers, shared_data):
    """A patch-8 student of a patch-16 teacher: iBOT positions on the student's 4x4 grid."""
    batch = real_batch(shared_data, patch=8)
    p8 = StudentConfig(name="p8", arch="vit_test_patch16_dinov3", img_size=32,
                       backbone_kwargs={"patch_size": 8, "init_values": 0.1})  # fmt: skip
    t = task(teachers["ckpt"], [p8])
    assert t.student_patch == 8 and batch["masks"].shape == (8, 16)
    targets = teacher_targets(t.teacher["backbone"], t.teacher, batch, student_patch=8,
                              teacher_temp=0.07)  # fmt: skip
    out = distill_losses(t.students["p8"], targets, dino_loss=t.dino_loss, ibot_loss=t.ibot_loss,
                         loss_cfg=t.loss_cfg)  # fmt: skip
    out.loss.backward()
    assert targets.ibot.shape[0] == int(batch["masks"].sum()) and torch.isfinite(out.loss)
    assert t.students["p8"]["backbone"].vit.patch_embed.proj.weight.grad.abs().sum() > 0


def metrics(root: Path) -> list[dict[str, str]]:
    files = sorted(root.rglob("metrics.csv"))
    with files[-1].open() as fh:
        return list(csv.DictReader(fh))


def tiny_args(shared: Path, teacher: Path, steps: int) -> list[str]:
    return [
        "--model.teacher.path", str(teacher), "--model.teacher.head_warmup_steps", "2",
        "--trainer.accelerator", "cpu", "--trainer.max_steps", str(steps),
        "--trainer.enable_progress_bar", "false", "--trainer.log_every_n_steps", "1",
        "--model.dino_head", "{out_dim: 64, hidden_dim: 32, bottleneck_dim: 16}",
        "--model.ibot_head", "{out_dim: 64, hidden_dim: 32, bottleneck_dim: 16}",
        "--model.loss.teacher_temp_warmup_steps", "2", "--model.optim.warmup_steps", "1",
        "--model.optim.lr", "5e-3",
        "--data.index", "null", "--data.sources", f"[{shared / fx.S2_10M}]",
        "--data.sensor", fx.SENSOR, "--data.bands", "[B02, B03, B04, B08]",
        "--data.batch_size", "4", "--data.num_workers", "0", "--data.samples_per_epoch", "16",
        "--data.global_size", "32", "--data.local_size", "16", "--data.n_local", "2",
        "--data.chip_size", "64",
    ]  # fmt: skip


@pytest.mark.slow
def test_distill_config_headless_teacher_two_students(teachers, shared_data, tmp_path, monkeypatch):
    """configs/ssl/distill.yaml on real imagery: head warm-up, then two students; cards record the teacher."""
    monkeypatch.chdir(tmp_path)
    assert stage_of(["--config", str(CONFIGS / "distill.yaml")]) == "distill"
    students = (
        "[{name: narrow, arch: vit_test_patch16_dinov3, img_size: 32, backbone_kwargs: {embed_dim: 32,"
        " num_heads: 2, patch_size: 8, init_values: 0.1}, export_path: out/narrow.safetensors},"
        " {name: shallow, arch: vit_test_patch16_dinov3, img_size: 32, backbone_kwargs: {depth: 2,"
        " patch_size: 8, init_values: 0.1}, export_path: out/shallow.safetensors}]"
    )
    args = ["pretrain", "--config", str(CONFIGS / "distill.yaml"),
            *tiny_args(shared_data, teachers["safetensors"], 5), "--model.students", students,
            "--data.patch_size", "8"]  # fmt: skip
    assert main(args) == 0
    rows = metrics(tmp_path / "runs" / "distill")
    # (Lightning repeats the last logged value of a key in later rows: warm-up rows have no
    # student loss)
    warm = [r for r in rows if r.get("head_warmup/dino") and not r.get("narrow/loss/dino")]
    dist = [r for r in rows if r.get("narrow/loss/dino")]
    assert [int(r["step"]) for r in warm] == [0, 1]
    assert [int(r["step"]) for r in dist] == [2, 3, 4] and all(
        r.get("shallow/loss/ibot") for r in dist
    )
    teacher, teacher_card = load_backbone(teachers["safetensors"])
    ckpt = torch.load(
        tmp_path / "runs" / "distill" / "checkpoints" / "last.ckpt", weights_only=True
    )
    state = ckpt["state_dict"]
    for key, value in teacher.state_dict().items():  # the teacher backbone never changed
        torch.testing.assert_close(state[f"teacher.backbone.{key}"], value)
    assert any(  # its heads were warmed up (their EMA moved from the fresh heads)
        not torch.equal(state[f"teacher.dino_head.{k}"], state[f"head_warmup.dino_head.{k}"])
        for k in ("mlp.0.weight", "last_layer.weight")
    )
    for name, width, depth in (("narrow", 32, 4), ("shallow", 64, 2)):
        backbone, card = load_backbone(tmp_path / "out" / f"{name}.safetensors")
        assert (backbone.embed_dim, backbone.depth, backbone.patch_size) == (width, depth, 8)
        assert card.band_names == teacher_card.band_names and card.sensor == fx.SENSOR
        assert card.training_config["teacher"]["sha256"] == file_sha256(teachers["safetensors"])
        assert card.training_config["teacher"]["arch"] == "vit_test_patch16_dinov3"
        assert str(teachers["safetensors"].name) in card.source and "sha256" in card.source
        for key, value in backbone.state_dict().items():  # the exported weights are the EMA
            torch.testing.assert_close(value, state[f"students_ema.{name}.backbone.{key}"])
    ema = state["students_ema.narrow.backbone.vit.blocks.0.attn.qkv.weight"]
    assert not torch.equal(
        ema, copy.deepcopy(state["students.narrow.backbone.vit.blocks.0.attn.qkv.weight"])
    )
