"""Benchmark of ``predict_raster``: peak RSS vs raster width on fully valid real imagery, and throughput.

Run from the repository root::

    .venv/bin/python bench/predict.py                 # block path; prints RSS ratios and MB deltas
    .venv/bin/python bench/predict.py --baseline 764a01c   # also the strip path of that commit

What it does (all in one run, inputs in a temporary folder that is removed at the end):

1. Inputs built from real imagery: the 1024 x 1024 VHR RGB COG ``aerial-rgb-korea-rasterio/cogeo.tif``
   (EPSG:3857, 0.6 m, no nodata) is mirror-tiled (alternately flipped copies, so the tiling has no
   seams) into fully valid rasters of 2048 x 2048, 8192 x 8192 and 16,384 x 2048 (wide) pixels.
   Every window runs through the model; nothing is skipped as nodata.
2. The model: the tests' tiny land-cover bundle (``vit_test_patch16_dinov3`` backbone, 11 WorldCover
   classes, linear head, random weights, written with ``save_bundle``). Memory is what this bench
   measures; the tiny model keeps it runnable on 2 CPU cores.
3. Peak RSS (``ru_maxrss``) of ``predict_raster`` with polygons ON (``vectorize=True``, default
   minimum mapping unit), tile 512, overlap 64, batch 4, 2 reader threads, default block, each raster
   in a fresh subprocess. Printed: MB, ratio and MB difference against the 2048^2 run. Target:
   widest / 2048^2 <= 1.1.
4. With ``--baseline REF``: the same children run the ``dinogeo`` package of git commit ``REF``
   (extracted with ``git archive`` into the temporary folder; ``764a01c`` is the last commit with
   the full-width strip path) on the 2048^2 and the 16,384-wide raster, for the figures before the
   change measured in the same run.
5. Throughput on the 2048^2 raster: ``predict_raster`` end to end versus the model alone on the
   same windows and batches pre-loaded in memory (the block path runs halo windows twice).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"2048^2": (2048, 2048), "8192^2": (8192, 8192), "16384x2048": (2048, 16384)}
TILE, OVERLAP, BATCH, WORKERS = 512, 64, 4, 2
SOURCE = "aerial-rgb-korea-rasterio/cogeo.tif"


def _mirror_tile(img: np.ndarray, height: int, width: int, r0: int, c0: int) -> np.ndarray:
    """Rows ``r0:r0+height`` and columns ``c0:c0+width`` of ``img`` mirror-tiled to infinity."""
    h, w = img.shape[1:]
    rows = np.arange(r0, r0 + height)
    cols = np.arange(c0, c0 + width)
    ri = np.where((rows // h) % 2 == 0, rows % h, h - 1 - rows % h)
    ci = np.where((cols // w) % 2 == 0, cols % w, w - 1 - cols % w)
    return img[:, ri][:, :, ci]


def build_inputs(work: Path) -> dict[str, Path]:
    """Write the fully valid mirror-tiled rasters into ``work``."""
    from dinogeo._paths import shared_data_dir

    with rasterio.open(shared_data_dir() / SOURCE) as ds:
        img = ds.read()
        crs, t = ds.crs, ds.transform
    img[img == 0] = 1  # 0 (nodata) in any band would make the pixel invalid
    out = {}
    for name, (height, width) in SIZES.items():
        path = work / f"korea_mirror_{name.replace('^', '')}.tif"
        profile = {
            "driver": "GTiff", "width": width, "height": height, "count": 3, "dtype": "uint8",
            "crs": crs, "transform": t, "nodata": 0, "tiled": True, "blockxsize": 512,
            "blockysize": 512, "compress": "deflate",
        }  # fmt: skip
        with rasterio.open(path, "w", **profile) as dst:
            for r in range(0, height, 512):
                for c in range(0, width, 512):
                    dst.write(_mirror_tile(img, 512, 512, r, c), window=Window(c, r, 512, 512))
        out[name] = path
    return out


def build_bundle(work: Path) -> Path:
    """The tests' tiny land-cover bundle (random weights)."""
    sys.path.insert(0, str(ROOT / "tests" / "data" / "inference"))
    import data as fx  # the tests' bundle generator (random weights, shipped sensor statistics)

    return fx.write_bundle(work / "tiny_land_cover.safetensors", "land_cover")


def child(bundle: str, raster: str, out: str) -> None:
    """Predict one raster (polygons on) and print seconds, peak RSS and the output's polygons."""
    import pyogrio

    import dinogeo
    from dinogeo.inference import predict_raster

    t0 = time.perf_counter()
    res = predict_raster(bundle, raster, out, tile=TILE, overlap=OVERLAP, batch_size=BATCH,
                         workers=WORKERS, overwrite=True, vectorize=True, progress=False)  # fmt: skip
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n_poly = pyogrio.read_info(res.vectors[0])["features"] if res.vectors else 0
    print(json.dumps({"seconds": time.perf_counter() - t0, "rss_mb": rss_mb, "pixels": res.pixels,
                      "polygons": n_poly, "package": str(Path(dinogeo.__file__).parent)}))  # fmt: skip


