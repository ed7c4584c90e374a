"""``dinogeo index PATHS/GLOBS -o index.parquet``: scan an archive into a GeoParquet index."""

from __future__ import annotations

import argparse
from pathlib import Path

from dinogeo.errors import OutputExistsError

__all__ = ["main"]


def main(argv: list[str]) -> int:
    """Scan rasters and zarr stores into a GeoParquet index, listing unreadable files.

    Args:
        argv: command-line arguments after ``index``.

    Returns:
        0 when at least one raster was indexed, 1 otherwise.
    """
    parser = argparse.ArgumentParser(
        prog="dinogeo index",
        description=(
            "Scan GeoTIFF/COG, JPEG2000, VRT, world-file images and zarr stores (files, folders "
            "walked recursively, or quoted globs such as 'archive/**/*.tif') into a GeoParquet "
            "index with valid-data footprints. Unreadable files are listed in "
            "<stem>.skipped.csv beside the index."
        ),
    )
    parser.add_argument("paths", nargs="+", help="files, folders or glob patterns")
    parser.add_argument("-o", "--output", required=True, type=Path, help="the .parquet to write")
    parser.add_argument("--sensor", help="sensor name for every raster (default: guessed per file)")
    parser.add_argument("--workers", type=int, default=None, help="scanning threads")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing index")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    from dinogeo.data.index import build_index, summarize, write_index

    if args.output.exists() and not args.overwrite:
        raise OutputExistsError(f"{args.output} exists; pass --overwrite or choose another -o path")
    index = build_index(
        args.paths, sensor=args.sensor, workers=args.workers, progress=not args.quiet
    )
    write_index(index, args.output)
    if args.quiet:
        print(summarize(index))
    print(f"wrote {args.output} ({len(index)} rasters)")
    return 0 if len(index) else 1
