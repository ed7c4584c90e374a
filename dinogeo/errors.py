"""Exceptions raised by dinogeo.

Every exception derives from :class:`DinogeoError` and from the builtin that
best describes it, so callers can catch either. Messages name the file, the
problem and the fix.
"""

from __future__ import annotations

__all__ = [
    "BandMismatchError",
    "CheckpointError",
    "ConfigError",
    "DinogeoError",
    "LabelError",
    "NoValidDataError",
    "OutputExistsError",
    "RasterReadError",
    "SensorError",
]


class DinogeoError(Exception):
    """Root of all dinogeo errors."""


class SensorError(DinogeoError, ValueError):
    """Unknown sensor, unknown band name or an invalid sensor YAML."""


class BandMismatchError(DinogeoError, ValueError):
    """The raster's bands do not match the sensor spec or the weight card."""


class RasterReadError(DinogeoError, OSError):
    """A raster or zarr store cannot be opened, is corrupt or lacks georeferencing."""


class NoValidDataError(DinogeoError, ValueError):
    """A raster, archive or chip has no (or too few) valid pixels."""


class LabelError(DinogeoError, ValueError):
    """Labels are missing a CRS, do not overlap the imagery or use unknown classes."""


class CheckpointError(DinogeoError, ValueError):
    """A checkpoint or model bundle cannot be loaded or does not match the model."""


class OutputExistsError(DinogeoError, FileExistsError):
    """An output exists and ``overwrite`` was not requested."""


class ConfigError(DinogeoError, ValueError):
    """A configuration value is invalid."""
