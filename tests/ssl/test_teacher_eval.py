"""The EMA teacher and the Gram teacher stay in eval mode whatever ``train()`` is called on the
module: with drop path and RoPE rescaling on, the same input gives the same teacher outputs."""

from __future__ import annotations

import torch

from dinogeo.ssl.module import SSLTask
from dinogeo.ssl.task_config import DINOHeadConfig, GramConfig

HEAD = DINOHeadConfig(out_dim=32, hidden_dim=32, bottleneck_dim=16)


def _task() -> SSLTask:
    return SSLTask(
        arch="vit_test_patch16_dinov3",
        in_chans=4,
        img_size=32,
        drop_path_rate=0.4,
        rope_rescale_coords=2.0,
        dino_head=HEAD,
        ibot_head=HEAD,
        backbone_kwargs={"init_values": 0.1},
        gram=GramConfig(enabled=True, from_initial=True),
    )


def test_teachers_deterministic_after_train():
    task = _task()
    task.train()
    assert task.student.training
    assert not any(m.training for m in task.teacher.modules())
    assert task.gram_teacher is not None
    assert not any(m.training for m in task.gram_teacher.backbone.modules())
    x = torch.randn(3, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.manual_seed(1)
        first = task.teacher_backbone.forward_features(x)
        torch.manual_seed(2)
        second = task.teacher_backbone.forward_features(x)
        g1 = task.gram_teacher.patch_tokens(x, (2, 2))
        g2 = task.gram_teacher.patch_tokens(x, (2, 2))
        heads = [task.teacher["dino_head"](first["x_norm_clstoken"]) for _ in range(2)]
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=0)
    torch.testing.assert_close(g1, g2, rtol=0, atol=0)
    torch.testing.assert_close(heads[0], heads[1], rtol=0, atol=0)
    # the student is stochastic in train mode (drop path, RoPE rescaling): the test is meaningful
    with torch.no_grad():
        s1 = task.student_backbone(x)
        s2 = task.student_backbone(x)
    assert not torch.equal(s1, s2)


def test_train_false_then_true_keeps_teachers_in_eval():
    task = _task()
    task.eval()
    task.train(True)
    assert not task.teacher.training
    assert task.gram_teacher is not None and not task.gram_teacher.backbone.training
