"""Imagery read for a backbone: the weight card's band order and normalisation, any grid.

:class:`ImageReader` is the trainers' view of :class:`dinogeo.models.card_imagery.CardImage`: its
:meth:`~ImageReader.read` returns the card's bands normalised as
``(DN * scale + offset - mean) / std`` (the image sensor's scale/offset, the card's statistics).
:meth:`ImageReader.aligned_to` reads the same image on another image's grid (bilinear, through a
WarpedVRT), as the second date of a change pair needs; a :data:`Scene` is one image or such a
date pair, and :class:`SceneImages` the images a run's scenes are opened from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from dinogeo.data.imagery_spec import ImagerySpec
from dinogeo.errors import ConfigError
from dinogeo.models.card import WeightCard
from dinogeo.models.card_imagery import CardImage

__all__ = ["ImageReader", "Scene", "SceneImages", "scene_grid", "scene_valid"]


class ImageReader:
    """An image read in the weight card's bands and normalisation.

    Args:
        path: the image.
        card: the backbone's weight card.
        imagery: the image's sensor, file bands and scale/offset overrides (default: the
            card's sensor, scale and offset).

    Attributes:
        image: the :class:`~dinogeo.models.card_imagery.CardImage` read.
        path, card, crs, transform, width, height, bounds: those of ``image``.

    Raises:
        BandMismatchError: the image lacks bands the backbone needs.
        RasterReadError: unreadable image or no CRS.
    """

    def __init__(
        self,
        path: str | Path,
        card: WeightCard,
        imagery: ImagerySpec | None = None,
    ) -> None:
        image = CardImage(path, card, imagery)
        self._use(image)

    def _use(self, image: CardImage) -> None:
        self.image = image
        self.path, self.card = image.path, image.card
        self.crs, self.transform = image.crs, image.transform
        self.width, self.height, self.bounds = image.width, image.height, image.bounds

    @property
    def band_names(self) -> list[str]:
        """The bands returned, in the weight card's order."""
        return self.image.band_names

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Normalised float32 (C, h, w) in card band order (0 where invalid) and the valid mask."""
        return self.image.read_normalized(window)

    def valid(self, window: Window) -> np.ndarray:
        """Valid-pixel mask (h, w) of a window."""
        return self.image.valid(window)

    def same_grid(self, other: ImageReader) -> bool:
        """Whether this image shares ``other``'s grid (CRS, transform and size)."""
        return self.image.same_grid(other.image)

    def aligned_to(self, other: ImageReader) -> ImageReader:
        """This image read on ``other``'s grid (itself when the grids already match)."""
        image = self.image.aligned_to(other.image)
        if image is self.image:
            return self
        aligned = ImageReader.__new__(ImageReader)
        aligned._use(image)
        return aligned


#: what one scene is read as: one image, or a date pair (date 2 on date 1's grid)
type Scene = ImageReader | tuple[ImageReader, ImageReader]


def scene_grid(scene: Scene) -> ImageReader:
    """The reader whose grid a scene's labels and chips use (date 1 of a pair)."""
    return scene[0] if isinstance(scene, tuple) else scene


def scene_valid(scene: Scene, window: Window) -> np.ndarray:
    """Valid-pixel mask (h, w) of a window of a scene (valid on both dates of a pair)."""
    if isinstance(scene, tuple):
        both: np.ndarray = scene[0].valid(window) & scene[1].valid(window)
        return both
    return scene.valid(window)


@dataclass(frozen=True)
class SceneImages:
    """The images of a run's scenes: one image each, or date pairs.

    Args:
        grids: the image of each scene (date 1 of a pair): its grid holds the labels and chips.
        second: date 2 of each pair (read on date 1's grid), or None for single images.

    Raises:
        ConfigError: ``second`` does not list as many images as ``grids``.
    """

    grids: tuple[str, ...]
    second: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.second is not None and len(self.second) != len(self.grids):
            raise ConfigError(
                f"date 1 and date 2 must list the same number of images ({len(self.grids)} vs "
                f"{len(self.second)})"
            )

    @classmethod
    def pairs(
        cls, first: Sequence[str], second: Sequence[str], keys: tuple[str, str]
    ) -> SceneImages:
        """Date pairs, or a :class:`ConfigError` naming the options ``keys`` when counts differ."""
        if len(first) != len(second) or not first:
            raise ConfigError(
                f"{keys[0]} and {keys[1]} must list the same number of images ({len(first)} vs "
                f"{len(second)})"
            )
        return cls(tuple(first), tuple(second))

    def open(self, card: WeightCard, imagery: ImagerySpec) -> list[Scene]:
        """One reader per scene, or per date with date 2 aligned to date 1's grid."""
        if self.second is None:
            return [ImageReader(path, card, imagery) for path in self.grids]
        scenes: list[Scene] = []
        for a, b in zip(self.grids, self.second, strict=True):
            first = ImageReader(a, card, imagery)
            scenes.append((first, ImageReader(b, card, imagery).aligned_to(first)))
        return scenes
