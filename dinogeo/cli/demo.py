"""``dinogeo demo``: the end-to-end demo on real sample imagery (a thin wrapper over run_demo)."""

from __future__ import annotations

import argparse

from dinogeo.demo import run_demo

__all__ = ["main"]


def main(argv: list[str]) -> int:
    """Run ``dinogeo demo``.

    Args:
        argv: the arguments after ``demo``.

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(
        prog="dinogeo demo",
        description="Pretrain a small backbone on the North Carolina Landsat 7 scene, fit a "
        "land-cover head from the 1996 polygons, validate it on the 1996 points, and write "
        "a styled COG, a GeoPackage and a PCA feature picture you can open in QGIS.",
    )
    parser.add_argument("-o", "--out", default="demo_output", help="output folder")
    parser.add_argument(
        "--pretrain-minutes", type=float, default=3.0, help="CPU budget of pretraining"
    )
    parser.add_argument("--fit-minutes", type=float, default=2.0, help="budget of head training")
    parser.add_argument("--keep", action="store_true", help="refuse to replace an earlier run")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    result = run_demo(
        args.out,
        pretrain_minutes=args.pretrain_minutes,
        fit_minutes=args.fit_minutes,
        overwrite=not args.keep,
        progress=not args.quiet,
    )
    print(result.summary())
    return 0
