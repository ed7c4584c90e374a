"""Inputs of a prediction: expanding files/folders/globs, opening them for a model, aligning dates.

Every input is opened as a :class:`dinogeo.models.card_imagery.CardImage` using the sensor named by
the model's weight card, with the card's band order and normalisation statistics, so band
mismatches, missing CRSs and unreadable files fail before any work starts. A second date whose grid
differs from the first is read on the first date's grid through a GDAL warped VRT.
"""

from __future__ import annotations

import glob
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window
from scipy import ndimage

from dinogeo.data.opener import is_zarr_path
from dinogeo.data.sensors import Sensor, load_sensor
from dinogeo.errors import RasterReadError, SensorError
from dinogeo.models.card import WeightCard
from dinogeo.models.card_imagery import CardImage, apply_card_stats

__all__ = [
    "RASTER_SUFFIXES",
    "align_to",
    "all_bands_valid",
    "card_sensor",
    "expand_inputs",
    "fill_invalid",
    "open_for_card",
    "window_reader",
]

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".png", ".jpg", ".jpeg", ".img", ".zarr")
_READ_LOCK = threading.Lock()


def expand_inputs(inputs: str | Path | Sequence[str | Path]) -> list[Path]:
    """Expand files, folders (their rasters and zarr stores) and glob patterns into paths.

    A zarr store holding several rasters (``dinogeo ingest`` of an archive) expands into one
    input per raster group.

    Args:
        inputs: one input or several.

    Returns:
        Paths in the given order (folder contents and glob matches sorted), without duplicates.

    Raises:
        RasterReadError: an input does not exist or a folder/glob matches no raster.
    """
    items = [inputs] if isinstance(inputs, str | Path) else list(inputs)
    out: list[Path] = []
    for item in items:
        text = str(item)
        path = Path(text)
        if is_zarr_path(path) and path.exists():
            found = _zarr_rasters(path)
        elif path.is_dir():
            found = sorted(
                p
                for p in path.iterdir()
                if p.suffix.lower() in RASTER_SUFFIXES and not p.name.startswith(".")
            )
        elif any(ch in text for ch in "*?["):
            found = [Path(p) for p in sorted(glob.glob(text))]
            found = [p for p in found if p.suffix.lower() in RASTER_SUFFIXES or p.is_file()]
        elif path.exists():
            found = [path]
        else:
            raise RasterReadError(f"input {text} does not exist: check the path")
        if not found:
            raise RasterReadError(
                f"input {text} matches no raster ({', '.join(RASTER_SUFFIXES)}); check the folder "
                "or pattern"
            )
        out.extend(p for p in found if p not in out)
    return out


def _zarr_rasters(store: Path) -> list[Path]:
    """The raster groups of a zarr store (the store itself when it holds one raster)."""
    from dinogeo.data.zarr_store import list_store_rasters

    try:
        groups = list_store_rasters(store)
    except RasterReadError:
        return [store]
    if len(groups) <= 1:
        return [store / groups[0]] if groups and groups[0] else [store]
    return [store / g for g in groups]


def card_sensor(card: WeightCard) -> Sensor:
    """Return the card's sensor spec with the card's scaling and normalisation statistics.

    Args:
        card: the model's weight card.

    Returns:
        The full sensor spec (all bands) where the card's bands carry the card's mean/std.

    Raises:
        SensorError: the card names an unknown sensor or bands the sensor lacks.
    """
    try:
        sensor = load_sensor(card.sensor)
    except SensorError as err:
        raise SensorError(
            f"the model's weight card names sensor {card.sensor!r}, which is not shipped: {err}"
        ) from err
    scaled = replace(sensor, scale=float(card.scale), offset=float(card.offset))
    return apply_card_stats(scaled, card)


def open_for_card(path: Path, card: WeightCard) -> CardImage:
    """Open an input for a model and check its bands against the weight card.

    Args:
        path: raster file or zarr store.
        card: the model's weight card.

    Returns:
        An image reading the card's bands (``read`` gives digital numbers that
        ``image.sensor.normalize`` maps with the card's statistics).

    Raises:
        RasterReadError, BandMismatchError, SensorError: before any work starts.
    """
    card_sensor(card)  # the card's sensor must be shipped (CardImage reads it by name)
    return CardImage(path, card)


