"""Aberystwyth Sentinel-2 land cover, 4 classes, held-out spatial blocks."""

from __future__ import annotations

from .common import Settings
from .land_cover import labelled_pixels, land_cover_rows

TITLE = "Aberystwyth S2 land cover (spatial split)"


def run(settings: Settings) -> list[dict]:
    """Rows of the heads and the per-pixel baseline (trained on the training blocks)."""
    return land_cover_rows(
        settings,
        "land_cover_aberystwyth",
        TITLE,
        lambda dm: labelled_pixels(dm, part="train"),
    )
