import math

import pytest
import torch

from dinogeo.errors import ConfigError
from dinogeo.ssl.dino_loss import DINOLoss, dino_pair_fractions


def logits_for(probs, temp=0.1):
    # softmax(logits / temp) == probs
    return temp * torch.log(torch.tensor(probs))


def test_pair_fractions():
    assert dino_pair_fractions(2, 8) == pytest.approx((16 / 18, 2 / 18))
    assert dino_pair_fractions(2, 0) == pytest.approx((0.0, 1.0))
    assert dino_pair_fractions(2, 8, ignore_diagonal=False) == pytest.approx((16 / 20, 4 / 20))
    assert dino_pair_fractions(1, 0) == (0.0, 0.0)


def test_two_prototype_example_by_hand():
    # B = 1, K = 2; student probabilities after softmax(s / 0.1):
    s_global = torch.stack([logits_for([[0.5, 0.5]]), logits_for([[0.8, 0.2]])])  # (2,1,2)
    s_local = logits_for([[0.25, 0.75]]).unsqueeze(0)  # (1,1,2)
    teacher = torch.tensor([[[1.0, 0.0]], [[0.5, 0.5]]])  # (2,1,2)
    out = DINOLoss(out_dim=2)(s_global, s_local, teacher)
    # global: (student 0, teacher 1) = ln 2 and (student 1, teacher 0) = -ln 0.8
    l_global = (math.log(2) - math.log(0.8)) / 2
    # local against teacher 0: -ln 0.25; against teacher 1: -(0.5 ln 0.25 + 0.5 ln 0.75)
    l_local = (-math.log(0.25) - 0.5 * (math.log(0.25) + math.log(0.75))) / 2
    assert out["dino_global"].item() == pytest.approx(l_global, rel=1e-5)
    assert out["dino_local"].item() == pytest.approx(l_local, rel=1e-5)
    # 2 local pairs, 2 global pairs -> 1/2 each
    assert out["dino"].item() == pytest.approx(0.5 * l_local + 0.5 * l_global, rel=1e-5)
    weighted = DINOLoss(2)(s_global, s_local, teacher, local_weight=0.5)
    assert weighted["dino"].item() == pytest.approx(0.25 * l_local + 0.5 * l_global, rel=1e-5)

    # Without ignoring the diagonal: 4 global pairs, fractions 2/6 and 4/6.
    # diagonal: (student 0, teacher 0) = -ln 0.5; (student 1, teacher 1) = -(ln 0.8 + ln 0.2)/2
    diag = -math.log(0.5) - 0.5 * (math.log(0.8) + math.log(0.2))
    l_global_all = (math.log(2) - math.log(0.8) + diag) / 4
    full = DINOLoss(2)(s_global, s_local, teacher, ignore_diagonal=False)
    assert full["dino_global"].item() == pytest.approx(l_global_all, rel=1e-5)
    assert full["dino"].item() == pytest.approx(l_local / 3 + 2 * l_global_all / 3, rel=1e-5)


def test_batch_average_no_locals_and_gradient():
    torch.manual_seed(0)
    s = torch.randn(2, 5, 7, requires_grad=True)
    t = torch.softmax(torch.randn(2, 5, 7), dim=-1)
    out = DINOLoss(7)(s, None, t)
    manual = -(t[1] * torch.log_softmax(s[0] / 0.1, -1)).sum(-1).mean()
    manual = manual - (t[0] * torch.log_softmax(s[1] / 0.1, -1)).sum(-1).mean()
    torch.testing.assert_close(out["dino_global"], manual / 2)
    torch.testing.assert_close(out["dino"], out["dino_global"])
    assert out["dino_local"].item() == 0.0
    out["dino"].backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()


def test_shape_errors():
    loss = DINOLoss(4)
    with pytest.raises(ConfigError):
        loss(torch.randn(2, 3, 4), None, torch.rand(2, 2, 4))
    with pytest.raises(ConfigError):
        loss(torch.randn(2, 3, 5), None, torch.rand(2, 3, 5))
    with pytest.raises(ConfigError):
        DINOLoss(4, student_temp=0)
