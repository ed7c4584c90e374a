"""``predict_raster`` / ``predict_change``: rasters of any size to seamless, styled COG predictions.

Python first: the functions run unchanged in a notebook, a script or a QGIS Processing script;
``dinogeo predict`` is a thin wrapper. For each input the raster is cut into overlapping windows
(:mod:`~dinogeo.inference.tiling`) grouped into 2-D output blocks with halos
(:mod:`~dinogeo.inference.blocks`); each block's windows are read ahead by background threads,
run through the model in batches, blended with smooth nodata-aware weights
(:mod:`~dinogeo.inference.blend`), cropped to the block and written block by block
(:mod:`~dinogeo.inference.writer`) into a COG next to a ``.qml`` style, a ``.aux.xml`` with
category names and statistics and, for classes, a styled GeoPackage of polygons
(:mod:`~dinogeo.inference.vectorize`). Memory depends on the tile, the block and the batch, not
on the raster size.

Under ``torch.distributed`` (several GPUs), blocks are shared out among ranks and rank 0 is the
only writer.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from dinogeo.errors import ConfigError
from dinogeo.inference.blocks import BlockGrid, read_cache_bytes, stream_blocks
from dinogeo.inference.distributed import gather_and_write, rank_and_world
from dinogeo.inference.encode import OutputSpec, make_output_spec
from dinogeo.inference.inputs import align_to, expand_inputs, open_for_card, window_reader
from dinogeo.inference.model import PredictModel, load_model, make_infer, model_hash
from dinogeo.inference.output_stats import (
    footprint_area_km2,
    merge_output_stats,
    merge_stats,
    strip_stats,
)
from dinogeo.inference.qgis import layout_for, write_styles
from dinogeo.inference.stream import StreamSpec
from dinogeo.inference.tiling import TileGrid, shard_strips
from dinogeo.inference.vectorize import (
    MIN_MAPPING_UNIT,
    check_min_mapping_unit,
    vectorize_classes,
)
from dinogeo.inference.writer import BlockWriter, check_output_path, gdal_cache, write_vrt
from dinogeo.models.task_card import TaskCard

__all__ = ["PredictModel", "PredictResult", "load_model", "predict_change", "predict_raster"]

#: seconds to sleep after every written block (test hook to interrupt a run mid-way)
_BLOCK_DELAY_ENV = "DINOGEO_TEST_BLOCK_DELAY"
#: default output block side in pixels
BLOCK = 2048


@dataclass
class PredictResult:
    """What a prediction wrote.

    Attributes:
        outputs: one COG per input (or per date pair).
        vectors: GeoPackages of polygons (classification tasks with vectorising on).
        styles: ``.qml`` styles written.
        mosaic: VRT mosaic of the outputs, when asked for.
        pixels: output pixels with a prediction (valid input).
        area_km2: area of those pixels.
        seconds: wall time.
    """

    outputs: list[Path] = field(default_factory=list)
    vectors: list[Path] = field(default_factory=list)
    styles: list[Path] = field(default_factory=list)
    mosaic: Path | None = None
    pixels: int = 0
    area_km2: float = 0.0
    seconds: float = 0.0

    @property
    def output(self) -> Path:
        """The output of a single-input prediction."""
        return self.outputs[0]

    @property
    def pixels_per_second(self) -> float:
        """Throughput in predicted pixels per second."""
        return self.pixels / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line for humans."""
        return (
            f"{len(self.outputs)} output(s), {self.pixels:,} px ({self.area_km2:,.2f} km2) in "
            f"{self.seconds:.1f} s ({self.pixels_per_second:,.0f} px/s)"
        )


def _file_id(path: Path) -> list[Any]:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def _validate(tile: int, overlap: int, batch_size: int, workers: int, patch: int) -> None:
    if tile <= 0 or tile % patch:
        raise ConfigError(f"tile {tile} must be a positive multiple of the patch size {patch}")
    if not 0 <= overlap < tile // 2 + 1:
        raise ConfigError(f"overlap {overlap} must be between 0 and half the tile ({tile // 2})")
    if batch_size <= 0 or workers < 0:
        raise ConfigError(f"batch_size ({batch_size}) must be > 0 and workers ({workers}) >= 0")


