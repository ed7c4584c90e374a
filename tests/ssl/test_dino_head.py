import pytest
import torch

from dinogeo.errors import ConfigError
from dinogeo.ssl.dino_head import DINOHead


def test_structure_and_shapes():
    head = DINOHead(in_dim=32, out_dim=100, hidden_dim=64, bottleneck_dim=16)
    linears = [m for m in head.mlp if isinstance(m, torch.nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(64, 32), (64, 64), (16, 64)]
    assert sum(isinstance(m, torch.nn.GELU) for m in head.mlp) == 2
    assert head.last_layer.bias is None and tuple(head.last_layer.weight.shape) == (100, 16)
    assert not any("weight_g" in n or "parametrizations" in n for n, _ in head.named_parameters())
    x = torch.randn(2, 5, 32)
    assert head(x).shape == (2, 5, 100)
    assert DINOHead(32, 10, nlayers=1, bottleneck_dim=8).mlp[0].weight.shape == (8, 32)


def test_bottleneck_is_l2_normalised_and_split_forward():
    head = DINOHead(32, 50, 64, 16)
    x = torch.randn(7, 32)
    z = head(x, no_last_layer=True)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(7))
    torch.testing.assert_close(head(z, only_last_layer=True), head(x))
    # logits are bounded by the prototype norms (normalised bottleneck)
    assert (head(x).abs() <= head.last_layer.weight.norm(dim=1) + 1e-5).all()


def test_init_and_errors():
    head = DINOHead(32, 50, 64, 16)
    assert head.last_layer.weight.std().item() == pytest.approx(0.02, rel=0.3)
    assert all((m.bias == 0).all() for m in head.mlp if isinstance(m, torch.nn.Linear))
    with pytest.raises(ConfigError):
        DINOHead(32, nlayers=0)
