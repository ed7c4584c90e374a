"""A training archive: the files of a folder, glob, list or index that fit one run, and the rest.

Real archives hold more than the imagery a run trains on: label rasters, masks, quicklooks,
scenes of other sensors, sidecars, broken downloads. :func:`scan_archive` reads every file's
header once (an index row instead of the file for ``dinogeo index`` archives) and sorts the files
into the ones the run reads and the ones it skips, each with its reason::

    archive = scan_archive(["archive/"], sensor="auto")       # or index="index.parquet"
    print(archive.report())          # the sensor, the files used, dates, what was skipped and why
    archive.write_skipped("run/skipped_files.csv")

The run's sensor is named (``sensor="sentinel2_l2a"``, a YAML path) or inferred
(``sensor="auto"``): a file is *decisive* for a shipped sensor when its name pattern says so
(:func:`~dinogeo.data.naming.guess_sensor`), or when that sensor is the only shipped one of its
dtype whose bands the file's band descriptions name or, without descriptions, whose band count
it has. The sensor with the most decisive files is the run's; files that fit another sensor, or
several sensors with the same bands but other scalings (a Sentinel-2 file described ``B02 B03 B04
B08``: L1C, L2A or x1000?), are skipped. No decisive file, or a tie, stops with the candidates.

Reading each file once and choosing the sensor is :mod:`dinogeo.data.archive_sensor`.
One run trains one sensor: files of other sensors are skipped and reported (their bands and
scaling differ; mapping them into one band set would train on bands the files do not have).
Train them in a run of their own, or carry a backbone over with ``dinogeo adapt``.

Multi-date archives: every dated file is a source of its own, so random chips are drawn across
the dates, each date's nodata / cloud mask deciding its valid pixels. The acquisition time of
each file (from its tags or name, :func:`~dinogeo.data.naming.parse_datetime`, or the index's
``datetime`` column) is kept in :attr:`Archive.datetimes` and summarised per place.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from dinogeo.data.archive_sensor import (
    ArchiveMember,
    choose_sensor,
    index_member,
    read_member,
    skip_reason,
    without_path,
)
from dinogeo.data.chips import ChipQuery
from dinogeo.data.imagery_spec import ImagerySpec
from dinogeo.data.index import load_index
from dinogeo.data.index_sources import index_footprints
from dinogeo.data.opener import open_source
from dinogeo.data.raster_paths import iter_raster_paths
from dinogeo.data.readers import RasterSource
from dinogeo.data.sensors import Sensor, load_sensor
from dinogeo.data.source import Source
from dinogeo.data.validity import Footprint, ValidityIndex
from dinogeo.errors import (
    BandMismatchError,
    NoValidDataError,
    RasterReadError,
    SensorError,
    SkippedFilesError,
    spell_option,
)

__all__ = [
    "AUTO",
    "Archive",
    "Skipped",
    "best_chip_fraction",
    "scan_archive",
]

#: the ``sensor`` value that asks for inference
AUTO = "auto"
#: most skipped files listed in the printed report (the CSV lists all)
REPORT_LINES = 12


@dataclass(frozen=True)
class Skipped:
    """A file of the archive the run does not read, and why."""

    path: str
    reason: str


@dataclass
class Archive:
    """The usable sources of an archive, the run's sensor and the skipped files.

    Attributes:
        sensor: the run's sensor (all bands; the run's band selection is applied when reading).
        sensor_origin: how the sensor was chosen (``"given"`` or ``"inferred from N of M files"``).
        sources: lazy sources of the usable files, in archive order.
        paths: their paths.
        footprints: indexed footprints (None where the file's mask is read instead).
        datetimes: acquisition time of each usable file, or None.
        skipped: the files not used, with their reasons.
    """

    sensor: Sensor
    sensor_origin: str
    sources: list[Source] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    footprints: list[Footprint | None] = field(default_factory=list)
    datetimes: list[datetime | None] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def dates_summary(self) -> str:
        """``"21 dates 2016-03-12 ... 2020-01-01 over 1 place"``, or ``""`` without dates."""
        dated = [(d, s) for d, s in zip(self.datetimes, self.sources, strict=True) if d]
        if not dated:
            return ""
        days = sorted({d.date() for d, _ in dated})
        places = {_place(s) for _, s in dated}
        span = f"{days[0]} ... {days[-1]}" if len(days) > 1 else f"{days[0]}"
        where = f"{len(places)} place" + ("s" if len(places) != 1 else "")
        return f"{len(days)} date{'s' if len(days) != 1 else ''} {span} over {where}"

    def report(self, csv_path: str | Path | None = None) -> str:
        """A short report: the sensor, the files used, their dates, the skipped files and why."""
        total = len(self.sources) + len(self.skipped)
        dates = self.dates_summary()
        lines = [
            f"archive: {len(self.sources)} of {total} files used, sensor {self.sensor.name} "
            f"({self.sensor_origin})" + (f"; {dates}" if dates else "")
        ]
        if self.skipped:
            reasons = Counter(_reason_kind(s.reason) for s in self.skipped)
            kinds = ", ".join(f"{n} {k}" for k, n in reasons.most_common())
            lines.append(f"skipped {len(self.skipped)} files ({kinds}):")
            lines += _grouped(self.skipped)
            if csv_path is not None:
                lines.append(f"  every skipped file and its reason: {csv_path}")
        return "\n".join(lines)

    def write_skipped(self, path: str | Path) -> Path:
        """Write the skipped files as a CSV (``path,reason``), atomically; returns ``path``."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        with tmp.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "reason"])
            writer.writerows((s.path, s.reason) for s in self.skipped)
        tmp.replace(out)
        return out


def _grouped(skipped: Sequence[Skipped]) -> list[str]:
    """One line per distinct reason (at most :data:`REPORT_LINES`): a file, how many more, why."""
    groups: dict[str, list[str]] = {}
    for s in skipped:
        groups.setdefault(s.reason, []).append(s.path)
    lines = []
    for reason, paths in list(groups.items())[:REPORT_LINES]:
        more = f" and {len(paths) - 1} more" if len(paths) > 1 else ""
        lines.append(f"  {Path(paths[0]).name}{more}: {reason}")
    if len(groups) > REPORT_LINES:
        rest = sum(len(p) for p in list(groups.values())[REPORT_LINES:])
        lines.append(f"  ... and {rest} more files with other reasons")
    return lines


def _reason_kind(reason: str) -> str:
    return reason.split(":", 1)[0].split(" (", 1)[0] if reason else "other"


def _place(source: Any) -> tuple[Any, ...]:
    bounds = getattr(source, "bounds", None)
    crs = getattr(source, "crs", None)
    key = tuple(round(float(v), 3) for v in bounds) if bounds is not None else ()
    return (str(crs), key)


def scan_archive(
    sources: Sequence[str | Path] | None = None,
    index: str | Path | None = None,
    sensor: str | Path | Sensor = AUTO,
    bands: Sequence[str] | None = None,
    *,
    scale: float | None = None,
    offset: float | None = None,
    strict: bool = False,
    chip_size: int | None = None,
    min_valid: float = 0.5,
) -> Archive:
    """Sort an archive's files into the run's sources and the skipped files.

    Args:
        sources: files, folders (walked recursively) and globs.
        index: a GeoParquet index from ``dinogeo index``: its rows are filtered by the sensor
            recorded or guessed there, without opening the files; the files it skipped are
            reported too.
        sensor: a shipped sensor name, a sensor YAML path, a :class:`Sensor`, or ``"auto"`` to
            infer it (see the module docstring).
        bands: the bands to read, in order (names or aliases of the sensor's bands; for files with
            fewer bands than the sensor, their bands in file order).
        scale: override the sensor's DN scale.
        offset: override the sensor's offset.
        strict: raise instead of skipping any file.
        chip_size: with ``min_valid``: files where no ``chip_size`` chip reaches ``min_valid``
            valid pixels (a cloudy date, a sliver, a small file) are skipped. The estimate uses
            the coarse valid mask the chip sampler uses: the index footprint, or a 64-px
            decimated read of files that mark nodata (files without a mask cost nothing).
        min_valid: the valid fraction a chip needs.

    Returns:
        The :class:`Archive`.

    Raises:
        NoValidDataError: nothing matched, or no file is usable (the message lists why).
        SkippedFilesError: ``strict`` and some files would be skipped.
        SensorError: ``sensor="auto"`` cannot decide (the candidates are listed), or a name in
            ``bands`` is not a band of the sensor.
    """
    members: list[ArchiveMember] = []
    index_skipped: list[Skipped] = []
    frame = None
    if index:
        frame = load_index(index)
        members += [index_member(r) for r in frame.itertuples(index=False)]
        index_skipped = [
            Skipped(str(s["path"]), f"unreadable (dinogeo index): {s['reason']}")
            for s in frame.attrs.get("skipped", [])
        ]
    if sources:
        paths = list(iter_raster_paths(list(sources)))
        if not paths and not members:
            raise NoValidDataError(
                f"no raster matched {spell_option('sources', [str(s) for s in sources])}: "
                "check the paths or globs (folders are searched recursively for GeoTIFF/COG, "
                "JPEG2000, VRT, zarr and world-file images)"
            )
        members += [read_member(p) for p in paths]
    readable = [m for m in members if m.problem is None]
    if not readable:
        unread = [Skipped(m.path, m.problem or "") for m in members] + index_skipped
        _finish(unread, 0, strict, None)
    # the sensor is kept apart: a name, a YAML path, a Sensor or "auto" (decided here)
    imagery = ImagerySpec(bands=bands, scale=scale, offset=offset)
    bands = imagery.band_list
    inferred = isinstance(sensor, str) and sensor == AUTO
    if inferred:
        name, origin = choose_sensor(readable)
        base = load_sensor(name)
    else:
        base, origin = load_sensor(sensor), "given"
    base = imagery.calibrated(base)
    if bands and len(bands) <= len(base.bands):
        _check_bands(base, bands)
    archive = Archive(sensor=base, sensor_origin=origin)
    by_path: dict[str, Footprint | None] = {}
    if frame is not None:
        by_path = dict(zip(frame["path"].astype(str), index_footprints(frame), strict=True))
    for m in members:
        reason = m.problem
        if reason is None and inferred:
            reason = skip_reason(m, base.name, inferred)
        elif reason is None and m.row is not None:
            recorded = m.row.sensor if isinstance(m.row.sensor, str) else ""
            if recorded and recorded != base.name:
                reason = f"other sensor: {recorded} in the index, the run's is {base.name}"
        if reason is None:
            reason = _open(m, archive, base, bands, (chip_size, min_valid), by_path)
        if reason is not None:
            archive.skipped.append(Skipped(m.path, reason))
    archive.skipped += index_skipped
    _finish(archive.skipped, len(archive.sources), strict, base)
    return archive


def _check_bands(base: Sensor, bands: Sequence[str]) -> None:
    try:
        base.select(list(bands))
    except SensorError as err:
        raise SensorError(
            f"{err}; the bands of sensor {base.name!r} are {list(base.band_names)}: choose from "
            f"them, e.g. {spell_option('bands', list(base.band_names))}, or drop the option to "
            "read them all"
        ) from err


def _open(
    m: ArchiveMember,
    archive: Archive,
    base: Sensor,
    bands: Sequence[str] | None,
    chip: tuple[int | None, float],
    footprints: dict[str, Footprint | None],
) -> str | None:
    """Open a member as a source of the run (appended to ``archive``), or say why not."""
    dtype = None
    if m.header is not None:
        dtype = m.header.dtypes[0]
    elif m.row is not None:
        dtype = m.row.dtype
    if dtype is not None and str(dtype) != base.dtype:
        return f"dtype {dtype}, sensor {base.name} stores {base.dtype}"
    try:
        if m.source is not None:
            source = open_source(m.path, sensor=base, bands=bands)
        elif m.row is not None:
            if m.row.format == "zarr":
                source = open_source(m.row.path, sensor=base, bands=bands)
            else:
                source = RasterSource.from_index_row(m.row, base, bands)
        else:
            source = RasterSource(m.path, base, bands, header=m.header)
    except (BandMismatchError, SensorError, RasterReadError) as err:
        return f"bands do not fit: {without_path(err, m.path)}"
    wanted = list(base.select(list(bands)).band_names if bands else base.band_names)
    if list(source.sensor.band_names) != wanted:
        have = list(source.sensor.band_names)
        return (
            f"bands do not fit: the file has {len(have)} of the run's {len(wanted)} bands "
            f"({' '.join(have)}); train on those with {spell_option('bands', have)}"
        )
    footprint = footprints.get(m.path)
    size, min_valid = chip
    if size is not None:
        best = best_chip_fraction(source, size, footprint)
        if best < min_valid:
            return (
                f"too little valid data: no {size}-px chip reaches the valid fraction {min_valid:g} "
                f"(best {best:.2f}; {source.width}x{source.height} px, clouds/nodata masked)"
            )
    archive.sources.append(source)
    archive.paths.append(m.path)
    archive.footprints.append(footprint)
    archive.datetimes.append(m.when)
    return None


def best_chip_fraction(source: Any, size: int, footprint: Footprint | None = None) -> float:
    """The highest estimated valid fraction of a ``size`` chip in ``source`` (coarse mask).

    Chips are tried every quarter chip (and at the far edges) on the coarse valid mask of
    :class:`~dinogeo.data.validity.ValidityIndex`, the estimate the chip sampler draws with.
    """
    validity = ValidityIndex([source], 64, [footprint] if footprint is not None else None)
    h, w = validity.shapes[0]
    step = max(1, size // 4)

    def offsets(n: int) -> list[int]:
        return sorted({*range(0, max(n - size, 0) + 1, step), max(n - size, 0)})

    return max(
        validity.chip_fraction(ChipQuery(0, r, c, size, size))
        for r in offsets(h)
        for c in offsets(w)
    )


def _finish(skipped: list[Skipped], used: int, strict: bool, base: Sensor | None) -> None:
    if strict and skipped:
        raise SkippedFilesError(
            f"strict: {len(skipped)} files do not fit the run:\n"
            + "\n".join(_grouped(skipped))
            + f"\nremove them from the sources, or drop {spell_option('strict', True)} to skip "
            "and report them"
        )
    if not used:
        raise NoValidDataError(
            f"no usable file among the {len(skipped)} of the archive"
            + (f" for sensor {base.name}" if base is not None else "")
            + ":\n"
            + "\n".join(_grouped(skipped))
        )
