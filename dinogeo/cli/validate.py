"""``dinogeo validate``: metrics of a model bundle on labelled imagery (table or JSON).

Usage::

    dinogeo validate --model BUNDLE --image IMAGE --labels LABELS [--image2 DATE2]
        [--label-field FIELD] [--label-layer LAYER] [--label-crs CRS] [--point-radius PX] [--sensor S]
        [--bands B ...] [--scale X] [--offset Y] [--chip-size 256] [--json OUT.json]
        [--format table|json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dinogeo validate", description="Report metrics of a model bundle on labelled data."
    )
    p.add_argument("--model", required=True, help="model bundle from 'dinogeo fit'")
    p.add_argument("--image", required=True, help="image (date 1 for change models)")
    p.add_argument("--image2", help="date 2 for change models")
    p.add_argument("--labels", required=True, help="label raster, or GeoPackage/Shapefile/GeoJSON")
    p.add_argument("--label-field", help="class attribute of vector labels (guessed if omitted)")
    p.add_argument("--label-layer", help="layer of a multi-layer GeoPackage")
    p.add_argument("--label-crs", help="CRS of label coordinates stored without one (CSV)")
    p.add_argument("--point-radius", type=float, default=0.0, help="point label radius in pixels")
    p.add_argument("--sensor", help="sensor of the imagery (default: the weight card's)")
    p.add_argument("--bands", nargs="+", help="the file's band names in file order")
    p.add_argument("--scale", type=float, help="DN-to-reflectance scale override")
    p.add_argument("--offset", type=float, help="DN-to-reflectance offset override")
    p.add_argument("--backbone", help="backbone file, when the bundle references one that moved")
    p.add_argument("--chip-size", type=int, default=256, help="prediction window (pixels)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--json", help="also write the metrics to this JSON file")
    p.add_argument("--format", choices=("table", "json"), default="table")
    return p


def _table(metrics: dict[str, float]) -> str:
    width = max(len(k) for k in metrics)
    lines = [f"| {'metric':<{width}} | value |", f"|{'-' * (width + 2)}|-------|"]
    for key, value in metrics.items():
        text = f"{value:.0f}" if key in ("pixels", "chips") else f"{value:.4f}"
        lines.append(f"| {key:<{width}} | {text} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Run ``dinogeo validate``.

    Returns:
        0 on success (dinogeo errors propagate to the dispatcher, which prints them).
    """
    args = _parser().parse_args(argv)
    from dinogeo.models.bundle import load_bundle
    from dinogeo.trainers.evaluate import evaluate_bundle

    bundle = load_bundle(args.model, backbone_path=args.backbone)
    metrics = evaluate_bundle(
        bundle,
        args.image,
        args.labels,
        image2=args.image2,
        sensor=args.sensor,
        bands=args.bands,
        scale=args.scale,
        offset=args.offset,
        label_field=args.label_field,
        label_layer=args.label_layer,
        label_crs=args.label_crs,
        point_radius=args.point_radius,
        chip_size=args.chip_size,
        batch_size=args.batch_size,
    )
    report = {"model": str(args.model), "task": bundle.task.name, "metrics": metrics}
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=out.name + ".", dir=out.parent)
        with os.fdopen(fd, "w") as handle:
            json.dump(report, handle, indent=2)
        os.replace(tmp, out)
    if args.format == "json":
        print(json.dumps(report, indent=2))
    else:
        print(f"{bundle.task.name} ({bundle.task.kind}) on {args.image}")
        print(_table(metrics))
    return 0
