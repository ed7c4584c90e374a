"""Checking a store written by ingest: every chunk's CRC32 again, and optionally the sources.

:func:`verify_store` recomputes each chunk's CRC32 from the store and compares it with the one
recorded when the chunk was written and read back; with ``sources=True`` it also re-reads every
source raster and compares the pixels exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import zarr
from rasterio.enums import ColorInterp
from rasterio.windows import Window
from tqdm.auto import tqdm

from dinogeo.data.ingest import root_meta
from dinogeo.data.ingest_copy import chunk_crc, read_source

__all__ = ["verify_store"]


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
    meta = root_meta(store)
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
                    if blocks[i, j] != chunk_crc(d, m, x0, x1):
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
    data, mask = read_source(src, bands, alpha[0] if alpha else None, mask_kind, window)
    same = np.array_equal(data, d, equal_nan=d.dtype.kind == "f")
    if not same or (m is not None and mask is not None and not np.array_equal(mask, m)):
        return [f"{where}: rows {r0}-{r1} differ from the source {src.name}"]
    return []
