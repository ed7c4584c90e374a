"""Backbone features for ``dinogeo track --backbone`` on Myanmar: pretrain on the series, then score.

No pretrained Sentinel-1 backbone exists here (the repository ships no weights, Meta's cannot
be downloaded, and ``runs/bench_probe/backbone.safetensors`` is a Sentinel-2 backbone with no
VV/VH band to adapt), so the backbone is pretrained on the series itself, the "continued
pretraining on the series" route of docs/tracking.md, without any label:

1. the 85 dates of the Myanmar stack (VV, VH in dB x 100) are written as one 2-band GeoTIFF per
   date (``bench/_work/track_backbone/dates``);
2. bench/probe.py's small SSL task (DINOv3 recipe: DINO + iBOT + KoLeo, EMA teacher; ViT of 4
   blocks, width 96, patch 2) is pretrained on them from scratch on the CPU for ``--minutes``
   (or ``--steps``), with the ``sentinel1_grd_db100`` sensor's scaling and statistics;
3. ``track_series`` runs on the stack with the 150 development reference points three times in
   one run: the default spectral statistic (VV/VH backscatter, 3 x 3 speckle filter, z-score),
   the pretrained teacher backbone's features (``backbone=``), and the same architecture with
   the random weights pretraining started from (the control). Every threshold is fitted on the
   points with the same stratified 5-fold cross-validation; nothing else is tuned.

Prints UA/PA/F1 and the median lag of each, the cross-validated figures (each point predicted
with the threshold of the other folds).

Usage: python bench/track_backbone.py [--minutes 10 | --steps N] [--threads 2] [--skip_random]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import rasterio
import torch

from dinogeo._paths import shared_data_dir

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "_work" / "track_backbone"
SERIES = "sentinel1-disturbance-myanmar-ddl8s1ts"
STACK = f"{SERIES}/S1_VV_VH_dBx100_85dates_2014-2018.tif"
DATES = f"{SERIES}/S1_dates.csv"
POINTS = f"{SERIES}/reference_points_dev.geojson"
SENSOR = "sentinel1_grd_db100"
BANDS = ["VV", "VH"]


def split_dates(shared: Path) -> list[str]:
    """One 2-band (VV, VH) GeoTIFF per date of the stack; the paths."""
    import pandas as pd

    out = WORK / "dates"
    out.mkdir(parents=True, exist_ok=True)
    table = pd.read_csv(shared / DATES)
    paths = []
    with rasterio.open(shared / STACK) as ds:
        profile = dict(ds.profile, count=2)
        for key in ("blockxsize", "blockysize", "tiled", "interleave"):
            profile.pop(key, None)
        for _, row in table.iterrows():
            path = out / f"S1_{row['date']}.tif"
            if not path.exists():
                data = ds.read([int(row["band_vv"]), int(row["band_vh"])])
                with rasterio.open(path, "w", **profile) as dst:
                    dst.write(data)
                    dst.descriptions = tuple(BANDS)
            paths.append(str(path))
    return paths


def pretrain(sources: list[str], minutes: float | None, steps: int | None) -> tuple[Path, Path]:
    """Pretrain bench/probe.py's small task on the dates; the teacher and its initial weights."""
    import probe  # bench/probe.py (this script's folder is on sys.path)

    from dinogeo.models import save_backbone
    from dinogeo.ssl.datamodule import SSLDataModule

    probe.BANDS = BANDS  # the task is built for the series' two bands
    dm = SSLDataModule(
        sources=sources,
        sensor=SENSOR,
        bands=BANDS,
        chip_size=48,
        samples_per_epoch=20_000,
        min_valid_fraction=0.5,
        batch_size=16,
        num_workers=0,
        global_size=32,
        local_size=16,
        n_local=4,
        patch_size=probe.PATCH,
        seed=0,
    )
    expected = steps if steps is not None else int((minutes or 10) * 60 / 2.0)
    task = probe.make_task(100_000, temp_warmup_steps=max(100, int(0.3 * expected)))
    initial = copy.deepcopy(task.teacher_backbone)
    trainer = probe.cpu_trainer(WORK, minutes=minutes, steps=steps)
    start = time.perf_counter()
    trainer.fit(task, dm)
    print(
        f"pretrained {trainer.global_step} steps in {(time.perf_counter() - start) / 60:.1f} min "
        f"on {len(sources)} dates"
    )
    pretrained = task.export_backbone(WORK / "backbone.safetensors")
    card = task.weight_card()
    random = WORK / "backbone_initial.safetensors"
    save_backbone(random, initial, card)
    return Path(str(pretrained)), random


def score(backbone: Path | None, name: str) -> dict:
    """Track the stack with the reference points; the cross-validated figures."""
    from dinogeo.tracking import track_series

    shared = shared_data_dir()
    result = track_series(
        shared / STACK,
        WORK / f"out_{name}",
        dates_csv=shared / DATES,
        history_start="2014-10-01",
        monitor_start="2016-01-01",
        reference=shared / POINTS,
        baselines=["none"],
        backbone=backbone,
        overwrite=True,
        progress=False,
    )
    m = result.metrics["methods"]["dinogeo (cross-validated)"]
    return {
        "UA": m["users_accuracy"],
        "PA": m["producers_accuracy"],
        "F1": m["f1"],
        "lag": m["lag_days"]["median"],
        "threshold": result.threshold,
        "seconds": result.seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--skip_random", action="store_true", help="skip the random-weights control (saves time)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sources = split_dates(shared_data_dir())
    pretrained, initial = pretrain(sources, None if args.steps else args.minutes, args.steps)
    rows = {
        "spectral z-score (VV/VH, 3x3 speckle filter; default)": score(None, "spectral"),
        "backbone features, pretrained on the series": score(pretrained, "pretrained"),
    }
    if not args.skip_random:
        rows["backbone features, random initial weights"] = score(initial, "random")
    print("Myanmar, 150 dev points, stratified 5-fold cross-validated thresholds:")
    for name, r in rows.items():
        lag = "-" if r["lag"] is None else f"{r['lag']:.0f} d"
        print(
            f"  {name:<55} UA {r['UA']:.3f}  PA {r['PA']:.3f}  F1 {r['F1']:.3f}  "
            f"median lag {lag}  (map threshold {r['threshold']:g}, {r['seconds']:.0f} s)"
        )
    (WORK / "results.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
