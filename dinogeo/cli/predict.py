"""``dinogeo predict``: stream rasters through a model bundle into styled COGs (and GeoPackages).

Usage::

    dinogeo predict --model land_cover.safetensors scene.tif -o scene_landcover.tif
    dinogeo predict --model land_cover.safetensors tiles/ -o out/ --mosaic
    dinogeo predict --model change.safetensors date1.tif date2.tif -o change.tif

A thin wrapper over :func:`dinogeo.inference.predict_raster` and
:func:`dinogeo.inference.predict_change`: a change bundle takes exactly two inputs (date 1, date 2).
"""

from __future__ import annotations

import argparse

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``dinogeo predict``."""
    p = argparse.ArgumentParser(
        prog="dinogeo predict",
        description="Predict rasters of any size with a model bundle into styled COGs; memory "
        "stays constant, tiles are blended without seams, outputs open styled in QGIS.",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="raster files, VRTs, zarr stores, folders or globs (change: T1 T2)",
    )
    p.add_argument("--model", required=True, help="model bundle (.safetensors from dinogeo fit)")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="output COG (one input) or output folder (several inputs)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run without redoing finished strips",
    )
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 (default cpu)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per model call (default 8)")
    p.add_argument("--workers", type=int, default=2, help="background reader threads (default 2)")
    p.add_argument("--tile", type=int, default=512, help="window side in pixels (default 512)")
    p.add_argument("--overlap", type=int, default=64, help="window overlap in pixels (default 64)")
    p.add_argument(
        "--probabilities", action="store_true", help="add one probability band per class"
    )
    p.add_argument("--confidence", action="store_true", help="add a top-class probability band")
    p.add_argument(
        "--vectorize",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write a styled GeoPackage of class polygons (default: on for classes)",
    )
    p.add_argument("--mosaic", action="store_true", help="also write a VRT mosaic of the outputs")
    p.add_argument(
        "--strip-rows",
        type=int,
        default=512,
        help="output rows per strip, the unit of writing and resuming (default 512)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    return p  # fmt: skip


def main(argv: list[str]) -> int:
    """Run ``dinogeo predict``.

    Args:
        argv: command-line arguments after ``predict``.

    Returns:
        The exit status (0 on success).
    """
    args = build_parser().parse_args(argv)
    from dinogeo.errors import ConfigError
    from dinogeo.inference.predict import load_model, predict_change, predict_raster

    model = load_model(args.model, args.device)
    opts = {
        "tile": args.tile,
        "overlap": args.overlap,
        "batch_size": args.batch_size,
        "device": args.device,
        "workers": args.workers,
        "probabilities": args.probabilities,
        "confidence": args.confidence,
        "overwrite": args.overwrite,
        "resume": args.resume,
        "progress": not args.quiet,
        "vectorize": args.vectorize,
        "mosaic": args.mosaic,
        "strip_rows": args.strip_rows,
    }
    if model.task.kind == "change":
        if len(args.inputs) != 2:
            raise ConfigError(
                f"{args.model} is a change model: give two inputs (date 1, date 2), got "
                f"{len(args.inputs)}"
            )
        predict_change(model, args.inputs[0], args.inputs[1], args.output, **opts)
    else:
        predict_raster(model, args.inputs, args.output, **opts)
    return 0
