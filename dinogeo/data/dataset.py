"""Chip datasets over raster/zarr sources, with a collate function, loader helper, torchgeo adapter.

* :class:`ChipDataset` is map-style and indexed by :class:`~dinogeo.data.chips.ChipQuery`
  (from :class:`~dinogeo.data.samplers.RandomChipSampler` or ``GridChipSampler``). It returns
  torchgeo-style sample dicts ``{"image", "valid", "crs", "bounds", "path"}``. Random chips whose
  valid fraction is below ``min_valid`` are rejected and redrawn deterministically (never
  zero-filled); grid chips are returned as they are, with their valid mask.
* :func:`dataloader` builds a DataLoader with the right collate function; sources reopen their
  file handles in each worker process.
* :class:`SourceGeoDataset` exposes the same sources as a :class:`torchgeo.datasets.GeoDataset`
  so torchgeo's samplers (``RandomGeoSampler``, ``GridGeoSampler``...) can query them.

Lightning: the samplers subclass ``DistributedSampler``, so ``Trainer(use_distributed_sampler=True)``
keeps them (and calls ``set_epoch``); pass them to :func:`dataloader` as ``sampler=``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
import pandas as pd
import rasterio.windows
import shapely
import torch
from geopandas import GeoDataFrame
from rasterio.coords import BoundingBox
from rasterio.windows import Window
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate, get_worker_info
from torchgeo.datasets import GeoDataset
from torchgeo.datasets.utils import GeoSlice

from dinogeo.data.chips import ChipQuery, redraw_chip
from dinogeo.data.sample_types import ChipBatch, ChipSample, GeoSample
from dinogeo.data.source import Source
from dinogeo.data.validity import ValidityIndex
from dinogeo.data.windowed import zero_invalid
from dinogeo.errors import NoValidDataError

__all__ = ["ChipDataset", "SourceGeoDataset", "collate_samples", "dataloader"]


class ChipDataset(Dataset[ChipSample]):
    """Chips read from a list of sources, addressed by :class:`ChipQuery`.

    Args:
        sources: RasterSource / ZarrSource objects (anything with ``read_normalized``).
        min_valid: random chips (``query.seed >= 0``) whose valid fraction is below this are
            redrawn in the same source.
        max_retries: redraws before giving up with :class:`NoValidDataError`.
        transforms: optional callable applied to each sample dict.
        queries: optional fixed list of queries, making ``dataset[i]`` (int) and ``len`` work.
        validity: coarse valid masks (e.g. ``sampler.validity``) to aim redraws at valid areas;
            computed lazily per source when omitted.
    """

    def __init__(
        self,
        sources: Sequence[Source],
        *,
        min_valid: float = 0.5,
        max_retries: int = 20,
        transforms: Callable[[ChipSample], ChipSample] | None = None,
        queries: Sequence[ChipQuery] | None = None,
        validity: ValidityIndex | None = None,
    ) -> None:
        if not sources:
            raise ValueError("ChipDataset needs at least one source")
        self.sources = list(sources)
        self.min_valid = float(min_valid)
        self.max_retries = int(max_retries)
        self.transforms = transforms
        self.queries = list(queries) if queries is not None else None
        self._coarse: dict[int, np.ndarray | None] = {}
        if validity is not None:
            self._coarse = dict(enumerate(validity.masks))

    def __len__(self) -> int:
        if self.queries is None:
            raise TypeError(
                "ChipDataset has no length without a fixed query list; iterate it through a "
                "RandomChipSampler or GridChipSampler, or pass queries="
            )
        return len(self.queries)

    def _coarse_mask(self, i: int) -> np.ndarray | None:
        if i not in self._coarse:
            fn = getattr(self.sources[i], "coarse_valid_mask", None)
            self._coarse[i] = fn(64) if fn is not None else None
        return self._coarse[i]

    def _query(self, index: ChipQuery | int) -> ChipQuery:
        if isinstance(index, ChipQuery):
            return index
        if isinstance(index, tuple):
            return ChipQuery(*index)
        if self.queries is not None:
            return self.queries[int(index)]
        raise TypeError(
            f"ChipDataset[{index!r}]: index with a ChipQuery from a dinogeo sampler, or build "
            "the dataset with queries= to index by position"
        )

    def read_raw_chip(self, query: ChipQuery) -> tuple[ChipQuery, np.ndarray, np.ndarray]:
        """Read a chip's raw DN, redrawing random chips until the valid fraction is reached.

        Returns:
            ``(query actually read, raw (C,h,w), valid (h,w) bool)``.

        Raises:
            NoValidDataError: if no acceptable chip was found in ``max_retries`` redraws.
        """
        src = self.sources[query.source]
        q = query
        for attempt in range(self.max_retries + 1):
            raw, valid = src.read(Window(q.col, q.row, q.width, q.height))
            if q.seed < 0 or valid.mean() >= self.min_valid:
                return q, raw, valid
            if attempt < self.max_retries:
                q = redraw_chip(
                    query, attempt, (src.height, src.width), self._coarse_mask(q.source)
                )
        raise NoValidDataError(
            f"{src.path}: no {query.height}x{query.width} chip with valid fraction >= "
            f"{self.min_valid} after {self.max_retries} redraws; the file is (almost) all nodata: "
            "drop it from the archive or lower min_valid"
        )

    def _read(
        self, query: ChipQuery, out: np.ndarray | None
    ) -> tuple[ChipQuery, np.ndarray, np.ndarray]:
        """Read and normalise a chip (into ``out`` when given): ``(query read, image, valid)``."""
        q, raw, valid = self.read_raw_chip(query)
        image = self.sources[q.source].sensor.normalize(raw, out=out)
        if not valid.all():
            zero_invalid(image, valid, raw.dtype)
        return q, image, valid

    def _finish(self, q: ChipQuery, image: torch.Tensor, valid: np.ndarray) -> ChipSample:
        src = self.sources[q.source]
        window = Window(q.col, q.row, q.width, q.height)
        sample: ChipSample = {
            "image": image,
            "valid": torch.from_numpy(valid),
            "crs": src.crs,
            "bounds": BoundingBox(*rasterio.windows.bounds(window, src.transform)),
            "path": str(src.path),
        }
        return self.transforms(sample) if self.transforms is not None else sample

    def __getitem__(self, index: ChipQuery | int) -> ChipSample:
        """Return the sample dict of a chip query (or of ``queries[index]`` for an int)."""
        q, image, valid = self._read(self._query(index), None)
        return self._finish(q, torch.from_numpy(image), valid)

    def __getitems__(self, indices: Sequence[ChipQuery | int]) -> list[ChipSample]:
        """Read a whole batch, normalising every chip straight into one batch tensor.

        The DataLoader calls this instead of ``__getitem__`` per chip. In a worker process the
        batch tensor lives in shared memory, so :func:`collate_samples` hands it over without
        the copy that stacking would make.
        """
        queries = [self._query(i) for i in indices]
        shapes = {(len(self.sources[q.source].sensor.bands), q.height, q.width) for q in queries}
        if len(shapes) != 1 or not queries:
            return [self[q] for q in queries]
        (c, h, w) = shapes.pop()
        numel = len(queries) * c * h * w
        if get_worker_info() is not None:
            storage = torch.UntypedStorage._new_shared(numel * 4)
            shape = (len(queries), c, h, w)
            batch = torch.empty(0, dtype=torch.float32).set_(storage, 0, shape, _strides(shape))
        else:
            batch = torch.empty((len(queries), c, h, w), dtype=torch.float32)
        arr = batch.numpy()
        read = [self._read(q, arr[k]) for k, q in enumerate(queries)]
        return [self._finish(q, batch[k], valid) for k, (q, _, valid) in enumerate(read)]


def _batch_view(tensors: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """The batch tensor that ``tensors`` are consecutive slots of, if they are (no copy)."""
    first = tensors[0]
    storage = first.untyped_storage()
    n = first.numel()
    for k, t in enumerate(tensors):
        if (
            t.untyped_storage().data_ptr() != storage.data_ptr()
            or t.shape != first.shape
            or t.dtype != first.dtype
            or not t.is_contiguous()
            or t.storage_offset() != first.storage_offset() + k * n
        ):
            return None
    shape = (len(tensors), *first.shape)
    return torch.empty(0, dtype=first.dtype).set_(
        storage, first.storage_offset(), shape, _strides(shape)
    )


def _strides(shape: Sequence[int]) -> tuple[int, ...]:
    """Element strides of a C-contiguous tensor of this shape."""
    strides = [1] * len(shape)
    for k in range(len(shape) - 2, -1, -1):
        strides[k] = strides[k + 1] * int(shape[k + 1])
    return tuple(strides)


def collate_samples(samples: Sequence[ChipSample]) -> ChipBatch:
    """Collate sample dicts: tensors are stacked, other values (CRS, bounds, path) kept as lists.

    Images that are consecutive slots of one batch tensor (see :meth:`ChipDataset.__getitems__`)
    are returned as that tensor without copying; other tensors go through ``default_collate``
    (which allocates in shared memory inside DataLoader workers).
    """
    out: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]  # type: ignore[literal-required]
        if isinstance(values[0], torch.Tensor):
            view = _batch_view(values)
            out[key] = view if view is not None else default_collate(values)
        else:
            out[key] = values
    return cast(ChipBatch, out)


def dataloader(
    dataset: Dataset[ChipSample],
    sampler: Sampler[Any],
    batch_size: int = 16,
    num_workers: int = 0,
    **kwargs: Any,
) -> DataLoader[ChipSample]:
    """Build a DataLoader for a chip dataset and one of the dinogeo samplers.

    Uses :func:`collate_samples` and persistent workers when ``num_workers > 0``; the sources
    reopen their handles in each worker. Extra keyword arguments go to ``DataLoader``.
    """
    kwargs.setdefault("collate_fn", collate_samples)
    if num_workers > 0:
        kwargs.setdefault("persistent_workers", True)
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, **kwargs
    )


class SourceGeoDataset(GeoDataset):
    """The sources as a torchgeo ``GeoDataset``, so torchgeo's samplers can query them.

    All sources must share one CRS (open them with ``target_crs=`` otherwise). Queries are
    torchgeo ``GeoSlice`` tuples ``[xmin:xmax:xres, ymin:ymax:yres, tmin:tmax]``; where sources
    overlap, the first valid pixel in source order wins. Samples follow torchgeo 0.10: all values
    are tensors (``image``, ``valid``, ``bounds``, ``transform``) so ``stack_samples`` collates
    them; the CRS is ``dataset.crs``.

    Args:
        sources: RasterSource / ZarrSource objects.
        res: query resolution (default: the first source's pixel size).
        transforms: optional callable applied to each sample.
    """

    def __init__(
        self,
        sources: Sequence[Source],
        res: float | tuple[float, float] | None = None,
        transforms: Callable[[GeoSample], GeoSample] | None = None,
    ) -> None:
        if not sources:
            raise ValueError("SourceGeoDataset needs at least one source")
        crs = sources[0].crs
        for s in sources[1:]:
            if s.crs != crs:
                raise ValueError(
                    f"{s.path} is in {s.crs} but {sources[0].path} in {crs}; torchgeo needs one "
                    "CRS: open the sources with open_source(..., target_crs=...)"
                )
        self.sources = list(sources)
        self.transforms = transforms
        self.paths = [str(s.path) for s in sources]
        geoms = [shapely.box(*s.bounds) for s in sources]
        interval = (pd.Timestamp.min, pd.Timestamp.max)
        index = pd.IntervalIndex.from_tuples(
            [interval] * len(sources), closed="both", name="datetime"
        )
        self.index = GeoDataFrame(
            {"source": range(len(sources))}, index=index, geometry=geoms, crs=crs.to_wkt()
        )
        if res is None:
            res = (float(sources[0].res[0]), float(sources[0].res[1]))
        if isinstance(res, (int, float)):
            self._res = (float(res), float(res))
        else:
            self._res = (float(res[0]), float(res[1]))

    def __getitem__(self, index: GeoSlice) -> GeoSample:  # type: ignore[override]
        """Read the area of a torchgeo query, mosaicking overlapping sources."""
        x, y, _ = self._disambiguate_slice(index)
        xres, yres = x.step or self._res[0], y.step or self._res[1]
        width = max(1, int(round((x.stop - x.start) / xres)))
        height = max(1, int(round((y.stop - y.start) / yres)))
        hits = self.index.cx[x.start : x.stop, y.start : y.stop]
        if hits.empty:
            raise IndexError(f"query {index} does not intersect any source: {self.bounds}")
        image: np.ndarray | None = None
        valid = np.zeros((height, width), dtype=bool)
        for i in hits["source"]:
            src = self.sources[int(i)]
            win = rasterio.windows.from_bounds(x.start, y.start, x.stop, y.stop, src.transform)
            part, pvalid = src.read_normalized(win)
            if part.shape[1:] != (height, width):  # another resolution: nearest resize
                ri = np.minimum(
                    (np.arange(height) + 0.5) * part.shape[1] / height, part.shape[1] - 1
                )
                ci = np.minimum((np.arange(width) + 0.5) * part.shape[2] / width, part.shape[2] - 1)
                part = part[:, ri.astype(int)][:, :, ci.astype(int)]
                pvalid = pvalid[ri.astype(int)][:, ci.astype(int)]
            if image is None:
                image = np.zeros((part.shape[0], height, width), dtype=np.float32)
            take = pvalid & ~valid
            image[:, take] = part[:, take]
            valid |= take
            if valid.all():
                break
        transform = rasterio.transform.from_origin(x.start, y.stop, xres, yres)
        sample: GeoSample = {
            "image": torch.from_numpy(image if image is not None else np.zeros((0, height, width))),
            "valid": torch.from_numpy(valid),
            "bounds": self._slice_to_tensor(index),
            "transform": torch.tensor(transform),
        }
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample
