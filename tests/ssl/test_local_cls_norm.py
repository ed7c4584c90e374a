"""Continued pretraining from a checkpoint with Meta's ``local_cls_norm`` (7B, SAT ViT-L): the
norm is loaded into student and teacher and used on the student's local crops in the loss."""

from __future__ import annotations

from pathlib import Path

import torch

from dinogeo.ssl.datamodule import SSLDataModule
from dinogeo.ssl.module import SSLTask
from dinogeo.ssl.module_step import ssl_losses
from dinogeo.ssl.task_config import DINOHeadConfig, InitConfig

ROOT = Path(__file__).resolve().parents[2]
S2_10M = "sentinel2-l1c-virginia-sattestdata/S2_18SVG_20160112_10m_B02-B03-B04-B08_crop.tif"
BANDS = ["B02", "B03", "B04", "B08"]
HEAD = DINOHeadConfig(out_dim=32, hidden_dim=32, bottleneck_dim=16)


def test_local_cls_norm_kept_and_used_for_local_crops(shared_data, tmp_path, ckpt_data):
    path = tmp_path / "sat_like.pth"
    state = ckpt_data.write_meta_checkpoint(path, local_cls_norm=True, seed=3)
    task = SSLTask(
        arch="vit_test_patch16_dinov3",
        in_chans=4,
        band_names=BANDS,
        img_size=32,
        dino_head=HEAD,
        ibot_head=HEAD,
        init=InitConfig(official_checkpoint=str(path)),
    )
    for backbone in (task.student_backbone, task.teacher_backbone):
        assert backbone.local_cls_norm is not None
        assert torch.equal(backbone.local_cls_norm.weight, state["local_cls_norm.weight"])
        assert torch.equal(backbone.local_cls_norm.bias, state["local_cls_norm.bias"])

    dm = SSLDataModule(
        sources=[str(shared_data / S2_10M)],
        sensor="sentinel2_l1c",
        bands=BANDS,
        samples_per_epoch=4,
        batch_size=4,
        num_workers=0,
        global_size=32,
        local_size=16,
        n_local=2,
        chip_size=48,
    )
    dm.setup("fit")
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    task.train()
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
    grad = task.student_backbone.local_cls_norm.weight.grad
    assert grad is not None and grad.abs().sum() > 0  # the local crops' cls tokens went through it
    # the teacher sees global crops only: its local norm never enters the targets
    assert task.teacher_backbone.local_cls_norm.weight.grad is None
