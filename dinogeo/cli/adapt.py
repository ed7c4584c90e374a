"""``dinogeo adapt BACKBONE --sensor S -o OUT``: the report of :func:`adapt_backbone_file`."""

from __future__ import annotations

from typing import Any

from dinogeo.models.adapt import adapt_backbone_file

__all__ = ["run"]


def run(options: dict[str, Any]) -> int:
    """Adapt the backbone, then print the new card and which old band each new band came from.

    Args:
        options: the keyword arguments of :func:`~dinogeo.models.adapt.adapt_backbone_file`.

    Returns:
        The exit status (0).
    """
    card = adapt_backbone_file(**options)
    band_map = card.training_config["adapted_from"]["band_map"]
    print(f"wrote {options['out']}: {card.arch}, sensor {card.sensor}, bands {card.band_names}")
    for new, old in band_map.items():
        print(f"  {new:<8} <- {old}")
    return 0
