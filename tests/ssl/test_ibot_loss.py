import math

import pytest
import torch

from dinogeo.errors import ConfigError
from dinogeo.ssl.ibot_loss import iBOTPatchLoss


def test_hand_case():
    # Three masked tokens: two from image A (weight 1/2), one from image B (weight 1);
    # 2B = 4 global crops in the batch. Student probabilities after softmax(s / 0.1):
    p = torch.tensor([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]])
    q = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    w = torch.tensor([0.5, 0.5, 1.0])
    loss = iBOTPatchLoss(out_dim=2)(0.1 * torch.log(p), q, w, n_masked_images=4)
    ce = [-math.log(0.5), -(0.5 * math.log(0.9) + 0.5 * math.log(0.1)), -math.log(0.8)]
    expected = (0.5 * ce[0] + 0.5 * ce[1] + 1.0 * ce[2]) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # n_masked_images as a tensor
    loss_t = iBOTPatchLoss(2)(0.1 * torch.log(p), q, w, torch.tensor(4))
    assert loss_t.item() == pytest.approx(expected, rel=1e-5)


def test_empty_and_gradient():
    loss_fn = iBOTPatchLoss(3)
    s = torch.zeros(0, 3, requires_grad=True)
    out = loss_fn(s, torch.zeros(0, 3), torch.zeros(0), 4)
    assert out.item() == 0.0
    s = torch.randn(5, 3, requires_grad=True)
    out = loss_fn(s, torch.softmax(torch.randn(5, 3), -1), torch.full((5,), 0.2), 2)
    out.backward()
    assert torch.isfinite(s.grad).all()


def test_shape_errors():
    loss_fn = iBOTPatchLoss(3)
    with pytest.raises(ConfigError):
        loss_fn(torch.randn(4, 3), torch.rand(5, 3), torch.ones(4), 2)
    with pytest.raises(ConfigError):
        loss_fn(torch.randn(4, 3), torch.rand(4, 3), torch.ones(3), 2)
    with pytest.raises(ConfigError):
        loss_fn(torch.randn(4, 2), torch.rand(4, 2), torch.ones(4), 2)
