"""Scan a raster archive into a GeoParquet index: one row per raster, footprints in EPSG:4326.

Usage::

    from dinogeo.data.index import build_index, load_index, write_index
    from dinogeo.data.index_sources import index_footprints, open_index_sources

    index = build_index(["archive/", "more/**/*.jp2", "store.zarr"], workers=8)
    write_index(index, "index.parquet")          # + index.skipped.csv listing unreadable files
    sources = open_index_sources(load_index("index.parquet"))  # headers from the rows: no open
    sampler = RandomChipSampler(sources, 256, footprints=index_footprints(index))  # no file read

Inputs are files, folders (walked recursively) and globs, expanded once
(:mod:`dinogeo.data.raster_paths`); a zarr store gives one row per raster group. Each member becomes
rows as :mod:`dinogeo.data.index_rows` describes it; reading an index back into sources and
footprints is :mod:`dinogeo.data.index_sources`. Files are scanned in a thread pool with a bounded number in
flight, so a 100k-file archive costs one pass and constant extra memory per file.

Columns: ``path format native_crs native_crs_wkt transform minx miny maxx maxy res_x res_y width height count
alpha_band dtype has_nodata nodata mask band_names sensor datetime time_source valid_fraction
area_km2 size_bytes mtime geometry block_height block_width``. ``block_*`` is the storage grid
(GeoTIFF tile or strip, zarr chunk) that ``chip_align: auto`` snaps chips to (0 if unknown). ``count`` excludes an alpha band; ``mask`` says how validity
is known (``none``, ``nodata``, ``alpha``, ``internal``); ``geometry`` is the valid-data footprint
(polygonised from a decimated mask read, simplified) in EPSG:4326, the native bounds stay in
``minx..maxy``. Unreadable files are listed in ``index.attrs["skipped"]`` with the reason.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
from rasterio.errors import RasterioError
from tqdm.auto import tqdm

from dinogeo.data.index_rows import scan_path
from dinogeo.data.raster_paths import iter_raster_paths
from dinogeo.errors import RasterReadError

__all__ = ["build_index", "load_index", "summarize", "write_index"]


# ----------------------------------------------------------------------------- the archive
def build_index(
    paths_or_globs: Sequence[str | Path] | str | Path,
    *,
    sensor: str | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> gpd.GeoDataFrame:
    """Scan rasters and zarr stores into a GeoDataFrame (see the module docstring for columns).

    Args:
        paths_or_globs: files, folders (walked recursively) and glob patterns.
        sensor: sensor name recorded for every raster; default: guessed per file from its name,
            band count, dtype and band descriptions (None when unsure).
        workers: scanning threads (default: twice the CPU count, at most 16).
        progress: show a progress bar and print a summary to stderr.

    Returns:
        The index in EPSG:4326; ``index.attrs["skipped"]`` lists ``{"path", "reason"}`` of the
        files that could not be indexed. A bad file never stops the scan.
    """
    paths = list(iter_raster_paths(paths_or_globs))
    n_workers = workers or min(16, 2 * (os.cpu_count() or 1))
    rows: list[tuple[tuple[int, int], dict[str, Any]]] = []
    skipped: list[dict[str, str]] = []
    bar = tqdm(total=len(paths), unit="file", desc="index", disable=not progress)
    lock = threading.Lock()

    def done(i: int, path: Path, fut: Future[list[dict[str, Any]]]) -> None:
        try:
            result = fut.result()
        except (RasterReadError, RasterioError, OSError, ValueError) as err:
            with lock:
                skipped.append({"path": str(path), "reason": str(err)})
        else:
            with lock:
                rows.extend(((i, j), r) for j, r in enumerate(result))
        bar.update(1)

    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        pending: set[Future[Any]] = set()
        for i, path in enumerate(paths):
            fut = pool.submit(scan_path, path, sensor)
            fut.add_done_callback(functools.partial(_call_done, done, i, path))
            pending.add(fut)
            if len(pending) >= 4 * n_workers:
                _, pending = wait(pending, return_when=FIRST_COMPLETED)
        wait(pending)
    bar.close()
    rows.sort(key=lambda t: t[0])  # input order; a store keeps its own order
    index = _frame([r for _, r in rows])
    index.attrs["skipped"] = sorted(skipped, key=lambda s: s["path"])
    if progress:
        print(summarize(index), file=sys.stderr)
    return index


_COLUMNS = (
    "path format native_crs native_crs_wkt transform minx miny maxx maxy res_x res_y width height "
    "count alpha_band dtype has_nodata nodata mask band_names sensor datetime time_source "
    "valid_fraction area_km2 size_bytes mtime geometry"
).split()
#: columns added later: indexes written without them still load (the block is then unknown)
_LATER_COLUMNS = ["block_height", "block_width"]


def _call_done(done: Any, i: int, path: Path, fut: Future[Any]) -> None:
    done(i, path, fut)


def _frame(rows: list[dict[str, Any]]) -> gpd.GeoDataFrame:
    df = pd.DataFrame(rows, columns=_COLUMNS + _LATER_COLUMNS)
    df["datetime"] = pd.to_datetime(df["datetime"], utc=True)
    for col in ("width", "height", "count", "alpha_band", "size_bytes", *_LATER_COLUMNS):
        df[col] = df[col].astype("int64")
    return gpd.GeoDataFrame(df, geometry="geometry", crs="EPSG:4326")


def summarize(index: gpd.GeoDataFrame) -> str:
    """One paragraph: rasters indexed, CRSs, sensors, valid area and the skipped files."""
    skipped = index.attrs.get("skipped", [])
    lines = [
        f"indexed {len(index)} rasters ({index['native_crs'].nunique()} CRSs, "
        f"{index['sensor'].nunique()} sensors guessed), total valid area "
        f"{index['area_km2'].sum():.1f} km2; skipped {len(skipped)}"
    ]
    lines += [f"  skipped {s['path']}: {s['reason']}" for s in skipped[:50]]
    if len(skipped) > 50:
        lines.append(f"  ... and {len(skipped) - 50} more (see the skipped list)")
    return "\n".join(lines)


def _skipped_path(path: Path) -> Path:
    return path.with_name(path.stem + ".skipped.csv")


def write_index(index: gpd.GeoDataFrame, path: str | Path) -> Path:
    """Write the index as GeoParquet and its skipped files as ``<stem>.skipped.csv`` (atomically)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    index.to_parquet(tmp, index=False)
    skipped = pd.DataFrame(index.attrs.get("skipped", []), columns=["path", "reason"])
    stmp = out.with_name(f".{out.stem}.skipped.tmp")
    skipped.to_csv(stmp, index=False)
    tmp.replace(out)
    stmp.replace(_skipped_path(out))
    return out


def load_index(path: str | Path) -> gpd.GeoDataFrame:
    """Read an index written by :func:`write_index` (``skipped`` restored from the sidecar).

    Raises:
        RasterReadError: the file is missing, not GeoParquet, or lacks index columns.
    """
    p = Path(path)
    try:
        index = gpd.read_parquet(p)
    except (OSError, ValueError) as err:
        raise RasterReadError(
            f"{p}: cannot read the index ({err}); create it with `dinogeo index`"
        ) from err
    missing = [c for c in _COLUMNS if c not in index.columns]
    if missing:
        raise RasterReadError(
            f"{p}: not a dinogeo index (missing columns {missing}); create it with `dinogeo index`"
        )
    side = _skipped_path(p)
    index.attrs["skipped"] = (
        pd.read_csv(side).fillna("").to_dict("records")
        if side.is_file() and side.stat().st_size
        else []
    )
    return index
