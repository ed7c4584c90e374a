"""Which sensor an archive's files are: one file's header read once, and the run's sensor chosen.

Each file becomes an :class:`ArchiveMember` (its header, or its index row, its acquisition time
and the shipped sensors it may be, :func:`sensor_candidates`). :func:`choose_sensor` picks the
sensor with the most *decisive* files (files that fit one sensor only) and
:func:`skip_reason` says why a file does not fit the run's sensor. See
:mod:`dinogeo.data.archive` for how a run uses them.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rasterio.errors import RasterioError

from dinogeo.data.header import RasterHeader, open_dataset, read_header
from dinogeo.data.naming import guess_sensor, parse_datetime
from dinogeo.data.opener import is_zarr_path, open_source
from dinogeo.data.sensors import shipped_sensors
from dinogeo.errors import NoValidDataError, RasterReadError, SensorError, spell_option

__all__ = [
    "ArchiveMember",
    "choose_sensor",
    "index_member",
    "read_member",
    "sensor_candidates",
    "skip_reason",
    "without_path",
]

#: band descriptions that say nothing of the band (GDAL/KEA/ENVI defaults)
_GENERIC_DESCRIPTION = re.compile(r"(?i)^(band|layer|lyr|channel)[ _-]?\d+$")


def sensor_candidates(
    name: str, count: int, dtype: str, descriptions: Sequence[str | None] = ()
) -> list[str]:
    """The shipped sensors a raster may be, from its name, band count, dtype and descriptions.

    A name pattern (:func:`~dinogeo.data.naming.guess_sensor`) gives one sensor. Otherwise the
    sensors of the file's dtype whose bands its descriptions all name (when every band has a
    meaningful description), else those with exactly its band count.
    """
    guessed = guess_sensor(name, count, dtype, [d or "" for d in descriptions])
    if guessed is not None:
        return [guessed]
    specs = {n: s for n, s in shipped_sensors().items() if s.dtype == str(dtype)}
    named = [d for d in descriptions if d and not _GENERIC_DESCRIPTION.match(d)]
    if named and len(named) == count:
        described = [
            n for n, s in specs.items() if all(any(b.matches(d) for b in s.bands) for d in named)
        ]
        if described:
            return described
    return [n for n, s in specs.items() if len(s.bands) == count]


@dataclass
class ArchiveMember:
    """One file (or index row, or zarr store) of an archive, read once.

    Attributes:
        path: the file.
        header: its header, when the file was read.
        row: its index row, when it comes from an index.
        source: the opened source of a zarr store.
        candidates: the shipped sensors it may be.
        when: its acquisition time, or None.
        problem: why it cannot be read at all, or None.
    """

    path: str
    header: RasterHeader | None = None
    row: Any = None  # an index row
    source: Any = None  # an opened zarr source
    candidates: list[str] = field(default_factory=list)
    when: datetime | None = None
    problem: str | None = None


def read_member(path: Path) -> ArchiveMember:
    """Read one file's header (never raising: an unreadable file gets a ``problem``)."""
    member = ArchiveMember(os.path.normpath(path))
    try:
        if is_zarr_path(path):
            member.source = open_source(path)
            recorded = getattr(getattr(member.source, "info", None), "sensor", None)
            member.candidates = [recorded] if recorded else []
            return member
        with open_dataset(path) as ds:
            head = read_header(ds, path)
            member.when, _ = parse_datetime(path.name, ds.tags(), ds.tags(ns="IMAGERY"))
    except (RasterReadError, RasterioError, OSError) as err:
        member.problem = f"unreadable: {without_path(err, path)}"
        return member
    member.header = head
    if not head.data_indexes:
        member.problem = "only an alpha band, no data bands"
    elif len(set(head.dtypes)) > 1:
        member.problem = f"mixed band dtypes {sorted(set(head.dtypes))}"
    elif head.crs is None or not head.georeferenced:
        member.problem = (
            "no georeferencing (CRS or geotransform): assign one with gdal_edit.py -a_srs / "
            "-a_ullr, or add a world file and .prj"
        )
    else:
        member.candidates = sensor_candidates(
            path.name, len(head.data_indexes), head.dtypes[0], head.descriptions
        )
    return member


def index_member(row: Any) -> ArchiveMember:
    """A member from its ``dinogeo index`` row (the sensor recorded there, else guessed)."""
    member = ArchiveMember(str(row.path), row=row)
    recorded = row.sensor if isinstance(row.sensor, str) and row.sensor else None
    names = [str(n) for n in row.band_names] if row.band_names is not None else []
    member.candidates = (
        [recorded]
        if recorded
        else sensor_candidates(Path(row.path).name, int(row.count), str(row.dtype), names)
    )
    when = row.datetime
    member.when = None if when is None or when != when else when.to_pydatetime()
    return member


def without_path(err: BaseException, path: Path | str) -> str:
    """The error's message without the leading ``path:`` (the report names the file)."""
    text = str(err)
    prefix = f"{path}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def choose_sensor(members: list[ArchiveMember]) -> tuple[str, str]:
    """The inferred sensor name and how (``"inferred from N of M files"``).

    Raises:
        SensorError: no file names a sensor on its own, or two sensors tie.
    """
    decisive = Counter(m.candidates[0] for m in members if len(m.candidates) == 1)
    readable = [m for m in members if m.candidates]
    if not decisive:
        seen = Counter(c for m in readable for c in m.candidates)
        if not seen:
            raise NoValidDataError(
                f"no file of the {len(members)} fits a shipped sensor (`dinogeo sensors` lists "
                f"them): name the sensor with {spell_option('sensor', 'SENSOR_OR_YAML')} and the "
                f"files' bands with {spell_option('bands', ['B02', 'B03', '...'])}"
            )
        choices = ", ".join(f"{n} ({_files(k)})" for n, k in seen.most_common())
        raise SensorError(
            f"cannot infer the sensor: the files fit several shipped sensors with the same bands "
            f"but different scaling: {choices}; choose one with "
            f"{spell_option('sensor', seen.most_common(1)[0][0])}"
        )
    ranked = decisive.most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        tied = [n for n, k in ranked if k == ranked[0][1]]
        choices = ", ".join(f"{n} ({_files(ranked[0][1])})" for n in tied)
        raise SensorError(
            f"cannot infer the sensor: as many files fit each of {choices}; one run trains one "
            f"sensor: choose with {spell_option('sensor', tied[0])} (the other sensor's files "
            "are then skipped and reported)"
        )
    name, n = ranked[0]
    return name, f"inferred from {n} of {len(members)} readable files"


def _files(n: int) -> str:
    return f"{n} file" + ("" if n == 1 else "s")


def skip_reason(member: ArchiveMember, sensor: str, inferred: bool) -> str | None:
    """Why an inferred run skips a readable member (None: it fits)."""
    if member.candidates == [sensor]:
        return None
    if not member.candidates:
        head = member.header
        what = (
            f"{len(head.data_indexes)} band {head.dtypes[0]}"
            if head is not None
            else f"{member.row.count} band {member.row.dtype}"
            if member.row is not None
            else "store"
        )
        return f"fits no shipped sensor ({what}; a label, mask or other product?)"
    if sensor in member.candidates:
        return (
            f"ambiguous sensor: fits {', '.join(member.candidates)} (same bands, other scaling); "
            f"train it in a run that names its sensor, e.g. "
            f"{spell_option('sensor', member.candidates[0])}"
        )
    other = ", ".join(member.candidates)
    return (
        f"other sensor: {other}, the run's is {sensor}"
        + (" (inferred)" if inferred else "")
        + "; one run trains one sensor"
    )
