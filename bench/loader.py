"""Chip-loading throughput: raw rasterio vs torchgeo vs dinogeo (GeoTIFF and zarr).

Archive (built deterministically in bench/_work, reused when present):
  8 rasters of 2048 x 2048 px, 10 bands uint16 (B02 B03 B04 B05 B06 B07 B08 B8A B11 B12), nodata 0,
  tiled (256 x 256) DEFLATE (predictor 2) COGs with overviews, all real Sentinel-2 pixels:
  * s2_virginia_rot{0..3}.tif: the Virginia L1C 20 m 10-band crop (512 x 512, TOA x10000) with its
    bands reordered to the list above, rotated by k x 90 degrees, then mirror-tiled
    (numpy 'symmetric' padding) to 2048 x 2048.
  * s2_rufiji_<date>.tif: four Rufiji L2A dates (169 x 140, SR x1000; 2016-07-10, 2019-06-10,
    2019-08-09, 2018-07-25, the last two with masked clouds = nodata) multiplied by 10 (x10000,
    lossless) and mirror-tiled to 2048 x 2048.
  All rasters are placed side by side on the Virginia tile's grid (EPSG:32618, 20 m) so torchgeo
  reads every file without warping: pixel values are real, the mosaics' placement is not.

Measured (same for every method): 256 x 256 chips, all 10 bands, batch 16, DataLoader with
WORKERS worker processes, CHIPS chips after a 2-batch warm-up, GDAL_CACHEMAX=64 MB per process so
the 670 MB of decoded pixels cannot all sit in GDAL's block cache.
  (a) raw rasterio windowed reads (uint16, no transforms): the I/O bound;
  (b) torchgeo 0.10 RasterDataset + RandomGeoSampler, normalised float32 in a transform;
  (c) dinogeo RasterSource + RandomChipSampler + ChipDataset (normalised float32, valid mask);
  (d) dinogeo ZarrSource on the store written by dinogeo.data.ingest.ingest (chunk 256);
  (c256), (d256): (c) and (d) with RandomChipSampler(align=256), chips on the tile/chunk grid,
  so each chip decodes one tile instead of up to four (a different sampling from (a) and (b));
  (cauto), (dauto): (c) and (d) with the default ``chip_align: auto`` (grids resolved from each
  file's tiles / the store's chunks by dinogeo.data.chip_grid.chip_grids; its line is printed).
(a)-(d) all draw chips at any pixel offset. Each method runs --rounds times, interleaved, and
keeps its best; besides chips per wall-clock second the script prints chips per CPU-second of
the loading processes (main + workers), which is robust to other load on a shared machine.
Prints the ratios c/a, c/b, d/b (targets >= 0.8, >= 2, >= 4), and the same for (c256), (d256).

Run: .venv/bin/python bench/loader.py [--chips 320] [--workers 2] [--rounds 3]
"""

from __future__ import annotations

import os

os.environ.setdefault("GDAL_CACHEMAX", "64")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import rasterio  # noqa: E402
import torch  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402
from rasterio.windows import Window  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from dinogeo._paths import shared_data_dir  # noqa: E402
from dinogeo.data.sensors import load_sensor  # noqa: E402

WORK = Path(__file__).resolve().parent / "_work"
ARCHIVE = WORK / "archive"
STORE = WORK / "archive.zarr"
SIZE = 2048
CHIP = 256
BATCH = 16
BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]
VIRGINIA = "sentinel2-l1c-virginia-sattestdata/S2_18SVG_20160112_20m_10band_crop.tif"
RUFIJI = "sentinel2-timeseries-rufiji-rsgislib/SEN2_{}_T37MEM_20m_10band.tif"
RUFIJI_DATES = ["20160710", "20190610", "20190809", "20180725"]
SENSOR = load_sensor("sentinel2_l1c").select(BANDS)


# ----------------------------------------------------------------------------- archive


def _mirror(arr: np.ndarray) -> np.ndarray:
    _, h, w = arr.shape
    return np.pad(arr, ((0, 0), (0, SIZE - h), (0, SIZE - w)), mode="symmetric")


