"""SSLFSDPStrategy: resuming a stage-1 checkpoint (no Gram teacher) into the Gram stage.

FSDP itself needs CUDA; on a GPU this path ran end to end (bench/gpu/check.sh, FSDP stage 1
then Gram stage 2 resumed from last.ckpt). Here the strategy's own logic is tested with
Lightning's FSDP loading replaced by a recorder.
"""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.strategies import FSDPStrategy

from dinogeo.errors import CheckpointError
from dinogeo.ssl.fsdp import SSLFSDPStrategy
from dinogeo.ssl.module import SSLTask
from dinogeo.ssl.task_config import DINOHeadConfig, GramConfig

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


@pytest.fixture
def recorder(monkeypatch):
    seen: list[bool] = []

    def fake_load(self, checkpoint_path, weights_only=None):
        seen.append(self.lightning_module.strict_loading)
        return {}

    monkeypatch.setattr(FSDPStrategy, "load_checkpoint", fake_load)
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
    assert recorder == [False]  # non-strict for the missing Gram teacher only
    assert stage2.strict_loading is True  # restored afterwards


def test_checkpoint_with_gram_teacher_loads_strictly(tmp_path, recorder):
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
