"""Benchmark of ``predict_raster``: end-to-end vs model-only throughput, and peak RSS vs raster size.

Run from the repository root::

    .venv/bin/python bench/predict.py            # builds inputs in bench/_work, prints both ratios

What it does (all in one run):

1. Inputs built from real imagery: the 1024 x 1024 VHR RGB COG ``aerial-rgb-korea-rasterio/cogeo.tif``
   (EPSG:3857, 0.6 m) is mirror-tiled 2 x 2 into a 2048 x 2048 patch of real imagery. Three rasters are
   written block by block into ``bench/_work``: 2048^2 (the patch), 4096^2 and 8192^2 (the same patch
   in the centre, nodata elsewhere). Every run therefore does the same model work while the raster
   (reads, stitching buffers, strips, COG with overviews) grows 16-fold: ViT-S/16 over 67 Mpx of
   valid pixels would take about half an hour on 2 shared CPU cores. Windows without any valid pixel
   skip the model, as they do for any input.
2. A ViT-S/16 (``vit_small_patch16_dinov3_qkvb``) land-cover bundle (11 WorldCover classes, linear
   head, random weights) written with ``dinogeo.models.bundle.save_bundle``.
3. Throughput on the 2048^2 raster (25 windows of 512 px, overlap 64, batch 4): ``predict_raster``
   end to end (read-ahead threads, blending, strips, COG, sidecars) versus the model alone on the
   same windows and batches, pre-loaded in memory. Target: end-to-end >= 0.85 x model-only.
4. Peak RSS (``ru_maxrss``) of ``predict_raster`` on each full raster, each in a fresh subprocess
   with the same bundle and settings. Target: RSS(8192^2) <= 1.25 x RSS(2048^2).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "_work"
SIZES = (2048, 4096, 8192)
TILE, OVERLAP, BATCH, WORKERS = 512, 64, 4, 2
SOURCE = "aerial-rgb-korea-rasterio/cogeo.tif"


def build_inputs() -> dict[int, Path]:
    from dinogeo._paths import shared_data_dir

    WORK.mkdir(parents=True, exist_ok=True)
    src = shared_data_dir() / SOURCE
    with rasterio.open(src) as ds:
        img = ds.read()
        crs, t = ds.crs, ds.transform
    top = np.concatenate([img, img[:, :, ::-1]], axis=2)
    patch = np.concatenate([top, top[:, ::-1, :]], axis=1)  # 2048 x 2048 mirror tiling
    patch[:, (patch == 0).all(axis=0)] = 1  # 0 in every band is reserved for nodata
    out = {}
    for size in SIZES:
        path = WORK / f"korea_mirror_{size}.tif"
        out[size] = path
        if path.exists():
            continue
        off = (size - 2048) // 2
        transform = t * rasterio.Affine.translation(-off, -off)
        profile = {
            "driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8",
            "crs": crs, "transform": transform, "nodata": 0, "tiled": True,
            "blockxsize": 512, "blockysize": 512, "compress": "deflate",
        }  # fmt: skip
        tmp = path.with_suffix(".tmp.tif")
        with rasterio.open(tmp, "w", **profile) as dst:
            for r in range(0, size, 512):
                for c in range(0, size, 512):
                    block = np.zeros((3, 512, 512), np.uint8)
                    pr, pc = r - off, c - off
                    if 0 <= pr < 2048 and 0 <= pc < 2048:
                        block = patch[:, pr : pr + 512, pc : pc + 512]
                    dst.write(block, window=Window(c, r, 512, 512))
        tmp.rename(path)
    return out


def build_bundle() -> Path:
    path = WORK / "vit_small_land_cover.safetensors"
    if path.exists():
        return path
    sys.path.insert(0, str(ROOT / "tests" / "data" / "inference"))
    import data as fx  # the tests' bundle generator (random weights, shipped sensor statistics)

    return fx.write_bundle(
        path, "land_cover", arch="vit_small_patch16_dinov3_qkvb", decoder="linear"
    )


def throughput(bundle_path: Path, raster: Path) -> tuple[float, float]:
    from dinogeo.inference import load_model, predict_raster
    from dinogeo.inference.inputs import open_for_card, window_reader
    from dinogeo.inference.predict import _make_infer
    from dinogeo.inference.tiling import TileGrid

    model = load_model(bundle_path)
    src = open_for_card(raster, model.card)
    grid = TileGrid(src.height, src.width, TILE, OVERLAP)
    batches = list(grid.batches(0, grid.n_strips, BATCH))
    read = window_reader([src])
    loaded = []
    for b in batches:
        reads = [read(w.input_window()) for w in b]
        loaded.append(np.stack([r[0][0] for r in reads]))
    infer = _make_infer(model, "cpu", model.task.num_outputs)
    infer((loaded[0][:1],))  # warm-up
    pixels = src.width * src.height
    t0 = time.perf_counter()
    for x in loaded:
        infer((x,))
    t_model = time.perf_counter() - t0
    out = WORK / "throughput_e2e.tif"
    t0 = time.perf_counter()
    predict_raster(model, raster, out, tile=TILE, overlap=OVERLAP, batch_size=BATCH,
                   workers=WORKERS, overwrite=True, vectorize=False, progress=False)  # fmt: skip
    t_e2e = time.perf_counter() - t0
    n = sum(len(b) for b in batches)
    print(f"windows: {n} x {TILE}px in {len(batches)} batches of {BATCH}")
    print(f"model-only : {t_model:7.1f} s  {pixels / t_model:12,.0f} px/s")
    print(f"end-to-end : {t_e2e:7.1f} s  {pixels / t_e2e:12,.0f} px/s")
    return pixels / t_e2e, pixels / t_model


def child(size: int) -> None:
    from dinogeo.inference import predict_raster

    raster = WORK / f"korea_mirror_{size}.tif"
    t0 = time.perf_counter()
    res = predict_raster(build_bundle(), raster, WORK / f"pred_{size}.tif", tile=TILE, overlap=OVERLAP,
                         batch_size=BATCH, workers=WORKERS, overwrite=True, vectorize=False,
                         progress=False)  # fmt: skip
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"size": size, "seconds": time.perf_counter() - t0, "rss_mb": rss_mb,
                      "pixels": res.pixels}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    t_start = time.perf_counter()
    print(f"torch threads: {torch.get_num_threads()}, tile {TILE}, overlap {OVERLAP}, batch {BATCH}, "
          f"workers {WORKERS}")  # fmt: skip
    rasters = build_inputs()
    bundle = build_bundle()
    e2e, model_only = throughput(bundle, rasters[2048])
    rss = {}
    for size in SIZES:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(size)]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
        info = json.loads(done.stdout.strip().splitlines()[-1])
        rss[size] = info["rss_mb"]
        print(f"peak RSS {size:>5}^2: {info['rss_mb']:8.1f} MB  ({info['seconds']:.1f} s, "
              f"{info['pixels']:,} valid px)")  # fmt: skip
    print(f"throughput ratio end-to-end / model-only: {e2e / model_only:.3f} (target >= 0.85)")
    print(f"peak RSS ratio 8192^2 / 2048^2: {rss[8192] / rss[2048]:.3f} (target <= 1.25)")
    print(f"bench time: {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