def _write(path: Path, data: np.ndarray, k: int, origin: tuple[float, float]) -> None:
    profile = {
        "driver": "COG",
        "width": SIZE,
        "height": SIZE,
        "count": data.shape[0],
        "dtype": "uint16",
        "nodata": 0,
        "crs": "EPSG:32618",
        "transform": from_origin(origin[0] + k * (SIZE + 64) * 20.0, origin[1], 20.0, 20.0),
        "compress": "DEFLATE",
        "predictor": 2,
        "blocksize": 256,
        "overview_resampling": "nearest",
    }
    tmp = path.with_suffix(".tmp.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = tuple(BANDS)
    tmp.replace(path)


def build_archive(shared: Path) -> list[Path]:
    ARCHIVE.mkdir(parents=True, exist_ok=True)
    with rasterio.open(shared / VIRGINIA) as src:
        order = [src.descriptions.index(b) + 1 for b in BANDS]
        virginia = src.read(order)
        origin = (src.transform.c, src.transform.f)
    paths = []
    for k in range(4):
        p = ARCHIVE / f"s2_virginia_rot{k}.tif"
        if not p.exists():
            _write(p, _mirror(np.ascontiguousarray(np.rot90(virginia, k, axes=(1, 2)))), k, origin)
        paths.append(p)
    for i, date in enumerate(RUFIJI_DATES):
        p = ARCHIVE / f"s2_rufiji_{date}.tif"
        if not p.exists():
            with rasterio.open(shared / RUFIJI.format(date)) as src:
                data = src.read().astype(np.uint16) * np.uint16(10)  # SR x1000 -> x10000
            _write(p, _mirror(data), 4 + i, origin)
        paths.append(p)
    return paths


def build_store(paths: list[Path]) -> Path:
    from dinogeo.data.ingest import ingest

    return ingest(
        [str(p) for p in paths], STORE, chunk=CHIP, scheduler="synchronous", progress=False
    )


# ----------------------------------------------------------------------------- (a) raw rasterio


class RawRasterio(Dataset):
    """Windowed rasterio reads at precomputed random positions, handles cached per worker."""

    def __init__(self, paths: list[Path], n: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.paths = [str(p) for p in paths]
        self.items = [
            (
                int(rng.integers(len(paths))),
                int(rng.integers(SIZE - CHIP)),
                int(rng.integers(SIZE - CHIP)),
            )
            for _ in range(n)
        ]
        self._handles: dict = {}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> torch.Tensor:
        f, r, c = self.items[i]
        key = (os.getpid(), f)
        ds = self._handles.get(key)
        if ds is None:
            ds = self._handles[key] = rasterio.open(self.paths[f])
        return torch.from_numpy(ds.read(window=Window(c, r, CHIP, CHIP)))


# ----------------------------------------------------------------------------- (b) torchgeo


def torchgeo_loader(paths: list[Path], n: int, workers: int) -> DataLoader:
    from torchgeo.datasets import RasterDataset, stack_samples
    from torchgeo.samplers import RandomGeoSampler

    class S2Archive(RasterDataset):
        filename_glob = "s2_*.tif"
        is_image = True
        separate_files = False
        all_bands = tuple(BANDS)

    # the efficient way to normalise in torch: precomputed per-band a, b and two in-place ops
    std = torch.tensor([b.std for b in SENSOR.bands]).view(-1, 1, 1)
    mean = torch.tensor([b.mean for b in SENSOR.bands]).view(-1, 1, 1)
    a = SENSOR.scale / std
    b = (SENSOR.offset - mean) / std

    def normalise(sample: dict) -> dict:
        sample["image"].mul_(a).add_(b)
        return sample

    ds = S2Archive(paths=[str(p.parent) for p in paths[:1]], transforms=normalise)
    sampler = RandomGeoSampler(ds, size=CHIP, length=n, generator=torch.Generator().manual_seed(0))
    return DataLoader(
        ds,
        batch_size=BATCH,
        sampler=sampler,
        num_workers=workers,
        collate_fn=stack_samples,
        persistent_workers=workers > 0,
    )


# ----------------------------------------------------------------------------- (c)/(d) dinogeo


def dinogeo_loader(sources: list, n: int, workers: int, align: int | list = 1) -> DataLoader:
    from dinogeo.data.dataset import ChipDataset, dataloader
    from dinogeo.data.samplers import RandomChipSampler

    sampler = RandomChipSampler(sources, CHIP, length=n, seed=0, min_valid=0.5, align=align)
    ds = ChipDataset(sources, min_valid=0.5, validity=sampler.validity)
    return dataloader(ds, sampler, batch_size=BATCH, num_workers=workers)


# ----------------------------------------------------------------------------- timing


def _cpu_seconds(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        t = psutil.Process(pid).cpu_times()
        total += t.user + t.system
    return total


def measure(loader: DataLoader, warmup: int = 2) -> tuple[float, float, dict]:
    """Return (chips per wall second, chips per CPU second of all processes, batch info)."""
    it = iter(loader)
    for _ in range(warmup):
        first = next(it)
    workers = getattr(it, "_workers", [])
    pids = [os.getpid()] + [w.pid for w in workers]
    count = 0
    c0 = _cpu_seconds(pids)
    t0 = time.perf_counter()
    for batch in it:
        image = batch["image"] if isinstance(batch, dict) else batch
        count += image.shape[0]
    dt = time.perf_counter() - t0
    cpu = _cpu_seconds(pids) - c0
    img = first["image"] if isinstance(first, dict) else first
    del it
    return count / dt, count / cpu, {"shape": tuple(img.shape), "dtype": str(img.dtype)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chips", type=int, default=320, help="chips timed per method")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers, all methods")
    parser.add_argument("--rounds", type=int, default=3, help="repeat and keep each best")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.set_num_threads(1)

    t0 = time.perf_counter()
    paths = build_archive(shared_data_dir())
    store = build_store(paths)
    print(
        f"archive: {len(paths)} x {SIZE}x{SIZE}x{len(BANDS)} uint16 COGs + zarr store "
        f"({time.perf_counter() - t0:.0f} s to build/verify), GDAL_CACHEMAX={os.environ['GDAL_CACHEMAX']} MB"
    )

    from dinogeo.data.opener import open_source
    from dinogeo.data.zarr_source import open_zarr_store

    n = args.chips + 2 * BATCH  # warm-up batches are not timed
    tif_sources = [open_source(p, SENSOR) for p in paths]
    zarr_sources = open_zarr_store(store, sensor=SENSOR)
    from dinogeo.data.chip_grid import chip_grids, describe_grids

    tif_auto = chip_grids(tif_sources, "auto")
    zarr_auto = chip_grids(zarr_sources, "auto")
    print("GeoTIFF " + describe_grids(tif_auto, tif_sources, CHIP))
    print("zarr " + describe_grids(zarr_auto, zarr_sources, CHIP))
    makers = {
        "a": lambda: DataLoader(
            RawRasterio(paths, n),
            batch_size=BATCH,
            shuffle=False,
            num_workers=args.workers,
            persistent_workers=args.workers > 0,
        ),
        "b": lambda: torchgeo_loader(paths, n, args.workers),
        "c": lambda: dinogeo_loader(tif_sources, n, args.workers),
        "d": lambda: dinogeo_loader(zarr_sources, n, args.workers),
        "c256": lambda: dinogeo_loader(tif_sources, n, args.workers, align=CHIP),
        "d256": lambda: dinogeo_loader(zarr_sources, n, args.workers, align=CHIP),
        "cauto": lambda: dinogeo_loader(tif_sources, n, args.workers, align=tif_auto),
        "dauto": lambda: dinogeo_loader(zarr_sources, n, args.workers, align=zarr_auto),
    }
    labels = {
        "a": "raw rasterio windowed reads (uint16, no transforms)",
        "b": "torchgeo RasterDataset + RandomGeoSampler (float32 normalised)",
        "c": "dinogeo RasterSource, GeoTIFF (float32 normalised + valid)",
        "d": "dinogeo ZarrSource, zarr store (float32 normalised + valid)",
        "c256": "(c) with chips aligned to the 256-px COG tiles (align=256)",
        "d256": "(d) with chips aligned to the 256-px zarr chunks (align=256)",
        "cauto": "(c) with the default chip_align: auto (snapped to the COG tiles)",
        "dauto": "(d) with the default chip_align: auto (snapped to the zarr chunks)",
    }
    best: dict[str, float] = {}
    best_cpu: dict[str, float] = {}
    for r in range(args.rounds):
        for key, make in makers.items():
            rate, per_cpu, info = measure(make())
            best[key] = max(best.get(key, 0.0), rate)
            best_cpu[key] = max(best_cpu.get(key, 0.0), per_cpu)
            print(
                f"round {r + 1} ({key}) {rate:7.1f} chips/s {per_cpu:7.1f} chips/cpu-s  "
                f"{info['shape']} {info['dtype']}"
            )
            sys.stdout.flush()
    print(f"\nbest of {args.rounds} rounds (chips/s; chips per CPU-second of loader + workers):")
    for key in labels:
        print(
            f"({key:>5}) {best[key]:7.1f} chips/s {best_cpu[key]:7.1f} chips/cpu-s  {labels[key]}"
        )
    print("random chips at any pixel offset (same sampling as (a) and (b)):")
    ratios = [("c", "a", 0.8), ("c", "b", 2), ("d", "b", 4)]
    ratios += [("c256", "a", 0.8), ("c256", "b", 2), ("d256", "b", 4)]
    ratios += [("cauto", "a", 0.8), ("cauto", "b", 2), ("dauto", "b", 4)]
    for num, den, target in ratios:
        if num == "c256" and den == "a":
            print("tile/chunk-aligned random chips (dinogeo align=256):")
        if num == "cauto" and den == "a":
            print("the default, chip_align: auto:")
        print(
            f"{num}/{den} = {best[num] / best[den]:.2f}  (per CPU-second "
            f"{best_cpu[num] / best_cpu[den]:.2f}; target >= {target})"
        )
    print(
        f"total {time.perf_counter() - t0:.0f} s, {args.workers} workers, batch {BATCH}, chip {CHIP}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
