"""Convert a raster archive into one chunked zarr v3 store: the fast path for training.

Usage::

    from dinogeo.data.ingest import ingest, verify_store

    store = ingest("index.parquet", "archive.zarr", chunk=256)      # LocalCluster, 2 workers
    ingest(["scenes/*.tif"], "archive.zarr", scheduler="tcp://10.0.0.5:8786")  # existing cluster
    verify_store("archive.zarr")                                    # re-checks every block CRC

Layout (see :mod:`dinogeo.data.geozarr`): one group per raster holding ``data`` (band, y, x) in the
native dtype with chunks ``(bands, chunk, chunk)`` and a Blosc LZ4 + shuffle codec, a ``valid``
uint8 array when validity comes from an alpha band or an internal mask, CF/GeoZarr georeferencing
(``spatial_ref`` with ``crs_wkt`` and ``GeoTransform``, ``x``/``y`` coordinates) and explicit
``dinogeo`` attributes (transform, CRS, band names, nodata, sensor, source path).

Work is split into tasks of one chunk-row (a run of chunks across a row of the raster); dask runs
them on a LocalCluster (2 workers) by default, on an existing cluster given its address, or in
this process with ``scheduler="synchronous"``.

Resume: each raster has a ``_blocks`` array (one int64 per chunk, -1 until written). A task writes
its chunks, reads them back and compares them with the source pixels, then records each chunk's
CRC32 in ``_blocks``. A rerun skips tasks whose chunks all have a CRC, and the root attribute
``dinogeo.complete`` becomes true only once every chunk of every raster is written and verified.
:func:`verify_store` recomputes the CRCs from the store (and optionally re-reads the sources).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
import zarr
from rasterio.enums import ColorInterp
from rasterio.errors import RasterioError
from rasterio.windows import Window
from tqdm.auto import tqdm

from dinogeo.data.footprint import valid_decimated as _valid_decimated
from dinogeo.data.geozarr import FORMAT_VERSION, GeoInfo, create_raster_group
from dinogeo.errors import DinogeoError, NoValidDataError, OutputExistsError, RasterReadError

if TYPE_CHECKING:
    import geopandas as gpd
    from distributed import Client

__all__ = ["ingest", "verify_store"]

#: bytes of pixel data one task reads at most (a run of chunks along one chunk-row)
TASK_BYTES = 64 * 2**20

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Raster:
    """One source raster planned into one store group."""

    source: str
    group: str
    info: GeoInfo
    band_indexes: tuple[int, ...]
    alpha_index: int | None
    stamp: str


@dataclass(frozen=True)
class _Task:
    store: str
    raster: _Raster
    chunk: int
    row: int
    col0: int
    col1: int


def ingest(
    index_or_paths: gpd.GeoDataFrame | str | Path | Sequence[str | Path],
    store_path: str | Path,
    *,
    chunk: int = 256,
    scheduler: str | Client | None = None,
    overwrite: bool = False,
    progress: bool = True,
    workers: int = 2,
) -> Path:
    """Write every raster of an archive into one zarr v3 store (resumable, verified).

    Args:
        index_or_paths: a GeoDataFrame from :func:`dinogeo.data.index.build_index`, the path of an
            index written by ``dinogeo index``, or raster paths/globs (indexed first).
        store_path: the output ``.zarr`` folder.
        chunk: spatial chunk size in pixels (chunks are ``(bands, chunk, chunk)``).
        scheduler: None for a LocalCluster of ``workers`` processes; an address such as
            ``"tcp://host:8786"`` or a ``distributed.Client`` for an existing cluster;
            ``"synchronous"`` to run in this process.
        overwrite: delete an existing store first. Without it, an unfinished store written from
            the same inputs is resumed, a finished one is returned as is, and any other existing
            path raises :class:`OutputExistsError`.
        progress: show a progress bar (chunks written) and print a summary.
        workers: LocalCluster worker processes when ``scheduler`` is None.

    Returns:
        The store path.

    Raises:
        OutputExistsError: ``store_path`` exists and is not an unfinished store of these inputs.
        RasterReadError: some rasters could not be read or verified (the store stays unfinished;
            the message names them; rerun to retry after fixing them).
        NoValidDataError: the inputs hold no readable raster.
    """
    if chunk < 16:
        raise ValueError(f"chunk={chunk} is too small; use at least 16 (256 suits training chips)")
    store = Path(store_path).expanduser().absolute()
    rasters = _plan(index_or_paths, progress)
    fingerprint = _fingerprint(rasters, chunk)
    if _prepare_store(store, fingerprint, overwrite):
        if progress:
            print(f"{store}: already complete ({len(rasters)} rasters); nothing to do")
        return store
    _create_groups(store, rasters, chunk, fingerprint)
    tasks = list(_pending_tasks(store, rasters, chunk))
    total = sum(t.col1 - t.col0 for t in tasks)
    failures: dict[str, str] = {}
    with tqdm(total=total, unit="chunk", desc="ingest", disable=not progress) as bar:
        for task, result in _execute(tasks, scheduler, workers):
            if isinstance(result, str):
                failures.setdefault(task.raster.source, result)
            bar.update(task.col1 - task.col0)
    if failures:
        lines = "\n".join(f"  {src}: {why}" for src, why in sorted(failures.items()))
        raise RasterReadError(
            f"{store}: {len(failures)} raster(s) failed and the store is unfinished:\n{lines}\n"
            "fix or remove them from the index, then rerun the same command to resume"
        )
    _finish(store, rasters)
    if progress:
        pixels = sum(r.info.width * r.info.height for r in rasters)
        print(
            f"{store}: {len(rasters)} rasters, {pixels / 1e6:.1f} Mpx, {total} chunks written now; "
            "every chunk re-read and compared with its source; store complete"
        )
    return store


# ----------------------------------------------------------------------------- planning
def _plan(index_or_paths: Any, progress: bool) -> list[_Raster]:
    import geopandas as gpd

    from dinogeo.data.index import build_index, load_index

    if isinstance(index_or_paths, gpd.GeoDataFrame):
        index = index_or_paths
    elif isinstance(index_or_paths, str | Path) and Path(index_or_paths).suffix == ".parquet":
        index = load_index(index_or_paths)
    else:
        paths = [index_or_paths] if isinstance(index_or_paths, str | Path) else list(index_or_paths)
        index = build_index(paths, progress=progress)
    rasters: list[_Raster] = []
    used: set[str] = set()
    for row in index.itertuples(index=False):
        if getattr(row, "format", "") == "zarr":
            log.warning("%s is already in a zarr store; not copied", row.path)
            continue
        group = _group_name(Path(str(row.path)).stem, used)
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
        rasters.append(_Raster(str(row.path), group, info, bands, alpha, stamp))
    if not rasters:
        raise NoValidDataError(
            "nothing to ingest: the index holds no readable raster (see the skipped list of "
            "`dinogeo index`); pass GeoTIFF/COG/JP2/VRT files or an index that lists them"
        )
    return rasters


def _group_name(stem: str, used: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._") or "raster"
    if base.startswith("_"):
        base = "r" + base
    name, k = base, 2
    while name.lower() in used:
        name, k = f"{base}_{k}", k + 1
    used.add(name.lower())
    return name


def _fingerprint(rasters: Sequence[_Raster], chunk: int) -> str:
    h = hashlib.sha256(f"{FORMAT_VERSION}:{chunk}".encode())
    for r in rasters:
        h.update(f"\n{r.source}\t{r.group}\t{r.stamp}".encode())
    return h.hexdigest()


def _prepare_store(store: Path, fingerprint: str, overwrite: bool) -> bool:
    """Make ``store`` ready; return True when it is already complete for these inputs."""
    if not store.exists():
        return False
    meta = _root_meta(store)
    if overwrite:
        if not (store / "zarr.json").is_file():
            raise OutputExistsError(
                f"{store} exists and is not a zarr store; refusing to delete it even with "
                "overwrite: remove it yourself or choose another output path"
            )
        shutil.rmtree(store)
        return False
    if meta is None:
        raise OutputExistsError(
            f"{store} exists and is not a dinogeo store; choose another output path or pass "
            "overwrite=True (--overwrite)"
        )
    if meta.get("fingerprint") != fingerprint:
        raise OutputExistsError(
            f"{store} was written from other inputs or another chunk size; pass overwrite=True "
            "(--overwrite) to rewrite it, or choose another output path"
        )
    return bool(meta.get("complete"))


def _root_meta(store: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((store / "zarr.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    entry = (meta.get("attributes") or {}).get("dinogeo")
    return entry if isinstance(entry, dict) and "fingerprint" in entry else None


def _create_groups(store: Path, rasters: Sequence[_Raster], chunk: int, fingerprint: str) -> None:
    root: Any = zarr.open_group(store=str(store), mode="a")
    if "dinogeo" not in root.attrs:
        root.attrs["dinogeo"] = {
            "format": FORMAT_VERSION,
            "complete": False,
            "fingerprint": fingerprint,
            "chunk": chunk,
            "rasters": [r.group for r in rasters],
        }
    existing = set(root.group_keys())
    for r in rasters:
        if r.group in existing and "_blocks" in root[r.group]:
            continue
        _create_group(root, r, chunk)


def _create_group(root: Any, r: _Raster, chunk: int) -> None:
    info = r.info
    g = create_raster_group(root, r.group, info, chunk)
    rows, cols = _grid(info, chunk)
    per = _chunks_per_task(info, chunk)
    g.create_array(
        "_blocks",
        shape=(rows, cols),
        dtype="int64",
        chunks=(1, per),
        fill_value=-1,
        dimension_names=("block_y", "block_x"),
        attributes={
            "description": "CRC32 of each written chunk (data then valid bytes); -1 = not written"
        },
    )


def _grid(info: GeoInfo, chunk: int) -> tuple[int, int]:
    return -(-info.height // chunk), -(-info.width // chunk)


def _chunks_per_task(info: GeoInfo, chunk: int) -> int:
    one = info.count * chunk * chunk * np.dtype(info.dtype).itemsize
    return max(1, min(_grid(info, chunk)[1], TASK_BYTES // max(one, 1)))


def _pending_tasks(store: Path, rasters: Sequence[_Raster], chunk: int) -> Iterator[_Task]:
    root: Any = zarr.open_group(store=str(store), mode="r")
    for r in rasters:
        done = np.asarray(root[f"{r.group}/_blocks"][...])
        rows, cols = done.shape
        per = _chunks_per_task(r.info, chunk)
        for row in range(rows):
            for col0 in range(0, cols, per):
                col1 = min(cols, col0 + per)
                if (done[row, col0:col1] < 0).any():
                    yield _Task(str(store), r, chunk, row, col0, col1)


# ----------------------------------------------------------------------------- execution
def _execute(
    tasks: Sequence[_Task], scheduler: Any, workers: int
) -> Iterator[tuple[_Task, int | str]]:
    """Run tasks, yielding ``(task, chunks written)`` or ``(task, error message)``."""
    if scheduler == "synchronous":
        for task in tasks:
            yield task, _run_task(task)
        return
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is None:
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        client = Client(cluster)
    elif isinstance(scheduler, Client):
        client = scheduler
    elif isinstance(scheduler, str):
        client = Client(scheduler)
    else:
        raise ValueError(
            f"scheduler={scheduler!r}: pass None (local cluster), 'synchronous', a scheduler "
            "address such as 'tcp://host:8786', or a distributed.Client"
        )
    try:
        nthreads = max(1, sum(client.nthreads().values()))
        log.info("ingest on %s (%d threads)", client, nthreads)
        it = iter(tasks)
        futures = {client.submit(_run_task, t, pure=False): t for t in islice(it, 4 * nthreads)}
        queue = as_completed(list(futures))
        for fut in queue:
            task = futures.pop(fut)
            yield task, fut.result()
            nxt = next(it, None)
            if nxt is not None:
                new = client.submit(_run_task, nxt, pure=False)
                futures[new] = nxt
                queue.add(new)
    finally:
        if client is not scheduler:
            client.close()
        if cluster is not None:
            cluster.close()


def _run_task(task: _Task) -> int | str:
    """Copy one task; return the chunks written, or an error message for a bad source."""
    try:
        return _copy_task(task)
    except (DinogeoError, RasterioError, OSError, ValueError) as err:
        return f"{type(err).__name__}: {err}"


def _read_source(
    src: Any, bands: Sequence[int], alpha: int | None, mask: str, window: Window
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read the data bands, and the valid mask when it is stored as an array, of one window."""
    data = src.read(list(bands), window=window)
    valid = None
    if mask == "alpha" and alpha is not None:
        valid = (src.read(alpha, window=window) > 0).astype("uint8")
    elif mask == "internal":
        valid = (src.dataset_mask(window=window) > 0).astype("uint8")
    return data, valid


