"""``dinogeo stats PATHS... [--sensor S] [--bands B ...] [-o sensor.yaml]``.

Streams per-band normalisation statistics (reflectance units, valid pixels only) over rasters,
folders and zarr stores, prints them, and optionally writes a sensor YAML with them filled in.
"""

from __future__ import annotations

import argparse
import datetime as _dt
from pathlib import Path

from dinogeo.data.stats import compute_stats, open_archive, sensor_with_stats
from dinogeo.errors import OutputExistsError

__all__ = ["main"]


def main(argv: list[str]) -> int:
    """Compute and print (and optionally save) per-band statistics of an archive.

    Args:
        argv: command-line arguments after ``stats``.

    Returns:
        The exit status (0 on success).
    """
    parser = argparse.ArgumentParser(
        prog="dinogeo stats",
        description="Stream per-band mean/std (reflectance units, valid pixels) of an archive.",
    )
    parser.add_argument("paths", nargs="+", help="raster files, folders or zarr stores")
    parser.add_argument("--sensor", help="shipped sensor name or sensor YAML (default: generic)")
    parser.add_argument("--bands", nargs="+", help="band names/aliases to read, in order")
    parser.add_argument("-o", "--output", type=Path, help="write a sensor YAML with the stats")
    parser.add_argument("--name", help="name of the written sensor (default: the sensor's name)")
    parser.add_argument("--window", type=int, default=1024, help="window side in pixels")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if args.output is not None and args.output.exists() and not args.overwrite:
        raise OutputExistsError(f"{args.output} exists; pass --overwrite to replace it")
    sources = open_archive(args.paths, args.sensor, args.bands)
    stats = compute_stats(sources, window_size=args.window, progress=not args.no_progress)
    spec = sensor_with_stats(sources[0].sensor, stats, args.name)
    print(f"{len(sources)} sources, {stats.count} valid pixels per band")
    print(f"{'band':<10} {'mean':>10} {'std':>10}")
    for b in spec.bands:
        print(f"{b.name:<10} {b.mean:>10.6f} {b.std:>10.6f}")
    if args.output is not None:
        from dinogeo.data.sensors import save_sensor

        stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d")
        header = (
            f"statistics computed by `dinogeo stats` on {stamp} over {len(sources)} sources\n"
            f"({stats.count} valid pixels per band; reflectance = DN * scale + offset)"
        )
        save_sensor(spec, args.output, header=header)
        print(f"wrote {args.output}")
    return 0
