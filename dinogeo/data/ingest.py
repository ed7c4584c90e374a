"""Convert a raster archive into one chunked zarr v3 store: the fast path for training.

Usage::

    from dinogeo.data.ingest import ingest
    from dinogeo.data.store_verify import verify_store

    store = ingest("index.parquet", "archive.zarr", chunk=256)      # LocalCluster, 2 workers
    ingest(["scenes/*.tif"], "archive.zarr", scheduler="tcp://10.0.0.5:8786")  # existing cluster
    verify_store("archive.zarr")                                    # re-checks every block CRC

Layout (see :mod:`dinogeo.data.geozarr`): one group per raster holding ``data`` (band, y, x) in the
native dtype with chunks ``(bands, chunk, chunk)`` and a Blosc LZ4 + shuffle codec, a ``valid``
uint8 array when validity comes from an alpha band or an internal mask, CF/GeoZarr georeferencing
(``spatial_ref`` with ``crs_wkt`` and ``GeoTransform``, ``x``/``y`` coordinates) and explicit
``dinogeo`` attributes (transform, CRS, band names, nodata, sensor, source path).

Work is split into tasks of one chunk-row (a run of chunks across a row of the raster,
:mod:`dinogeo.data.ingest_plan`), each copied and checked by :mod:`dinogeo.data.ingest_copy`; dask
runs them (:mod:`dinogeo.data.ingest_cluster`) on a LocalCluster (2 workers) by default, on an
existing cluster given its address, or in this process with ``scheduler="synchronous"``. This
module runs an ingest and keeps the store's resume state.

Resume: each raster has a ``_blocks`` array (one int64 per chunk, -1 until written). A task writes
its chunks, reads them back and compares them with the source pixels, then records each chunk's
CRC32 in ``_blocks``. A rerun skips tasks whose chunks all have a CRC, and the root attribute
``dinogeo.complete`` becomes true only once every chunk of every raster is written and verified.
:func:`dinogeo.data.store_verify.verify_store` recomputes the CRCs from the store (and optionally
re-reads the sources).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
from tqdm.auto import tqdm

from dinogeo.data.geozarr import FORMAT_VERSION, create_raster_group
from dinogeo.data.ingest_cluster import execute_tasks
from dinogeo.data.ingest_plan import (
    IngestRaster,
    chunk_grid,
    chunks_per_task,
    fingerprint_of,
    pending_tasks,
    plan_rasters,
)
from dinogeo.errors import OutputExistsError, RasterReadError

if TYPE_CHECKING:
    import geopandas as gpd
    from distributed import Client

__all__ = ["ingest", "root_meta"]


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
    rasters = plan_rasters(index_or_paths, progress)
    fingerprint = fingerprint_of(rasters, chunk)
    if _prepare_store(store, fingerprint, overwrite):
        if progress:
            print(f"{store}: already complete ({len(rasters)} rasters); nothing to do")
        return store
    _create_groups(store, rasters, chunk, fingerprint)
    tasks = list(pending_tasks(store, rasters, chunk))
    total = sum(t.col1 - t.col0 for t in tasks)
    failures: dict[str, str] = {}
    with tqdm(total=total, unit="chunk", desc="ingest", disable=not progress) as bar:
        for task, result in execute_tasks(tasks, scheduler, workers):
            if isinstance(result, str):
                failures.setdefault(task.raster.source, result)
            bar.update(task.col1 - task.col0)
    if failures:
        lines = "\n".join(f"  {src}: {why}" for src, why in sorted(failures.items()))
        raise RasterReadError(
            f"{store}: {len(failures)} raster(s) failed and the store is unfinished:\n{lines}\n"
            "fix or remove them from the index, then rerun the same command to resume"
        )
    _finish_store(store, rasters)
    if progress:
        pixels = sum(r.info.width * r.info.height for r in rasters)
        print(
            f"{store}: {len(rasters)} rasters, {pixels / 1e6:.1f} Mpx, {total} chunks written now; "
            "every chunk re-read and compared with its source; store complete"
        )
    return store


# ----------------------------------------------------------------------------- resume state
def _prepare_store(store: Path, fingerprint: str, overwrite: bool) -> bool:
    """Make ``store`` ready; return True when it is already complete for these inputs."""
    if not store.exists():
        return False
    meta = root_meta(store)
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


def root_meta(store: Path) -> dict[str, Any] | None:
    """The ``dinogeo`` root attributes of a store ingest wrote, or None for any other path."""
    try:
        meta = json.loads((store / "zarr.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    entry = (meta.get("attributes") or {}).get("dinogeo")
    return entry if isinstance(entry, dict) and "fingerprint" in entry else None


def _create_groups(
    store: Path, rasters: Sequence[IngestRaster], chunk: int, fingerprint: str
) -> None:
    """Create the root attributes and each raster's group (kept when resuming)."""
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


def _create_group(root: Any, r: IngestRaster, chunk: int) -> None:
    info = r.info
    g = create_raster_group(root, r.group, info, chunk)
    rows, cols = chunk_grid(info, chunk)
    per = chunks_per_task(info, chunk)
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


def _finish_store(store: Path, rasters: Sequence[IngestRaster]) -> None:
    """Mark the store complete once every chunk of every raster is written and verified.

    Raises:
        RasterReadError: a raster still has chunks missing.
    """
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
