"""Planning an ingest: which rasters go into which store groups, and the tasks that copy them.

Each indexed raster becomes an :class:`IngestRaster` (its store group, georeferencing and the
stamp that says whether the file changed); its chunk grid is cut into :class:`IngestTask` s of
one chunk-row each (a run of chunks across a row of the raster, at most ``TASK_BYTES`` of pixels).
The store's ``_blocks`` arrays say which tasks are still to run (:func:`pending_tasks`).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from dinogeo.data.geozarr import FORMAT_VERSION, GeoInfo
from dinogeo.errors import NoValidDataError

__all__ = [
    "TASK_BYTES",
    "IngestRaster",
    "IngestTask",
    "chunk_grid",
    "chunks_per_task",
    "fingerprint_of",
    "pending_tasks",
    "plan_rasters",
]

#: bytes of pixel data one task reads at most (a run of chunks along one chunk-row)
TASK_BYTES = 64 * 2**20

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestRaster:
    """One source raster planned into one store group."""

    source: str
    group: str
    info: GeoInfo
    band_indexes: tuple[int, ...]
    alpha_index: int | None
    stamp: str


@dataclass(frozen=True)
class IngestTask:
    """One chunk-row of one raster: chunks ``col0:col1`` of chunk row ``row``."""

    store: str
    raster: IngestRaster
    chunk: int
    row: int
    col0: int
    col1: int


def plan_rasters(index_or_paths: Any, progress: bool) -> list[IngestRaster]:
    """The rasters of an index, an index file or paths (indexed first), each with its group.

    Raises:
        NoValidDataError: the inputs hold no readable raster (zarr rows are not copied).
    """
    import geopandas as gpd

    from dinogeo.data.index import build_index, load_index

    if isinstance(index_or_paths, gpd.GeoDataFrame):
        index = index_or_paths
    elif isinstance(index_or_paths, str | Path) and Path(index_or_paths).suffix == ".parquet":
        index = load_index(index_or_paths)
    else:
        paths = [index_or_paths] if isinstance(index_or_paths, str | Path) else list(index_or_paths)
        index = build_index(paths, progress=progress)
    rasters: list[IngestRaster] = []
    used: set[str] = set()
    for row in index.itertuples(index=False):
        if getattr(row, "format", "") == "zarr":
            log.warning("%s is already in a zarr store; not copied", row.path)
            continue
        group = group_name(Path(str(row.path)).stem, used)
        has_nodata = bool(row.has_nodata)
        info = GeoInfo(
            crs_wkt=str(row.native_crs_wkt),
            transform=tuple(float(v) for v in row.transform)[:6],  # type: ignore[arg-type]
            width=int(row.width),
            height=int(row.height),
            count=int(row.count),
            dtype=str(row.dtype),
            band_names=tuple(str(n) if n else "" for n in row.band_names),
            nodata=float(row.nodata) if has_nodata else None,
            mask=str(row.mask),
            sensor=row.sensor if isinstance(row.sensor, str) and row.sensor else None,
            source=str(row.path),
            footprint_wkt=None if row.geometry is None else row.geometry.wkt,
            valid_fraction=float(row.valid_fraction),
        )
        alpha = int(row.alpha_band) or None
        bands = tuple(i for i in range(1, info.count + (2 if alpha else 1)) if i != alpha)
        stamp = f"{int(row.size_bytes)}:{float(row.mtime)!r}"
        rasters.append(IngestRaster(str(row.path), group, info, bands, alpha, stamp))
    if not rasters:
        raise NoValidDataError(
            "nothing to ingest: the index holds no readable raster (see the skipped list of "
            "`dinogeo index`); pass GeoTIFF/COG/JP2/VRT files or an index that lists them"
        )
    return rasters


def group_name(stem: str, used: set[str]) -> str:
    """A store group name for a file stem: safe characters, unique (case-insensitively) in ``used``."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._") or "raster"
    if base.startswith("_"):
        base = "r" + base
    name, k = base, 2
    while name.lower() in used:
        name, k = f"{base}_{k}", k + 1
    used.add(name.lower())
    return name


def fingerprint_of(rasters: Sequence[IngestRaster], chunk: int) -> str:
    """The hash of the inputs and chunk size that a store was (or is being) written from."""
    h = hashlib.sha256(f"{FORMAT_VERSION}:{chunk}".encode())
    for r in rasters:
        h.update(f"\n{r.source}\t{r.group}\t{r.stamp}".encode())
    return h.hexdigest()


def chunk_grid(info: GeoInfo, chunk: int) -> tuple[int, int]:
    """Chunks ``(rows, cols)`` of a raster cut into ``chunk``-pixel squares."""
    return -(-info.height // chunk), -(-info.width // chunk)


def chunks_per_task(info: GeoInfo, chunk: int) -> int:
    """Chunks one task copies: as many of a chunk-row as fit in ``TASK_BYTES``."""
    one = info.count * chunk * chunk * np.dtype(info.dtype).itemsize
    return max(1, min(chunk_grid(info, chunk)[1], TASK_BYTES // max(one, 1)))


def pending_tasks(store: Path, rasters: Sequence[IngestRaster], chunk: int) -> Iterator[IngestTask]:
    """The tasks with a chunk not yet written (``-1`` in the group's ``_blocks``)."""
    root: Any = zarr.open_group(store=str(store), mode="r")
    for r in rasters:
        done = np.asarray(root[f"{r.group}/_blocks"][...])
        rows, cols = done.shape
        per = chunks_per_task(r.info, chunk)
        for row in range(rows):
            for col0 in range(0, cols, per):
                col1 = min(cols, col0 + per)
                if (done[row, col0:col1] < 0).any():
                    yield IngestTask(str(store), r, chunk, row, col0, col1)
