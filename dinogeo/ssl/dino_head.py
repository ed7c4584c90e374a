"""DINO / iBOT projection head: MLP, L2-normalised bottleneck, prototype layer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinogeo.errors import ConfigError
from dinogeo.ssl.task_config import DINOHeadConfig

__all__ = ["DINOHead", "build_head"]


class DINOHead(nn.Module):
    """Projection head of DINOv3 (used separately for DINO and iBOT).

    An ``nlayers`` MLP with GELU maps the backbone feature to a bottleneck, which is
    L2-normalised and scored against ``out_dim`` prototypes by a bias-free linear
    layer (``last_layer``). As in DINOv3 there is no weight normalisation on the
    prototypes. Linear weights are initialised trunc-normal(0.02), biases to zero.

    Args:
        in_dim: Backbone embedding width.
        out_dim: Number of prototypes K.
        hidden_dim: Width of the hidden MLP layers.
        bottleneck_dim: Width of the normalised bottleneck.
        nlayers: Number of MLP layers (1 maps ``in_dim`` straight to the bottleneck).
    """

    last_layer: nn.Linear

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        nlayers: int = 3,
    ) -> None:
        super().__init__()
        if nlayers < 1:
            raise ConfigError(f"DINOHead: nlayers must be >= 1, got {nlayers}; use 3 (the spec).")
        if min(in_dim, out_dim, hidden_dim, bottleneck_dim) < 1:
            raise ConfigError(
                "DINOHead: in_dim, out_dim, hidden_dim and bottleneck_dim must be positive, got "
                f"{in_dim}, {out_dim}, {hidden_dim}, {bottleneck_dim}."
            )
        layers: list[nn.Module] = []
        if nlayers == 1:
            layers.append(nn.Linear(in_dim, bottleneck_dim))
        else:
            layers += [nn.Linear(in_dim, hidden_dim), nn.GELU()]
            for _ in range(nlayers - 2):
                layers += [nn.Linear(hidden_dim, hidden_dim), nn.GELU()]
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        self.last_layer = nn.Linear(bottleneck_dim, out_dim, bias=False)
        self.in_dim, self.out_dim, self.bottleneck_dim = in_dim, out_dim, bottleneck_dim
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise all weights (trunc-normal std 0.02, zero biases)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(
        self, x: Tensor, *, no_last_layer: bool = False, only_last_layer: bool = False
    ) -> Tensor:
        """Score features against the prototypes.

        Args:
            x: Features ``(..., in_dim)`` (or ``(..., bottleneck_dim)`` with ``only_last_layer``).
            no_last_layer: Return the normalised bottleneck ``(..., bottleneck_dim)`` only.
            only_last_layer: Apply only the prototype layer to already-normalised bottleneck
                features (lets a caller all-gather bottlenecks before the large last layer).

        Returns:
            Prototype scores ``(..., out_dim)`` (logits, not divided by a temperature).
        """
        if not only_last_layer:
            x = self.mlp(x)
            eps = 1e-6 if x.dtype in (torch.float16, torch.bfloat16) else 1e-12
            x = F.normalize(x, dim=-1, p=2, eps=eps)
            if no_last_layer:
                return x
        logits: Tensor = self.last_layer(x)
        return logits


def build_head(dim: int, cfg: DINOHeadConfig) -> DINOHead:
    """A DINO or iBOT head on ``dim``-wide tokens, sized by ``cfg``."""
    return DINOHead(dim, cfg.out_dim, cfg.hidden_dim, cfg.bottleneck_dim, cfg.nlayers)