def _output_paths(inputs: list[Any], dst: Path, task: TaskCard) -> list[Path]:
    if len(inputs) == 1 and not dst.is_dir():
        return [dst]
    if dst.suffix.lower() in (".tif", ".tiff") and not dst.is_dir():
        raise ConfigError(
            f"{len(inputs)} inputs give {len(inputs)} outputs: pass an output folder, not {dst}"
        )
    dst.mkdir(parents=False, exist_ok=True)
    return [dst / f"{Path(p[0]).stem}_{task.name}.tif" for p in inputs]


def _predict_one(
    model: PredictModel,
    sources: list[Any],
    dst: Path,
    spec: OutputSpec,
    opts: dict[str, Any],
    bar: Any,
) -> tuple[int, dict[str, Any]]:
    """Predict one input (one source per date) into ``dst``; returns (valid pixels, stats)."""
    ref = sources[0]
    tile, overlap, block = opts["tile"], opts["overlap"], opts["block"]
    bgrid = BlockGrid(TileGrid(ref.height, ref.width, tile, overlap), block)
    rank, world = rank_and_world()
    params = {
        "format": 2,
        "model": opts["model_hash"],
        "inputs": [_file_id(Path(s.path)) for s in sources],
        "tile": tile,
        "overlap": overlap,
        "margin": opts["margin"],
        "block": block,
        "bands": spec.descriptions,
    }
    writer = None
    todo = list(range(len(bgrid)))
    if rank == 0:
        writer = BlockWriter(
            dst,
            crs=ref.crs,
            transform=ref.transform,
            width=ref.width,
            height=ref.height,
            pieces=[(b.row_off, b.col_off, b.height, b.width) for b in bgrid.blocks],
            layout=layout_for(spec),
            params=params,
            overwrite=opts["overwrite"],
            resume=opts["resume"],
        )
        todo = writer.todo
        done = set(range(len(bgrid))) - set(todo)
        bar.update(sum(bgrid.blocks[i].n_windows for i in done))
    if world > 1:
        box = [todo]
        torch.distributed.broadcast_object_list(box, src=0)
        todo = box[0]
        lo, hi = shard_strips(len(todo), world, rank)
        mine = todo[lo:hi]
    else:
        mine = todo
    stream = StreamSpec(
        channels=spec.channels,
        bands=spec.bands,
        dtype=spec.dtype,
        fill=spec.nodata,
        margin=opts["margin"],
        batch_size=opts["batch_size"],
        workers=opts["workers"],
    )
    infer = make_infer(model, opts["device"], spec.channels)
    delay = float(os.environ.get(_BLOCK_DELAY_ENV, "0") or 0)

    def computed() -> Iterator[tuple[int, np.ndarray, dict[str, Any]]]:
        blocks = [bgrid.blocks[i] for i in mine]
        for blk, data in stream_blocks(
            bgrid, blocks, lambda: window_reader(sources), infer, spec.finish, stream, bar.update
        ):
            yield blk.index, data, strip_stats(data[0], spec)

    try:
        if world == 1:
            for index, data, stats in computed():
                writer.write(index, data, stats)  # type: ignore[union-attr]
                if delay:
                    time.sleep(delay)
        else:
            gather_and_write(computed(), writer, len(todo), world)
        if rank != 0 or writer is None:
            return 0, {}
        stats = merge_stats(list(writer.done.values()), spec)
        writer.finish()
    except BaseException:
        if writer is not None and writer.abort():
            print(
                f"dinogeo: interrupted; finished blocks are kept in {writer.dir}: rerun with "
                "resume=True (--resume) to continue",
                file=sys.stderr,
            )
        raise
    return int(stats.get("count", 0)), stats


#: glibc's ``mallopt`` parameter of the mmap threshold
_M_MMAP_THRESHOLD = -3
#: allocations from this size up are mapped on their own while predicting (returned when freed)
MAPPED_ALLOCATION = 1 << 20


