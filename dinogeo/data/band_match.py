"""Which of a raster's bands a sensor's are: the layout of a file's (or store's) bands.

:func:`match_file_bands` decides, from a file's band count, band descriptions and dtype, which
sensor describes its bands in file order and which of them a run reads; :func:`generic_sensor`
describes a raster of no known sensor; :func:`band_count_mismatch` words the error when a file's
bands fit neither the sensor nor the given band names, with the fixes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from dinogeo.data.sensors import Band, Sensor, load_sensor, shipped_sensors
from dinogeo.errors import BandMismatchError, SensorError, spell_option

__all__ = ["band_count_mismatch", "example_band_names", "generic_sensor", "match_file_bands"]

#: dtype -> (scale, offset) mapping the dtype's range onto about [0, 1] when no stats are known
_DTYPE_RANGE_SCALE: dict[str, float] = {
    "uint8": 1.0 / 255.0,
    "int8": 1.0 / 127.0,
    "uint16": 1.0 / 65535.0,
    "int16": 1.0 / 32767.0,
    "uint32": 1.0 / 4294967295.0,
    "int32": 1.0 / 2147483647.0,
}


def generic_sensor(count: int, dtype: str, nodata: float | None = None) -> Sensor:
    """Return a spec for a raster with no known sensor.

    Bands are named ``band_1 ... band_n``. Without statistics, values are normalised by the dtype's
    range: integers are divided by their maximum (uint8 by 255, uint16 by 65535, int16 by 32767)
    and floats are passed through unchanged (mean 0, std 1).

    Args:
        count: number of bands.
        dtype: numpy dtype name of the data.
        nodata: the nodata value, if any.
    """
    scale = _DTYPE_RANGE_SCALE.get(str(dtype), 1.0)
    bands = tuple(Band(name=f"band_{i + 1}") for i in range(count))
    return Sensor(
        name=f"generic_{dtype}",
        description=f"unknown sensor: {count} {dtype} bands normalised by the dtype range",
        dtype=str(dtype),
        scale=scale,
        offset=0.0,
        nodata=nodata,
        bands=bands,
        source="<inferred>",
    )


def match_file_bands(
    path: str | Path,
    n_file: int,
    descriptions: Sequence[str | None],
    dtype: np.dtype,
    nodata: float | None,
    sensor: str | Path | Sensor | None,
    bands: Sequence[str] | None,
    what: str = "file",
) -> tuple[Sensor, list[int]]:
    """Resolve which of a file's data bands to read and the spec of the returned bands.

    The file's layout is, in order of preference: the sensor selected by the file's band
    descriptions (when they all name sensor bands), the sensor itself (when the band counts
    match), or ``bands`` read as the file's bands in file order (when their count matches).
    Without a sensor, a generic one is inferred (see :func:`generic_sensor`). ``bands`` then
    selects and orders the returned bands.

    Args:
        path: the file (for messages).
        n_file: number of data bands in the file (alpha excluded).
        descriptions: the file's band descriptions (None where missing).
        dtype: the file's data type.
        nodata: the file's nodata value.
        sensor: sensor name, YAML path or spec, or None.
        bands: band names/aliases to return, or None for all.
        what: what holds the bands, for messages (``"file"``, or ``"store"`` for a zarr store).

    Returns:
        ``(spec of the returned bands, their 0-based positions among the file's data bands)``.

    Raises:
        BandMismatchError: the file's band count fits neither the sensor nor ``bands``.
        SensorError: an unknown band name.
    """
    if isinstance(bands, str):
        bands = [bands]
    if sensor is None:
        base = generic_sensor(n_file, str(dtype), nodata)
        layout = replace(
            base,
            bands=tuple(
                Band(name=b.name, aliases=(d,) if d and d != b.name else ())
                for b, d in zip(base.bands, descriptions)
            ),
        )
    else:
        spec = load_sensor(sensor)
        layout = _file_layout(path, dtype, n_file, descriptions, spec, bands, what)
    if bands is None:
        return layout, list(range(n_file))
    positions = []
    for b in bands:
        try:
            positions.append(layout.index(b))
        except SensorError as err:
            raise SensorError(
                f"{path}: band {b!r} is not among the {what}'s bands {list(layout.band_names)} "
                f"(sensor {layout.name!r})"
            ) from err
    return layout.select(bands), positions


def _file_layout(
    path: str | Path,
    dtype: Any,
    n_file: int,
    descriptions: Sequence[str | None],
    spec: Sensor,
    bands: Sequence[str] | None,
    what: str,
) -> Sensor:
    """The sensor describing the file's data bands in file order."""
    if descriptions and all(descriptions):
        try:
            described = spec.select([str(d) for d in descriptions])
        except SensorError:
            described = None
        if described is not None:
            return described
    if len(spec.bands) == n_file:
        return spec
    if bands is not None and len(bands) == n_file:
        return spec.select(bands)
    raise BandMismatchError(f"{path}: {band_count_mismatch(spec, n_file, what, str(dtype))}")


def example_band_names(spec: Sensor, count: int) -> list[str]:
    """``count`` band names for an example: the sensor's first names, then ``band_k``."""
    names = list(spec.band_names[:count])
    return names + [f"band_{k}" for k in range(len(names) + 1, count + 1)]


def band_count_mismatch(spec: Sensor, n_file: int, what: str = "file", dtype: str = "") -> str:
    """Why a raster with ``n_file`` bands does not fit ``spec``, and the fixes.

    The fixes are worded for the interface in use (:func:`dinogeo.errors.spell_option`).
    The ``bands`` example names as many bands as the raster has (the sensor's first names, then
    ``band_k``); shipped sensors of exactly that band count (and ``dtype``, when given) are
    offered as ``sensor`` choices.
    """
    names = example_band_names(spec, n_file)
    fits = [
        n
        for n, s in shipped_sensors().items()
        if len(s.bands) == n_file and (not dtype or s.dtype == dtype)
    ]
    choice = (
        f"; or a sensor of {n_file} bands: " + ", ".join(spell_option("sensor", n) for n in fits)
        if fits
        else ""
    )
    return (
        f"the {what} has {n_file} data bands (alpha excluded) but sensor {spec.name!r} has "
        f"{len(spec.bands)} ({', '.join(spec.band_names)}); name the {what}'s {n_file} bands in "
        f"order with {spell_option('bands', names)}{choice}; or a sensor YAML that describes the "
        f"{what} (start from `dinogeo sensors {spec.name}`)"
    )