def _copy_task(task: _Task) -> int:
    r, ch = task.raster, task.chunk
    g: Any = zarr.open_group(store=task.store, path=r.group, mode="r+")
    data_arr, blocks = g["data"], g["_blocks"]
    valid_arr = g["valid"] if "valid" in g else None
    r0, r1 = task.row * ch, min((task.row + 1) * ch, r.info.height)
    c0, c1 = task.col0 * ch, min(task.col1 * ch, r.info.width)
    try:
        with rasterio.open(r.source) as src:
            window = Window(c0, r0, c1 - c0, r1 - r0)
            data, mask = _read_source(src, r.band_indexes, r.alpha_index, r.info.mask, window)
            if task.row == 0 and task.col0 == 0:  # one task per raster writes the coarse mask
                coarse = g["valid_coarse"]
                if r.info.mask == "none" and np.dtype(r.info.dtype).kind != "f":
                    coarse[...] = 1
                else:
                    bands = list(r.band_indexes)
                    shape = tuple(coarse.shape)
                    coarse[...] = _valid_decimated(src, bands, r.alpha_index, r.info.mask, shape)
    except RasterioError as err:
        raise RasterReadError(f"{r.source}: reading rows {r0}-{r1} failed ({err})") from err
    data_arr[:, r0:r1, c0:c1] = data
    if valid_arr is not None and mask is not None:
        valid_arr[r0:r1, c0:c1] = mask
    back = np.asarray(data_arr[:, r0:r1, c0:c1])
    back_mask = None if valid_arr is None else np.asarray(valid_arr[r0:r1, c0:c1])
    same = np.array_equal(back, data, equal_nan=data.dtype.kind == "f")
    if not same or (mask is not None and not np.array_equal(np.asarray(back_mask), mask)):
        raise RasterReadError(
            f"{task.store}/{r.group}: rows {r0}-{r1} read back differ from {r.source}; the disk "
            "may be full or failing: check it and rerun to resume"
        )
    crcs = [
        _crc(back, back_mask, (j - task.col0) * ch, min((j - task.col0 + 1) * ch, c1 - c0))
        for j in range(task.col0, task.col1)
    ]
    blocks[task.row, task.col0 : task.col1] = np.asarray(crcs, dtype="int64")
    return task.col1 - task.col0


