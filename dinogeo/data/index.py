"""Scan a raster archive into a GeoParquet index: one row per raster, footprints in EPSG:4326.

Usage::

    from dinogeo.data.index import build_index, write_index, load_index, open_index_sources

    index = build_index(["archive/", "more/**/*.jp2", "store.zarr"], workers=8)
    write_index(index, "index.parquet")          # + index.skipped.csv listing unreadable files
    sources = open_index_sources(load_index("index.parquet"))  # headers from the rows: no open
    sampler = RandomChipSampler(sources, 256, footprints=index_footprints(index))  # no file read

Inputs are files, folders (walked recursively) and globs, expanded once. Folders yield GeoTIFF/COG,
JPEG2000, VRT and ERDAS files, PNG/JPEG/GIF images that have a world file beside them, and zarr
stores (one row per raster group). Files are scanned in a thread pool with a bounded number in
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
import glob
import math
import os
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import rasterio.features
import rasterio.warp
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError, RasterioError
from rasterio.windows import Window
from shapely.geometry import box
from tqdm.auto import tqdm

from dinogeo.data.footprint import area_km2 as _area_km2
from dinogeo.data.footprint import footprint as _footprint
from dinogeo.data.footprint import to_4326 as _to_4326
from dinogeo.data.footprint import valid_decimated
from dinogeo.data.header import read_header, row_is_current
from dinogeo.data.naming import guess_sensor, parse_datetime
from dinogeo.data.sensors import Sensor
from dinogeo.data.source import Source
from dinogeo.data.validity import Footprint
from dinogeo.errors import RasterReadError

__all__ = [
    "build_index",
    "index_footprints",
    "iter_raster_paths",
    "load_index",
    "open_index_sources",
    "write_index",
]

RASTER_SUFFIXES = frozenset({".tif", ".tiff", ".jp2", ".j2k", ".vrt", ".img", ".ntf"})
#: plain images are archive members only with a world file beside them
WORLD_FILES = {
    ".png": (".pgw", ".pngw"),
    ".jpg": (".jgw", ".jpgw"),
    ".jpeg": (".jgw", ".jpegw"),
    ".gif": (".gfw", ".gifw"),
}
#: longest side of the decimated mask read used for footprints
FOOTPRINT_SIZE = 512


# ----------------------------------------------------------------------------- path expansion
def _has_world_file(path: Path) -> bool:
    sidecars = (*WORLD_FILES.get(path.suffix.lower(), ()), ".wld")
    return any(
        path.with_suffix(s).exists() or path.with_suffix(s.upper()).exists() for s in sidecars
    )


def _is_zarr_dir(path: Path) -> bool:
    return path.suffix.lower() == ".zarr" or (path / "zarr.json").is_file()


def _member(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix in RASTER_SUFFIXES:
        return True
    return suffix in WORLD_FILES and _has_world_file(path)


def _walk(folder: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(folder):
        d = Path(dirpath)
        zarrs = [n for n in dirnames if _is_zarr_dir(d / n)]
        dirnames[:] = sorted(n for n in dirnames if n not in zarrs and not n.startswith("."))
        for name in sorted(zarrs):
            yield d / name
        for name in sorted(filenames):
            if _member(d / name):
                yield d / name


def iter_raster_paths(paths_or_globs: Sequence[str | Path] | str | Path) -> Iterator[Path]:
    """Expand files, folders and globs into raster paths, once, without duplicates.

    Explicitly named files are always yielded (so an unreadable one is reported); files found by
    walking folders or globs are yielded when their suffix is a raster format, or when a plain
    image has a world file.
    """
    items = [paths_or_globs] if isinstance(paths_or_globs, str | Path) else list(paths_or_globs)
    seen: set[str] = set()
    for item in items:
        text = str(Path(item).expanduser())
        if glob.has_magic(text):
            candidates: Iterator[Path] = (Path(p) for p in sorted(glob.iglob(text, recursive=True)))
            explicit = False
        else:
            candidates = iter([Path(text)])
            explicit = True
        for cand in candidates:
            if cand.is_dir() and not _is_zarr_dir(cand):
                found: Iterator[Path] = _walk(cand)
            elif explicit or cand.is_dir() or _member(cand):
                found = iter([cand])
            else:
                continue
            for p in found:
                key = str(p.absolute())
                if key not in seen:
                    seen.add(key)
                    yield Path(key)


# ----------------------------------------------------------------------------- one raster
def _crs_label(crs: CRS) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def scan_raster(path: Path, sensor: str | None = None) -> dict[str, Any]:
    """Describe one raster file as an index row.

    Raises:
        RasterReadError: the file cannot be read, has no CRS or no geotransform (the message is
            the reason listed among the skipped files).
    """
    try:
        with rasterio.open(path) as ds:
            return _describe(path, ds, sensor)
    except RasterioError as err:
        raise RasterReadError(f"cannot be read as a raster: {err}") from err
    except CRSError as err:
        raise RasterReadError(
            f"invalid CRS ({err}); fix the .prj or assign one with gdal_edit.py -a_srs"
        ) from err


def _describe(path: Path, ds: Any, sensor: str | None) -> dict[str, Any]:
    head = read_header(ds, path)  # the header RasterSource.from_index_row rebuilds from the row
    crs = head.crs
    if crs is None:
        raise RasterReadError(
            "no CRS: assign one with 'gdal_edit.py -a_srs EPSG:XXXX FILE' (or add a .prj beside a "
            "world-file image)"
        )
    if ds.transform == Affine.identity():
        raise RasterReadError("no geotransform: add one with gdal_edit.py -a_ullr or a world file")
    data, alpha, mask = list(head.data_indexes), head.alpha, head.mask
    if not data:
        raise RasterReadError("only an alpha band, no data bands")
    dtypes = set(head.dtypes)
    if len(dtypes) > 1:
        raise RasterReadError(
            f"mixed band dtypes {sorted(dtypes)}; convert with gdal_translate -ot"
        )
    dtype = head.dtypes[0]
    if mask == "none" and np.dtype(dtype).kind != "f":
        valid = np.ones((1, 1), dtype=bool)
        # one pixel of the last block: catches truncated files without a full read
        ds.read(data[:1], window=Window(ds.width - 1, ds.height - 1, 1, 1))
    else:
        f = max(1, math.ceil(max(ds.width, ds.height) / FOOTPRINT_SIZE))
        shp = (max(1, math.ceil(ds.height / f)), max(1, math.ceil(ds.width / f)))
        valid = valid_decimated(ds, data, alpha, mask, shp)
    native = _footprint(valid, ds.transform, ds.width, ds.height)
    geom = _to_4326(native, crs)
    names = [d or "" for d in head.descriptions]
    when, time_source = parse_datetime(path.name, ds.tags(), ds.tags(ns="IMAGERY"))
    stat = path.stat()
    return {
        "path": str(path),
        "format": ds.driver,
        "native_crs": _crs_label(crs),
        "native_crs_wkt": crs.to_wkt(),
        "transform": [float(v) for v in tuple(ds.transform)[:6]],
        "minx": ds.bounds.left,
        "miny": ds.bounds.bottom,
        "maxx": ds.bounds.right,
        "maxy": ds.bounds.top,
        "res_x": float(abs(ds.res[0])),
        "res_y": float(abs(ds.res[1])),
        "width": ds.width,
        "height": ds.height,
        "count": len(data),
        "alpha_band": alpha or 0,
        "dtype": dtype,
        "has_nodata": head.nodata is not None,
        "nodata": float("nan") if head.nodata is None else head.nodata,
        "mask": mask,
        "band_names": names,
        "sensor": sensor or guess_sensor(path.name, len(data), dtype, names),
        "datetime": when,
        "time_source": time_source,
        "valid_fraction": float(valid.mean()),
        "area_km2": _area_km2(geom),
        "size_bytes": stat.st_size,
        "mtime": stat.st_mtime,
        "geometry": geom,
        "block_height": head.block[0] if head.block else 0,
        "block_width": head.block[1] if head.block else 0,
    }


def scan_zarr(path: Path, sensor: str | None = None) -> list[dict[str, Any]]:
    """Describe every raster group of a zarr store as index rows."""
    from dinogeo.data.zarr_source import open_zarr_store

    rows = []
    for src in open_zarr_store(path):
        info = src.info
        if info.footprint_wkt:
            geom = shapely.from_wkt(info.footprint_wkt)
        else:
            geom = _to_4326(box(*src.bounds), src.crs)
        when, time_source = parse_datetime(Path(info.source or src.group).name, {}, {})
        t = info.transform
        meta = src.path / "zarr.json"
        rows.append(
            {
                "path": str(src.path),
                "format": "zarr",
                "native_crs": _crs_label(src.crs),
                "native_crs_wkt": info.crs_wkt,
                "transform": [float(v) for v in t],
                "minx": src.bounds.left,
                "miny": src.bounds.bottom,
                "maxx": src.bounds.right,
                "maxy": src.bounds.top,
                "res_x": float(math.hypot(t[0], t[3])),
                "res_y": float(math.hypot(t[1], t[4])),
                "width": info.width,
                "height": info.height,
                "count": info.count,
                "alpha_band": 0,
                "dtype": info.dtype,
                "has_nodata": info.nodata is not None,
                "nodata": float("nan") if info.nodata is None else float(info.nodata),
                "mask": info.mask,
                "band_names": list(info.band_names),
                "sensor": sensor or info.sensor,
                "datetime": when,
                "time_source": time_source,
                "valid_fraction": 1.0 if info.valid_fraction is None else info.valid_fraction,
                "area_km2": _area_km2(geom),
                "size_bytes": meta.stat().st_size,
                "mtime": meta.stat().st_mtime,
                "geometry": geom,
                "block_height": src.storage_block[0] if src.storage_block else 0,
                "block_width": src.storage_block[1] if src.storage_block else 0,
            }
        )
    return rows


def _scan(path: Path, sensor: str | None) -> list[dict[str, Any]]:
    if path.is_dir():
        return scan_zarr(path, sensor)
    if not path.exists():
        raise RasterReadError("no such file")
    return [scan_raster(path, sensor)]


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
            fut = pool.submit(_scan, path, sensor)
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


def open_index_sources(
    index: gpd.GeoDataFrame | str | Path,
    sensor: str | Path | Sensor | None = None,
    bands: Sequence[str] | None = None,
    *,
    check_files: bool = True,
) -> list[Source]:
    """Lazy sources of every indexed raster, built from the index without opening the files.

    Raster rows become :meth:`RasterSource.from_index_row <dinogeo.data.readers.RasterSource>`
    sources (each file opens on its first read); zarr rows are opened with
    :func:`~dinogeo.data.opener.open_source` (their stores' metadata).

    Args:
        index: an index or the path of one.
        sensor: sensor for every raster; default: each row's ``sensor`` column (generic if empty).
        bands: band names to read.
        check_files: compare each file's size and mtime with the index (a ``stat``, no open); a
            changed file's header is read from the file, with one warning for all of them.

    Raises:
        RasterReadError: an indexed file vanished, or a changed one is no longer readable.
    """
    from dinogeo.data.opener import open_source
    from dinogeo.data.readers import RasterSource
    from dinogeo.data.sensors import load_sensor

    frame = index if isinstance(index, gpd.GeoDataFrame) else load_index(index)
    specs: dict[str, Any] = {}  # each sensor is loaded once, not once per row
    rows = list(frame.itertuples(index=False))
    stale = [
        i
        for i, r in enumerate(rows)
        if check_files and r.format != "zarr" and not row_is_current(r)
    ]
    if stale:  # before opening them: a changed file may no longer fit its row's sensor
        names = ", ".join(str(rows[i].path) for i in stale[:3])
        more = f" and {len(stale) - 3} more" if len(stale) > 3 else ""
        warnings.warn(
            f"{len(stale)} of {len(rows)} indexed files changed since indexing ({names}{more}); "
            "their headers are read from the files: re-run `dinogeo index` to refresh the index",
            stacklevel=2,
        )
    out: list[Source] = []
    reopen = set(stale)
    for i, row in enumerate(rows):
        name = row.sensor if isinstance(row.sensor, str) and row.sensor else None
        spec = sensor if sensor is not None else name
        if spec is not None and not isinstance(spec, Sensor):
            if str(spec) not in specs:
                specs[str(spec)] = load_sensor(spec)
            spec = specs[str(spec)]
        if row.format == "zarr":
            out.append(open_source(row.path, sensor=spec, bands=bands))
        elif i in reopen:
            out.append(RasterSource(row.path, spec, bands))
        else:
            out.append(RasterSource.from_index_row(row, spec, bands, check_file=False))
    return out


def index_footprints(
    index: gpd.GeoDataFrame | str | Path, *, check_files: bool = True
) -> list[Footprint | None]:
    """Footprints for ``RandomChipSampler(..., footprints=)``: masks without reading every file.

    Args:
        index: an index or the path of one.
        check_files: compare each file's size and mtime with the index (a ``stat``, no open); a
            changed or missing file gets None, so its mask is read.

    Returns:
        One :class:`Footprint` (EPSG:4326) per row, in the order of
        :func:`~dinogeo.data.index.open_index_sources`, or None for zarr rows (their stores keep
        a coarse valid mask), rows without a geometry and changed files.
    """
    frame = index if not isinstance(index, str | Path) else load_index(index)
    out: list[Footprint | None] = []
    stale = 0
    for row in frame.itertuples(index=False):
        usable = row.format != "zarr" and row.geometry is not None
        if usable and check_files and not row_is_current(row):
            usable, stale = False, stale + 1
        nodata = float(row.nodata) if row.has_nodata else None
        full = bool(row.valid_fraction >= 1.0)
        fp = Footprint(row.geometry, "EPSG:4326", str(row.mask), nodata, full)
        out.append(fp if usable else None)
    if stale:
        warnings.warn(
            f"{stale} of {len(frame)} indexed files changed or vanished since indexing; their "
            "valid masks are read from the files: re-run `dinogeo index` to refresh the index",
            stacklevel=2,
        )
    return out