def map_large_allocations() -> bool:
    """Have glibc map every allocation of 1 MiB or more on its own, returned to the system when freed.

    glibc raises its mmap threshold to the size of each large block freed (up to 32 MiB), after
    which window batches, predictions, block buffers and polygon arrays of a few MiB are carved out
    of the heap and its per-thread arenas; interleaved with longer-lived allocations, the freed
    space fragments and peak memory grew with the number of blocks (8192^2 vs 2048^2: +129 MB with
    the dynamic threshold, +31 MB with it fixed at 1 MiB in ``bench/predict.py``). The setting is
    process-wide and stays (a fixed threshold turns the dynamic one off for good).

    Returns:
        Whether the threshold was set (glibc only; other C libraries are left alone).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, MAPPED_ALLOCATION))


@gdal_cache()  # opening and checking; prediction itself sizes the cache by its blocks
def _run(
    model: str | Path | PredictModel,
    inputs: list[list[Path]],
    dst: str | Path,
    *,
    tile: int,
    overlap: int,
    batch_size: int,
    device: str,
    workers: int,
    probabilities: bool,
    confidence: bool,
    overwrite: bool,
    resume: bool,
    progress: bool,
    vectorize: bool | None,
    mosaic: bool,
    block: int,
    min_mapping_unit: int,
) -> PredictResult:
    t0 = time.perf_counter()
    map_large_allocations()
    bundle = load_model(model, device)
    task = bundle.task
    patch = int(getattr(bundle.card, "patch_size", 1) or 1)
    _validate(tile, overlap, batch_size, workers, patch)
    check_min_mapping_unit(min_mapping_unit)
    n_dates = 2 if task.kind == "change" else 1
    if any(len(p) != n_dates for p in inputs):
        raise ConfigError(
            f"task {task.name!r} ({task.kind}) takes {n_dates} raster(s) per prediction: "
            + ("use predict_change(model, t1, t2, dst)" if n_dates == 2 else "use predict_raster")
        )
    spec = make_output_spec(task, probabilities=probabilities, confidence=confidence)
    outs = _output_paths(inputs, Path(dst), task)
    rank, _ = rank_and_world()
    # open and check everything before any work starts
    opened = []
    for paths, out in zip(inputs, outs, strict=True):
        srcs = [open_for_card(p, bundle.card) for p in paths]
        srcs = [srcs[0]] + [align_to(srcs[0], s) for s in srcs[1:]]
        if rank == 0 and not resume:
            check_output_path(out, overwrite=overwrite)
        if rank == 0 and task.is_classification and vectorize is not False:
            check_output_path(out.with_suffix(".gpkg"), overwrite=overwrite or resume)
        opened.append(srcs)
    opts = {
        "tile": tile,
        "overlap": overlap,
        "margin": overlap // 4,
        "block": block,
        "batch_size": batch_size,
        "workers": workers,
        "device": device,
        "overwrite": overwrite,
        "resume": resume,
        "model_hash": model_hash(bundle),
    }
    grids = [BlockGrid(TileGrid(s[0].height, s[0].width, tile, overlap), block) for s in opened]
    total = sum(g.n_windows for g in grids)
    result = PredictResult()
    all_stats: list[dict[str, Any]] = []
    do_vectors = task.is_classification if vectorize is None else vectorize
    with tqdm(total=total, unit="tile", disable=not progress or rank != 0, desc="predict") as bar:
        for srcs, out in zip(opened, outs, strict=True):
            cache = read_cache_bytes([s.source for s in srcs], tile, block)
            with gdal_cache(cache):
                pixels, stats = _predict_one(bundle, srcs, out, spec, opts, bar)
                if rank != 0:
                    continue
                result.outputs.append(out)
                result.pixels += pixels
                ref = srcs[0]
                result.area_km2 += footprint_area_km2(ref) * pixels / (ref.width * ref.height)
                result.styles += write_styles(out, spec, stats, pixels=ref.width * ref.height)
                all_stats.append(stats)
                if do_vectors and task.is_classification:
                    result.vectors.append(
                        vectorize_classes(
                            out,
                            task,
                            out.with_suffix(".gpkg"),
                            overwrite=True,
                            block=block,
                            min_mapping_unit=min_mapping_unit,
                        )
                    )
    if mosaic and rank == 0 and result.outputs:
        vrt = result.outputs[0].parent / f"{task.name}_mosaic.vrt"
        if vrt.exists() and not overwrite:
            check_output_path(vrt, overwrite=False)
        result.mosaic = write_vrt(vrt, result.outputs, layout_for(spec))
        result.styles += write_styles(vrt, spec, merge_output_stats(all_stats, spec), aux=False)
    result.seconds = time.perf_counter() - t0
    if progress and rank == 0:
        print(f"dinogeo predict: {result.summary()}", file=sys.stderr)
        for p in result.outputs + result.vectors + ([result.mosaic] if result.mosaic else []):
            print(f"  {p}", file=sys.stderr)
    return result


def predict_raster(
    model: str | Path | PredictModel,
    src: str | Path | Sequence[str | Path],
    dst: str | Path,
    *,
    tile: int = 512,
    overlap: int = 64,
    batch_size: int = 8,
    device: str = "cpu",
    workers: int = 2,
    probabilities: bool = False,
    confidence: bool = False,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    vectorize: bool | None = None,
    mosaic: bool = False,
    block: int = BLOCK,
    min_mapping_unit: int = MIN_MAPPING_UNIT,
) -> PredictResult:
    """Predict rasters with a model bundle into styled COGs, block by block in bounded memory.

    Args:
        model: a model bundle path (``dinogeo fit`` output) or a loaded bundle.
        src: a raster file, VRT, zarr store, folder, glob, or a list of them.
        dst: output COG for one input, or an output folder for several
            (``<stem>_<task>.tif`` each).
        tile: window side in pixels (a multiple of the model's patch size).
        overlap: overlap between windows in pixels, blended smoothly.
        batch_size: windows per model call.
        device: torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``...).
        workers: background reader threads (0 reads in the main thread).
        probabilities: add one probability band per class.
        confidence: add a band with the top class probability.
        overwrite: replace existing outputs.
        resume: continue an interrupted run, keeping its finished blocks.
        progress: show a progress bar and print a summary.
        vectorize: write a styled GeoPackage of class polygons next to each output (default:
            for segmentation and change tasks).
        mosaic: also write ``<task>_mosaic.vrt`` over the outputs.
        block: side of the square output blocks in pixels (at least the tile), the unit of
            computing, writing and resuming; memory grows with it, not with the raster size.
        min_mapping_unit: smallest polygon of the GeoPackage, in pixels: smaller regions are
            merged into their largest neighbour (GDAL sieve); 1 keeps every region. The raster
            keeps the per-pixel classes.

    Returns:
        A :class:`PredictResult` with the paths written and the throughput.

    Raises:
        OutputExistsError, BandMismatchError, RasterReadError, ConfigError: before any work.
    """
    paths = [[p] for p in expand_inputs(src)]
    return _run(
        model, paths, dst, tile=tile, overlap=overlap, batch_size=batch_size, device=device,
        workers=workers, probabilities=probabilities, confidence=confidence, overwrite=overwrite,
        resume=resume, progress=progress, vectorize=vectorize, mosaic=mosaic, block=block,
        min_mapping_unit=min_mapping_unit,
    )  # fmt: skip


def predict_change(
    model: str | Path | PredictModel,
    src_t1: str | Path,
    src_t2: str | Path,
    dst: str | Path,
    **kwargs: Any,
) -> PredictResult:
    """Predict change between two dates; date 2 is warped onto date 1's grid when they differ.

    Args:
        model: a change-detection model bundle (``predict_batch(t1, t2)``) or its path.
        src_t1: date 1 raster (its grid is the output grid).
        src_t2: date 2 raster.
        dst: output COG.
        **kwargs: the keyword options of :func:`predict_raster`.

    Returns:
        A :class:`PredictResult`.
    """
    t1, t2 = expand_inputs(src_t1), expand_inputs(src_t2)
    if len(t1) != 1 or len(t2) != 1:
        raise ConfigError(f"change detection takes one raster per date, got {t1} and {t2}")
    opts: dict[str, Any] = {
        "tile": 512, "overlap": 64, "batch_size": 8, "device": "cpu", "workers": 2,
        "probabilities": False, "confidence": False, "overwrite": False, "resume": False,
        "progress": True, "vectorize": None, "mosaic": False, "block": BLOCK,
        "min_mapping_unit": MIN_MAPPING_UNIT,
    }  # fmt: skip
    unknown = set(kwargs) - set(opts)
    if unknown:
        raise ConfigError(f"unknown option(s) {sorted(unknown)}; use {sorted(opts)}")
    opts.update(kwargs)
    return _run(model, [[t1[0], t2[0]]], dst, **opts)
