"""The layout of a dinogeo zarr store: its root, its raster groups and their metadata.

A store written by :func:`dinogeo.data.ingest.ingest` is a zarr v3 folder: the root attributes
record the raster groups and whether the ingest finished; each raster group holds a ``data``
array ``(band, y, x)``, a ``valid`` array where validity is stored, a ``valid_coarse`` mask and
the georeferencing :mod:`dinogeo.data.geozarr` decodes. Metadata is read from the ``zarr.json``
files directly (no zarr import), so listing and describing a store is cheap.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

from dinogeo.data.geozarr import GeoInfo, decode_geoinfo
from dinogeo.errors import RasterReadError

__all__ = [
    "DATA",
    "VALID",
    "chunk_shape",
    "find_store_root",
    "list_store_rasters",
    "load_info",
    "read_json",
    "store_unfinished",
]

#: the pixel array of a raster group
DATA = "data"
#: the stored valid mask of a raster group (alpha band or internal mask at ingest)
VALID = "valid"


def find_store_root(path: str | Path) -> tuple[Path, str]:
    """Split a path inside a zarr store into ``(store root, group path)``.

    ``archive.zarr/S2_tile`` gives ``(archive.zarr, "S2_tile")``; the root is the top-most folder
    of an unbroken chain of folders holding ``zarr.json``.

    Raises:
        RasterReadError: if ``path`` is not inside a zarr v3 store.
    """
    p = Path(path).expanduser().absolute()
    if not (p / "zarr.json").is_file():
        raise RasterReadError(
            f"{p}: not a zarr v3 store or group (no zarr.json); pass a store written by "
            "`dinogeo ingest` or one of its raster groups (store.zarr/NAME)"
        )
    root = p
    while (root.parent / "zarr.json").is_file() and root.parent != root:
        root = root.parent
    return root, ("" if p == root else p.relative_to(root).as_posix())


def list_store_rasters(store: str | Path) -> list[str]:
    """Return the group paths of the rasters in a store (``""`` when the root itself is one).

    Uses the list recorded by ingest in the root attributes; otherwise walks the groups looking for
    a 3-D ``data`` array.
    """
    root = Path(store).expanduser().absolute()
    meta = read_json(root / "zarr.json")
    names = ((meta.get("attributes") or {}).get("dinogeo") or {}).get("rasters")
    if isinstance(names, list):
        return [str(n) for n in names]
    found: list[str] = []
    for dirpath, dirnames, _files in os.walk(root):
        d = Path(dirpath)
        if (d / DATA / "zarr.json").is_file():
            found.append(d.relative_to(root).as_posix() if d != root else "")
            dirnames.clear()
        elif not (d / "zarr.json").is_file():
            dirnames.clear()
    return sorted(found)


def read_json(path: Path) -> dict[str, Any]:
    """Read one ``zarr.json`` as a dict.

    Raises:
        RasterReadError: the file is missing, not JSON, or not a JSON object.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RasterReadError(
            f"{path}: cannot read zarr metadata ({err}); is this a complete zarr v3 store?"
        ) from err
    if not isinstance(data, dict):
        raise RasterReadError(f"{path}: zarr metadata is not a JSON object; the store is corrupt")
    return data


def store_unfinished(meta: Path) -> bool:
    """Whether the store's root marks an ingest in progress (parsed once per root version)."""
    try:
        st = meta.stat()
    except OSError:
        return False  # reported with a clear message when the metadata is read
    return _root_unfinished(str(meta), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=64)
def _root_unfinished(meta: str, mtime_ns: int, size: int) -> bool:
    entry = (read_json(Path(meta)).get("attributes") or {}).get("dinogeo")
    return isinstance(entry, dict) and entry.get("complete") is False


def load_info(store: Path, group: str) -> GeoInfo:
    """Decode the georeferencing and band metadata of one raster group.

    Raises:
        RasterReadError: the group is not a zarr group, lacks a ``data`` array, or its metadata
            cannot be decoded (the message says which).
    """
    where = f"{store}/{group}" if group else str(store)
    gdir = store / group if group else store
    gmeta = read_json(gdir / "zarr.json")
    if gmeta.get("node_type") != "group":
        raise RasterReadError(
            f"{where}: not a zarr group; pass the store or one of its raster groups"
        )
    dmeta_path = gdir / DATA / "zarr.json"
    if not dmeta_path.is_file():
        raise RasterReadError(
            f"{where}: no '{DATA}' array in this group; pass a raster group written by "
            f"`dinogeo ingest` (raster groups: {list_store_rasters(store)[:10]})"
        )
    dmeta = read_json(dmeta_path)
    if dmeta.get("node_type") != "array":
        raise RasterReadError(f"{where}/{DATA}: not a zarr array")
    dattrs = dmeta.get("attributes") or {}
    gm_name = dattrs.get("grid_mapping")
    gm_attrs: dict[str, Any] = {}
    if isinstance(gm_name, str) and (gdir / gm_name / "zarr.json").is_file():
        gm_attrs = read_json(gdir / gm_name / "zarr.json").get("attributes") or {}
    dtype = dmeta.get("data_type")
    if not isinstance(dtype, str):
        raise RasterReadError(f"{where}/{DATA}: unsupported data type {dtype!r}")
    return decode_geoinfo(
        gmeta.get("attributes") or {},
        shape=tuple(int(s) for s in dmeta.get("shape", ())),
        dtype=dtype,
        data_attrs=dattrs,
        grid_mapping_attrs=gm_attrs,
        where=where,
    )


def chunk_shape(meta: Path) -> tuple[int, int] | None:
    """The last two chunk dimensions of a regular-grid zarr array, from its ``zarr.json``."""
    grid = read_json(meta).get("chunk_grid") or {}
    shape = (grid.get("configuration") or {}).get("chunk_shape")
    if grid.get("name") != "regular" or not isinstance(shape, list) or len(shape) < 2:
        return None
    return int(shape[-2]), int(shape[-1])