def run_child(bundle: Path, raster: Path, out: Path, pythonpath: Path) -> dict:
    env = os.environ | {"PYTHONPATH": str(pythonpath), "OMP_NUM_THREADS": "2"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(bundle), str(raster),
           str(out)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if done.returncode:
        return {
            "error": (done.stderr.strip().splitlines() or ["exit status " + str(done.returncode)])[
                -1
            ]
        }
    return json.loads(done.stdout.strip().splitlines()[-1])


def throughput(bundle_path: Path, raster: Path, work: Path) -> None:
    from dinogeo.inference import load_model, predict_raster
    from dinogeo.inference.blocks import BlockGrid
    from dinogeo.inference.inputs import open_for_card, window_reader
    from dinogeo.inference.model import make_infer
    from dinogeo.inference.predict import BLOCK
    from dinogeo.inference.tiling import TileGrid

    model = load_model(bundle_path)
    src = open_for_card(raster, model.card)
    grid = TileGrid(src.height, src.width, TILE, OVERLAP)
    batches = list(grid.batches(0, grid.n_strips, BATCH))
    read = window_reader([src])
    loaded = [np.stack([read(w.input_window())[0][0] for w in b]) for b in batches]
    infer = make_infer(model, "cpu", model.task.num_outputs)
    infer((loaded[0][:1],))  # warm-up
    pixels = src.width * src.height
    t0 = time.perf_counter()
    for x in loaded:
        infer((x,))
    t_model = time.perf_counter() - t0
    t0 = time.perf_counter()
    predict_raster(model, raster, work / "throughput.tif", tile=TILE, overlap=OVERLAP,
                   batch_size=BATCH, workers=WORKERS, overwrite=True, vectorize=False,
                   progress=False)  # fmt: skip
    t_e2e = time.perf_counter() - t0
    print(f"throughput 2048^2, polygons off: model-only {pixels / t_model:,.0f} px/s, end-to-end "
          f"{pixels / t_e2e:,.0f} px/s, ratio {t_model / t_e2e:.3f}")  # fmt: skip
    for name, (h, w) in SIZES.items():
        g = TileGrid(h, w, TILE, OVERLAP)
        print(f"windows run {name}: {BlockGrid(g, BLOCK).n_windows} in blocks of {BLOCK} vs "
              f"{g.n_windows} in one pass")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--baseline", help="git commit whose dinogeo package is measured too")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    if args.child:
        torch.set_num_threads(2)
        child(*args.child)
        return
    t_start = time.perf_counter()
    torch.set_num_threads(2)
    print(f"torch threads 2, tile {TILE}, overlap {OVERLAP}, batch {BATCH}, workers {WORKERS}, "
          "model: tests' tiny land-cover bundle (vit_test_patch16_dinov3 + linear head), "
          "polygons on")  # fmt: skip
    print(f"load: {os.getloadavg()[0]:.1f} (1-min average) on {os.cpu_count()} CPUs")
    work = Path(tempfile.mkdtemp(prefix="dinogeo-bench-predict-"))
    try:
        rasters = build_inputs(work)
        bundle = build_bundle(work)
        paths = {"blocks (this tree)": ROOT}
        if args.baseline:
            old = work / "baseline"
            old.mkdir()
            tar = subprocess.run(["git", "archive", args.baseline, "dinogeo"], cwd=ROOT,
                                 check=True, capture_output=True).stdout  # fmt: skip
            subprocess.run(["tar", "-x", "-C", str(old)], input=tar, check=True)
            paths[f"strips ({args.baseline})"] = old
        for label, pypath in paths.items():
            rss: dict[str, float] = {}
            names = list(rasters) if pypath == ROOT else ["2048^2", "16384x2048"]
            for name in names:
                raster = rasters[name]
                info = run_child(bundle, raster, work / f"pred_{name.replace('^', '')}.tif", pypath)
                if "error" in info:
                    print(f"{label}: {name} failed: {info['error']}", flush=True)
                    break
                rss[name] = info["rss_mb"]
                base = rss["2048^2"]
                print(f"{label}: peak RSS {name:>10}: {info['rss_mb']:7.1f} MB  ratio "
                      f"{info['rss_mb'] / base:.3f}  {info['rss_mb'] - base:+7.1f} MB  "
                      f"({info['seconds']:.0f} s, {info['pixels']:,} px, "
                      f"{info['polygons']:,} polygons)", flush=True)  # fmt: skip
            if len(rss) < 2:
                continue
            ratios = "; ".join(f"{k} / 2048^2 = {v / rss['2048^2']:.3f}" for k, v in rss.items()
                               if k != "2048^2")  # fmt: skip
            print(f"{label}: peak RSS ratios {ratios} (target <= 1.1)", flush=True)
        throughput(bundle, rasters["2048^2"], work)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"bench time: {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
