import pytest
import torch

from dinogeo.errors import ConfigError
from dinogeo.ssl.ema import ema_update


def test_numerics():
    teacher = [torch.tensor([1.0, 2.0]), torch.tensor([[10.0]], dtype=torch.float64)]
    student = [torch.tensor([3.0, 4.0]), torch.tensor([[0.0]], dtype=torch.float64)]
    ema_update(teacher, student, 0.9)
    torch.testing.assert_close(teacher[0], torch.tensor([1.2, 2.2]))
    torch.testing.assert_close(teacher[1], torch.tensor([[9.0]], dtype=torch.float64))
    ema_update(teacher, student, 1.0)
    torch.testing.assert_close(teacher[0], torch.tensor([1.2, 2.2]))
    ema_update(teacher, student, 0.0)  # hard copy (Gram teacher refresh)
    torch.testing.assert_close(teacher[0], student[0])


def test_parameters_in_place_without_graph():
    t = torch.nn.Linear(3, 2)
    s = torch.nn.Linear(3, 2)
    t_params, s_params = list(t.parameters()), list(s.parameters())
    expected = [0.5 * a.detach() + 0.5 * b.detach() for a, b in zip(t_params, s_params)]
    ema_update(t_params, s_params, 0.5)
    for a, e in zip(t.parameters(), expected):
        torch.testing.assert_close(a.detach(), e)
        assert a.grad is None and a.requires_grad


def test_errors():
    with pytest.raises(ConfigError):
        ema_update([torch.zeros(2)], [], 0.9)
    with pytest.raises(ConfigError):
        ema_update([torch.zeros(2)], [torch.zeros(3)], 0.9)
    with pytest.raises(ConfigError):
        ema_update([torch.zeros(2)], [torch.zeros(2)], 1.5)