def align_to(ref: CardImage, src: CardImage) -> CardImage:
    """Return ``src`` resampled onto ``ref``'s grid (itself when the grids already match).

    The warp is a GDAL warped VRT (bilinear) read in memory (:meth:`CardImage.aligned_to`).

    Args:
        ref: the image whose grid wins (date 1).
        src: the image to align (date 2).

    Returns:
        An image on ``ref``'s grid.

    Raises:
        RasterReadError: ``src`` is a zarr store or cannot be warped.
    """
    return src.aligned_to(ref)


def fill_invalid(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Fill the invalid pixels of a normalised window with their nearest valid pixel, in place.

    Windows at the edge of the valid data (a scene's nodata collar, the raster border) would
    otherwise give the model a block of constant fill next to real pixels: a ViT patch or a
    convolution straddling the edge mixes both, and the valid pixels there get the prediction of
    the fill (a band of one class along the edge). Copying the nearest valid pixel outward (edge
    padding) keeps the input looking like imagery; invalid pixels still get no output.

    Args:
        image: ``(C, h, w)`` float32.
        valid: ``(h, w)`` bool.

    Returns:
        ``image``, with every invalid pixel set to its nearest valid pixel (unchanged when the
        window is entirely valid or entirely invalid).
    """
    if valid.all() or not valid.any():
        return image
    rows, cols = ndimage.distance_transform_edt(~valid, return_distances=False, return_indices=True)
    holes = ~valid
    image[:, holes] = image[:, rows[holes], cols[holes]]
    return image


def all_bands_valid(raw: np.ndarray, valid: np.ndarray, nodata: float | None) -> np.ndarray:
    """Return the pixels valid in every band: ``valid`` without pixels where any band is nodata.

    A file's nodata value is per band (GDAL), and a scene's bands can cover different footprints:
    on the NC Landsat 7 scene, band 7 is 0 (nodata) along a 20-30 pixel strip inside the other
    bands' edge. A pixel missing one of the model's bands cannot be predicted: the missing band
    would enter the model as a spectral outlier (one class along the whole edge).

    Args:
        raw: ``(C, h, w)`` digital numbers in the model's band order.
        valid: the reader's ``(h, w)`` mask.
        nodata: the file's nodata value, or None.

    Returns:
        The ``(h, w)`` mask of pixels valid in every band.
    """
    if nodata is None:
        return valid
    if math.isnan(nodata):
        missing = np.isnan(raw).any(axis=0) if raw.dtype.kind == "f" else np.zeros_like(valid)
    else:
        missing = (raw == raw.dtype.type(nodata)).any(axis=0)
    return np.asarray(valid & ~missing)


def window_reader(
    sources: Sequence[Any],
) -> Callable[[Window], tuple[tuple[np.ndarray, ...], np.ndarray]]:
    """Return a function reading one window from every source (one per date).

    Reads of the shared dataset handles are serialised with a lock (GDAL handles are not
    thread-safe); normalisation runs outside the lock, so reader threads still overlap.

    Args:
        sources: sources on the same grid.

    Returns:
        ``read(window) -> (images, valid)`` with normalised float32 images and
        the pixels valid in every band of every date (:func:`all_bands_valid`). Invalid pixels
        are filled with their nearest valid
        pixel (:func:`fill_invalid`), 0 in a window without any valid pixel.
    """

    def read(window: Window) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
        images = []
        valid: np.ndarray | None = None
        for src in sources:
            with _READ_LOCK:
                raw, ok = src.read(window)
            ok = all_bands_valid(raw, ok, getattr(src, "nodata", None))
            img = src.sensor.normalize(raw)
            valid = ok if valid is None else valid & ok
            images.append(img)
        if valid is None:
            raise ValueError("window_reader needs at least one source")
        for img in images:
            img[:, ~valid] = 0.0
            fill_invalid(img, valid)
        return tuple(images), valid

    return read
