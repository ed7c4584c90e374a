"""What a raster's file name and tags say about it: the sensor and the acquisition time.

Used by :mod:`dinogeo.data.index` for every scanned file; both functions are cheap (regular
expressions; the shipped sensor specs are loaded once per process).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime

__all__ = ["guess_sensor", "parse_datetime"]

#: (regex on the file name, sensor): first match wins; the band count must fit the sensor
_SENSOR_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"MSIL1C|S2[AB]?_?L1C|_L1C_", "sentinel2_l1c"),
    (r"MSIL2A|S2[AB]?_?L2A|_L2A_", "sentinel2_l2a"),
    (r"L[CO]0[89]_L2S[PR]|L[CO]0[89]_\w*_SR", "landsat89_oli_l2"),
    (r"L[CO]0?[89]_?L1[TG][PST]|L[CO][89]\d{13}LGN|LC0?8", "landsat89_oli_l1"),
    (r"LE0?7_L2S[PR]", "landsat7_etm_l2"),
    (r"LE0?7|lsat7|landsat7", "landsat7_etm"),
    (r"(?i)^m_\d{7}_(ne|nw|se|sw)_|naip", "naip"),
    (r"(?i)planetscope|_3B_AnalyticMS_SR|_AnalyticMS_SR", "planetscope_sr_4band"),
)


def guess_sensor(name: str, count: int, dtype: str, band_names: Sequence[str] = ()) -> str | None:
    """Guess the shipped sensor of a raster from its file name, band count, dtype and band names.

    Returns a sensor name only when a name pattern (Sentinel-2/Landsat product IDs, NAIP tiles...)
    or the band descriptions identify it and the band count and dtype fit; 3-band uint8 rasters
    default to ``rgb_uint8``. Otherwise None (readers then use a generic spec).
    """
    from dinogeo.data.sensors import shipped_sensors

    specs = shipped_sensors()

    def fits(sensor: str) -> bool:
        spec = specs.get(sensor)
        if spec is None or spec.dtype != str(dtype):
            return False
        if count == len(spec.bands):
            return True
        names = [n for n in band_names if n]
        return len(names) == count and all(any(b.matches(n) for b in spec.bands) for n in names)

    for pattern, sensor in _SENSOR_PATTERNS:
        if re.search(pattern, name) and fits(sensor):
            return sensor
    if count == 3 and str(dtype) == "uint8":
        return "rgb_uint8"
    return None


_NAME_TIMES: tuple[tuple[str, str], ...] = (
    (r"MSIL[12][AC]_(\d{8}T\d{6})", "%Y%m%dT%H%M%S"),  # Sentinel-2 product ID
    (r"L[COTEM]0\d_L[12][A-Z]{2}_\d{6}_(\d{8})_\d{8}_\d{2}_[A-Z0-9]{2}", "%Y%m%d"),  # Landsat
    (r"L[COTEM]\d\d{6}(\d{7})[A-Z]{3}\d{2}", "%Y%j"),  # Landsat scene ID: year + day of year
    (r"(?<!\d)((?:19|20)\d{2}-\d{2}-\d{2})(?!\d)", "%Y-%m-%d"),
    (r"(?<!\d)((?:19|20)\d{6}T\d{6})(?!\d)", "%Y%m%dT%H%M%S"),
    (r"(?<!\d)((?:19|20)\d{6})(?!\d)", "%Y%m%d"),
)


def parse_datetime(
    name: str, tags: dict[str, str], imagery_tags: dict[str, str]
) -> tuple[datetime | None, str | None]:
    """Acquisition time of a raster and where it came from (``"tag"``, ``"name"``, ``"tiff"``).

    Precedence: the ``ACQUISITIONDATETIME`` tag (IMAGERY domain), then the file name (Sentinel-2
    and Landsat product IDs, ``YYYY-MM-DD``, ``YYYYMMDD[THHMMSS]``), then ``TIFFTAG_DATETIME``
    (often the processing time). Times are UTC.
    """
    acq = imagery_tags.get("ACQUISITIONDATETIME") or tags.get("ACQUISITIONDATETIME")
    if acq:
        try:
            when = _utc(datetime.fromisoformat(acq.strip().replace("Z", "+00:00")))
        except ValueError:
            when = None
        if (
            when is not None and when.year > 1970
        ):  # GDAL reports 1970-01-01 when the time is unknown
            return when, "tag"
    for pattern, fmt in _NAME_TIMES:
        for match in re.finditer(pattern, name):
            try:
                return _utc(datetime.strptime(match.group(1), fmt)), "name"
            except ValueError:
                continue
    stamp = tags.get("TIFFTAG_DATETIME")
    if stamp:
        try:
            return _utc(datetime.strptime(stamp.strip(), "%Y:%m:%d %H:%M:%S")), "tiff"
        except ValueError:
            pass
    return None, None


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
