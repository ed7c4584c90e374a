"""North Carolina Landsat 7 land cover: trained from the 1996 polygons, scored on the 1996 points."""

from __future__ import annotations

from .common import Settings
from .land_cover import labelled_pixels, land_cover_rows

TITLE = "NC Landsat 7 land cover (polygons -> points)"


def run(settings: Settings) -> list[dict]:
    """Rows of the heads and the per-pixel baseline (trained on every polygon pixel)."""
    return land_cover_rows(
        settings,
        "land_cover_nc_polygons",
        TITLE,
        lambda dm: labelled_pixels(dm, part=None),
    )