def _crc(data: np.ndarray, mask: np.ndarray | None, x0: int, x1: int) -> int:
    crc = zlib.crc32(np.ascontiguousarray(data[:, :, x0:x1]).tobytes())
    if mask is not None:
        crc = zlib.crc32(np.ascontiguousarray(mask[:, x0:x1]).tobytes(), crc)
    return crc


def _finish(store: Path, rasters: Sequence[_Raster]) -> None:
    root: Any = zarr.open_group(store=str(store), mode="r+")
    for r in rasters:
        g = root[r.group]
        if (np.asarray(g["_blocks"][...]) < 0).any():
            raise RasterReadError(f"{store}/{r.group}: chunks are missing; rerun to resume")
        if not g.attrs.get("_dinogeo_done"):
            g.attrs["_dinogeo_done"] = True
    meta = dict(root.attrs["dinogeo"])
    meta["complete"] = True
    root.attrs["dinogeo"] = meta


# ----------------------------------------------------------------------------- verification
def verify_store(
    store_path: str | Path, *, sources: bool = False, progress: bool = False
) -> list[str]:
    """Recompute the CRC32 of every chunk of a store and compare with the ones recorded at ingest.

    Args:
        store_path: a store written by :func:`ingest`.
        sources: also re-read each source raster and compare pixels exactly.
        progress: show a progress bar.

    Returns:
        Problems found, one line each (empty when the store is intact).
    """
    store = Path(store_path).expanduser().absolute()
    root: Any = zarr.open_group(store=str(store), mode="r")
    meta = _root_meta(store)
    if meta is None:
        return [f"{store}: not a store written by dinogeo ingest (no dinogeo root attributes)"]
    problems = [] if meta.get("complete") else [f"{store}: unfinished; rerun dinogeo ingest"]
    ch = int(meta["chunk"])
    names: Iterable[str] = meta.get("rasters", [])
    for name in tqdm(list(names), desc="verify", disable=not progress):
        g = root[name]
        data, blocks = g["data"], np.asarray(g["_blocks"][...])
        valid = g["valid"] if "valid" in g else None
        ginfo = g.attrs["dinogeo"]
        source = ginfo.get("source") if isinstance(ginfo, dict) else None
        src = rasterio.open(source) if sources and source else None
        try:
            for i in range(blocks.shape[0]):
                r0, r1 = i * ch, min((i + 1) * ch, data.shape[1])
                d = np.asarray(data[:, r0:r1, :])
                m = None if valid is None else np.asarray(valid[r0:r1, :])
                for j in range(blocks.shape[1]):
                    x0, x1 = j * ch, min((j + 1) * ch, data.shape[2])
                    if blocks[i, j] != _crc(d, m, x0, x1):
                        problems.append(f"{store}/{name}: chunk ({i}, {j}) CRC mismatch")
                if src is not None:
                    kind = str(ginfo.get("mask", "none")) if isinstance(ginfo, dict) else "none"
                    problems += _compare_source(f"{store}/{name}", src, kind, d, m, r0, r1)
        finally:
            if src is not None:
                src.close()
    return problems


def _compare_source(
    where: str, src: Any, mask_kind: str, d: np.ndarray, m: np.ndarray | None, r0: int, r1: int
) -> list[str]:
    alpha = [i + 1 for i, c in enumerate(src.colorinterp) if c == ColorInterp.alpha]
    bands = [i for i in range(1, src.count + 1) if i not in alpha]
    window = Window(0, r0, d.shape[2], r1 - r0)
    data, mask = _read_source(src, bands, alpha[0] if alpha else None, mask_kind, window)
    same = np.array_equal(data, d, equal_nan=d.dtype.kind == "f")
    if not same or (m is not None and mask is not None and not np.array_equal(mask, m)):
        return [f"{where}: rows {r0}-{r1} differ from the source {src.name}"]
    return []
