"""dinogeo: the DINOv3 self-supervised recipe for satellite and aerial imagery."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
