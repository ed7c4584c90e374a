"""Benchmark of ``track_series``: throughput against ``nrt`` MoSum, and peak RSS against series width.

Run from the repository root::

    .venv/bin/python bench/track.py            # builds inputs in bench/_work, prints both ratios

What it does (all in one run, on the real Myanmar Sentinel-1 stack, 85 dates x VV/VH, 120 x 120):

1. Throughput: ``track_series`` end to end (reads, statistic, calibration, decision, rasters,
   polygons, styles; no reference points, so no baselines) in pixel-dates per second, against
   ``nrt``'s MoSum with its defaults (ROC history fit + monitoring, VH in dB) over every pixel of
   the same series held in memory as an ``xarray.DataArray`` (MoSum's numba functions are
   compiled by a warm-up run on 100 pixels first, and its reads are not timed). Ratio a/b > 1
   means dinogeo is faster.
2. Memory: the stack is mirror-tiled 4 x and 16 x along x into 480 x 120 and 1920 x 120
   series (the same dates and values), and ``track_series`` runs on the 1x, 4x and 16x series, each in a fresh subprocess
   with the same settings (tile 64 px); peak RSS (``ru_maxrss``) 4x / 1x, target <= 1.25
   (memory bounded by tile x dates, not by the series width). The imports (torch among them)
   set ``ru_maxrss`` on a series this small, so the current RSS is also sampled every 5 ms
   while tracking, after a warm-up run on the 1x series, and the RSS added above that level
   is printed; its 4x / 1x ratio is the target (<= 1.25; it would be 4 if memory grew with
   width).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "_work" / "track"
STACK = "sentinel1-disturbance-myanmar-ddl8s1ts/S1_VV_VH_dBx100_85dates_2014-2018.tif"
DATES = "sentinel1-disturbance-myanmar-ddl8s1ts/S1_dates.csv"
MONITOR = "2016-01-01"
TILE = 64


def shared(name: str) -> Path:
    from dinogeo._paths import shared_data_dir

    return shared_data_dir() / name


def build_wide(factor: int) -> Path:
    """The stack mirror-tiled ``factor`` times along x (same dates, same band descriptions)."""
    WORK.mkdir(parents=True, exist_ok=True)
    out = WORK / f"myanmar_x{factor}.tif"
    with rasterio.open(shared(STACK)) as ds:
        data = ds.read()
        profile = ds.profile
        descs = ds.descriptions
    parts = [data if i % 2 == 0 else data[:, :, ::-1] for i in range(factor)]
    wide = np.concatenate(parts, axis=2)
    profile.update(width=wide.shape[2], tiled=True, blockxsize=64, blockysize=64, compress="deflate")
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(wide)
        for i, d in enumerate(descs):
            dst.set_band_description(i + 1, d)
    return out


def run_track(stack: Path, out: Path) -> float:
    from dinogeo.tracking import track_series

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    track_series(stack, out, dates_csv=shared(DATES), monitor_start=MONITOR, tile=TILE, progress=False)
    return time.perf_counter() - t0


def run_mosum(vh: np.ndarray, dates: np.ndarray) -> float:
    import datetime as dt

    import xarray as xr
    from nrt.monitor.mosum import MoSum

    t, h, w = vh.shape
    da = xr.DataArray(vh, dims=("time", "y", "x"), coords={"time": dates, "y": np.arange(h), "x": np.arange(w)})
    hist = da.sel(time=slice(None, "2015-12-31"))
    mon = da.sel(time=slice(MONITOR, None))
    t0 = time.perf_counter()
    m = MoSum()
    m.fit(hist)
    for when in mon.time.values:
        day = np.datetime64(when, "D").astype(dt.date)
        m.monitor(mon.sel(time=when).values, dt.datetime(day.year, day.month, day.day))
    return time.perf_counter() - t0


def child(factor: int) -> None:
    import threading

    import psutil

    import dinogeo.tracking.track  # noqa: F401 - imports (torch, geopandas...) before the baseline

    stack = shared(STACK) if factor == 1 else build_wide(factor)
    run_track(shared(STACK), WORK / f"warm_x{factor}")  # lazy imports, caches: not counted
    proc = psutil.Process()
    base_mb = proc.memory_info().rss / 2**20
    peak = [base_mb]
    stop = threading.Event()

    def sample() -> None:  # current RSS every 5 ms: ru_maxrss is set by the imports here
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss / 2**20)
            stop.wait(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    seconds = run_track(stack, WORK / f"out_x{factor}")
    stop.set()
    sampler.join()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"factor": factor, "rss_mb": rss_mb, "base_mb": base_mb, "run_peak_mb": peak[0], "seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    import warnings

    import pandas as pd

    warnings.simplefilter("ignore")
    with rasterio.open(shared(STACK)) as ds:
        raw = ds.read().astype(np.float32)
        h, w = ds.height, ds.width
    raw[raw == -32768] = np.nan
    vh = raw[1::2] / 100
    dates = pd.to_datetime(pd.read_csv(shared(DATES)).date).to_numpy()
    pixel_dates = h * w * len(dates)
    run_mosum(vh[:, :10, :10], dates)  # compile the numba functions
    t_nrt = run_mosum(vh, dates)
    run_track(shared(STACK), WORK / "out_warm")
    t_dino = run_track(shared(STACK), WORK / "out_timed")
    a, b = pixel_dates / t_dino, pixel_dates / t_nrt
    print(f"series: {h} x {w} px x {len(dates)} dates = {pixel_dates / 1e6:.2f} M pixel-dates")
    print(f"a) dinogeo track_series end to end: {t_dino:.2f} s, {a / 1e3:.1f} k pixel-dates/s")
    print(f"b) nrt MoSum (fit + monitor, VH):   {t_nrt:.2f} s, {b / 1e3:.1f} k pixel-dates/s")
    print(f"throughput a/b = {a / b:.2f} (> 1: dinogeo faster)")
    rss = {}
    for factor in (1, 4, 16):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(factor)]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
        rss[factor] = json.loads(done.stdout.strip().splitlines()[-1])
        r = rss[factor]
        print(
            f"width x{factor}: peak RSS {r['rss_mb']:.0f} MB (ru_maxrss); after imports "
            f"{r['base_mb']:.0f} MB, peak while tracking {r['run_peak_mb']:.0f} MB "
            f"(+{r['run_peak_mb'] - r['base_mb']:.0f} MB), {r['seconds']:.1f} s"
        )
    print(f"peak RSS (ru_maxrss, imports included) 4x / 1x = {rss[4]['rss_mb'] / rss[1]['rss_mb']:.3f}")
    grow = {f: max(rss[f]["run_peak_mb"] - rss[f]["base_mb"], 1.0) for f in (1, 4, 16)}
    print(
        f"tracking's own peak RSS (the after-imports baseline of the same process subtracted) "
        f"4x / 1x = {grow[4] / grow[1]:.2f} (target <= 1.25), 16x / 1x = {grow[16] / grow[1]:.2f} "
        "(4.0 and 16.0 would be memory growing with width)"
    )


if __name__ == "__main__":
    main()
