"""Copying one ingest task: read a chunk-row from the source, write it, read it back, record CRCs.

A task writes its chunks, reads them back and compares them with the source pixels, then records
each chunk's CRC32 in the group's ``_blocks`` array; only then does a rerun skip it. The first
task of a raster also writes the raster's ``valid_coarse`` mask.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import rasterio
import zarr
from rasterio.errors import RasterioError
from rasterio.windows import Window

from dinogeo.data.footprint import valid_decimated
from dinogeo.data.ingest_plan import IngestTask
from dinogeo.errors import DinogeoError, RasterReadError

__all__ = ["chunk_crc", "copy_task", "read_source", "run_task"]


def run_task(task: IngestTask) -> int | str:
    """Copy one task; return the chunks written, or an error message for a bad source."""
    try:
        return copy_task(task)
    except (DinogeoError, RasterioError, OSError, ValueError) as err:
        return f"{type(err).__name__}: {err}"


def read_source(
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


def copy_task(task: IngestTask) -> int:
    """Copy, read back and checksum one task's chunks; return how many were written.

    Raises:
        RasterReadError: the source cannot be read, or the chunks read back differ from it.
    """
    r, ch = task.raster, task.chunk
    g: Any = zarr.open_group(store=task.store, path=r.group, mode="r+")
    data_arr, blocks = g["data"], g["_blocks"]
    valid_arr = g["valid"] if "valid" in g else None
    r0, r1 = task.row * ch, min((task.row + 1) * ch, r.info.height)
    c0, c1 = task.col0 * ch, min(task.col1 * ch, r.info.width)
    try:
        with rasterio.open(r.source) as src:
            window = Window(c0, r0, c1 - c0, r1 - r0)
            data, mask = read_source(src, r.band_indexes, r.alpha_index, r.info.mask, window)
            if task.row == 0 and task.col0 == 0:  # one task per raster writes the coarse mask
                coarse = g["valid_coarse"]
                if r.info.mask == "none" and np.dtype(r.info.dtype).kind != "f":
                    coarse[...] = 1
                else:
                    bands = list(r.band_indexes)
                    shape = tuple(coarse.shape)
                    coarse[...] = valid_decimated(src, bands, r.alpha_index, r.info.mask, shape)
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
        chunk_crc(back, back_mask, (j - task.col0) * ch, min((j - task.col0 + 1) * ch, c1 - c0))
        for j in range(task.col0, task.col1)
    ]
    blocks[task.row, task.col0 : task.col1] = np.asarray(crcs, dtype="int64")
    return task.col1 - task.col0


def chunk_crc(data: np.ndarray, mask: np.ndarray | None, x0: int, x1: int) -> int:
    """CRC32 of columns ``x0:x1`` of a chunk-row's data (then its valid mask, when stored)."""
    crc = zlib.crc32(np.ascontiguousarray(data[:, :, x0:x1]).tobytes())
    if mask is not None:
        crc = zlib.crc32(np.ascontiguousarray(mask[:, x0:x1]).tobytes(), crc)
    return crc
