import math

import pytest
import torch

from dinogeo.errors import ConfigError
from dinogeo.ssl.koleo_loss import koleo_loss, koleo_loss_distributed


def unit(deg):
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def test_known_points_on_the_circle():
    # Angles 0, 60 and 180 degrees: chords 1 (0-60), sqrt(3) (60-180), 2 (0-180).
    # Nearest neighbours: 0 -> 60 (1), 60 -> 0 (1), 180 -> 60 (sqrt 3).
    x = torch.tensor([unit(0), unit(60), unit(180)])
    expected = -(0 + 0 + math.log(math.sqrt(3))) / 3
    assert koleo_loss(x).item() == pytest.approx(expected, abs=1e-6)
    # L2 normalisation: rescaled rows give the same loss
    scaled = x * torch.tensor([[2.0], [0.5], [3.0]])
    assert koleo_loss(scaled).item() == pytest.approx(expected, abs=1e-6)


def test_collinear_points_in_3d():
    # (1,0,0), (1,1,0)/sqrt2 and (0,1,0): all NN distances are the chord of 45 degrees.
    x = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    d = 2 * math.sin(math.radians(22.5))
    assert koleo_loss(x).item() == pytest.approx(-math.log(d), abs=1e-6)


def test_gradient_spreads_points_and_duplicates_are_finite():
    x = torch.tensor([unit(0), unit(10), unit(90)], requires_grad=True)
    koleo_loss(x).backward()
    assert torch.isfinite(x.grad).all()
    # a descent step increases the smallest distance
    y = (x - 0.01 * x.grad).detach()
    before = (x[0] - x[1]).norm()
    after = (torch.nn.functional.normalize(y)[0] - torch.nn.functional.normalize(y)[1]).norm()
    assert after > before
    dup = koleo_loss(torch.ones(4, 3))
    assert torch.isfinite(dup) and dup.item() == pytest.approx(-math.log(1e-8), rel=1e-3)


def test_distributed_falls_back_without_process_group_and_validates():
    x = torch.randn(6, 4)
    torch.testing.assert_close(koleo_loss_distributed(x), koleo_loss(x))
    with pytest.raises(ConfigError):
        koleo_loss(torch.randn(1, 4))
