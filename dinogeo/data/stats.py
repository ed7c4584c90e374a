"""Streaming per-band normalisation statistics of an archive.

Pixels are visited window by window and merged with Chan et al.'s parallel update of Welford's
running mean and sum of squared deviations, so memory stays constant whatever the archive size.
Statistics are computed in *reflectance* units (``DN * scale + offset`` of the sensor) over valid
pixels only (nodata, alpha, masks and NaN excluded), which is what :class:`Sensor` stores.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from rasterio.windows import Window
from tqdm.auto import tqdm

from dinogeo.data.opener import is_zarr_path, open_source
from dinogeo.data.sensors import Sensor
from dinogeo.data.source import Source
from dinogeo.errors import BandMismatchError, NoValidDataError

__all__ = ["RunningStats", "compute_stats", "open_archive", "sensor_with_stats"]


@dataclass
class RunningStats:
    """Per-band running count, mean and sum of squared deviations (M2), mergeable.

    Attributes:
        count: number of values seen (same for every band).
        mean: (C,) running mean.
        m2: (C,) running sum of squared deviations from the mean.
    """

    bands: int
    count: int = 0
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    m2: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        if self.mean.size == 0:
            self.mean = np.zeros(self.bands, dtype=np.float64)
            self.m2 = np.zeros(self.bands, dtype=np.float64)

    def update(self, values: np.ndarray) -> None:
        """Add a batch of values of shape (C, N)."""
        n = int(values.shape[1])
        if n == 0:
            return
        v = values.astype(np.float64, copy=False)
        b_mean = v.mean(axis=1)
        b_m2 = ((v - b_mean[:, None]) ** 2).sum(axis=1)
        self.merge(RunningStats(self.bands, n, b_mean, b_m2))

    def merge(self, other: RunningStats) -> None:
        """Merge another accumulator into this one (Chan et al. 1979)."""
        if other.count == 0:
            return
        if self.count == 0:
            self.count, self.mean, self.m2 = other.count, other.mean.copy(), other.m2.copy()
            return
        n = self.count + other.count
        delta = other.mean - self.mean
        self.mean = self.mean + delta * (other.count / n)
        self.m2 = self.m2 + other.m2 + delta**2 * (self.count * other.count / n)
        self.count = n

    @property
    def std(self) -> np.ndarray:
        """(C,) population standard deviation."""
        if self.count == 0:
            return np.full(self.bands, np.nan)
        return np.sqrt(self.m2 / self.count)


def open_archive(
    paths: Iterable[str | Path],
    sensor: str | Path | Sensor | None = None,
    bands: Sequence[str] | None = None,
) -> list[Source]:
    """Open files, folders (searched recursively for rasters) and zarr stores as sources.

    Args:
        paths: files, folders or zarr stores.
        sensor: sensor for every source (see :func:`~dinogeo.data.opener.open_source`).
        bands: band selection for every source.

    Returns:
        The sources, in sorted path order within each folder.
    """
    exts = {".tif", ".tiff", ".jp2", ".vrt", ".png", ".jpg", ".jpeg"}
    sources: list[Source] = []
    for p in map(Path, paths):
        if is_zarr_path(p):
            from dinogeo.data.zarr_source import open_zarr_store

            sources += open_zarr_store(p, sensor=sensor, bands=bands)
        elif p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.suffix.lower() in exts and f.is_file():
                    sources.append(open_source(f, sensor, bands))
        else:
            sources.append(open_source(p, sensor, bands))
    return sources


def _windows(width: int, height: int, size: int) -> list[Window]:
    return [
        Window(c, r, min(size, width - c), min(size, height - r))
        for r in range(0, height, size)
        for c in range(0, width, size)
    ]


def compute_stats(
    sources: Sequence[Source],
    *,
    window_size: int = 1024,
    progress: bool = True,
) -> RunningStats:
    """Stream per-band reflectance statistics over every valid pixel of the sources.

    Args:
        sources: RasterSource / ZarrSource objects with the same band count.
        window_size: side of the square windows read one at a time.
        progress: show a progress bar with ETA.

    Returns:
        The merged :class:`RunningStats` (reflectance units).

    Raises:
        BandMismatchError: if the sources differ in band count.
        NoValidDataError: if no valid pixel was found.
    """
    if not sources:
        raise NoValidDataError("no sources given: pass raster files, folders or zarr stores")
    n_bands = len(sources[0].sensor.bands)
    for s in sources:
        if len(s.sensor.bands) != n_bands:
            raise BandMismatchError(
                f"{s.path} has {len(s.sensor.bands)} bands but {sources[0].path} has {n_bands}; "
                "statistics need one band layout: pass --bands/--sensor or split the archive"
            )
    jobs = [(s, w) for s in sources for w in _windows(s.width, s.height, window_size)]
    stats = RunningStats(n_bands)
    bar = tqdm(jobs, desc="stats", unit="win", disable=not progress, dynamic_ncols=True)
    for src, win in bar:
        raw, valid = src.read(win)
        if not valid.any():
            continue
        refl = raw[:, valid].astype(np.float64) * src.sensor.scale + src.sensor.offset
        stats.update(refl)
    if stats.count == 0:
        raise NoValidDataError(
            f"no valid pixel in {len(sources)} sources (first: {sources[0].path}); check the "
            "nodata value, alpha band or mask of the files"
        )
    return stats


def sensor_with_stats(sensor: Sensor, stats: RunningStats, name: str | None = None) -> Sensor:
    """Return ``sensor`` with per-band mean/std replaced by ``stats`` (std floored at 1e-6).

    Args:
        sensor: the spec of the bands the statistics were computed on.
        stats: the statistics, in the sensor's band order.
        name: optional new name for the spec.
    """
    if stats.bands != len(sensor.bands):
        raise BandMismatchError(
            f"statistics of {stats.bands} bands do not fit sensor {sensor.name!r} "
            f"({len(sensor.bands)} bands)"
        )
    std = np.maximum(stats.std, 1e-6)
    bands = tuple(
        replace(b, mean=round(float(m), 6), std=round(float(s), 6))
        for b, m, s in zip(sensor.bands, stats.mean, std)
    )
    return replace(sensor, bands=bands, name=name or sensor.name)
