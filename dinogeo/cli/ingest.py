"""``dinogeo ingest INDEX -o store.zarr``: convert an archive into one chunked zarr store."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["main"]


def main(argv: list[str]) -> int:
    """Ingest an index (or raster paths/globs) into a resumable, verified zarr v3 store.

    Args:
        argv: command-line arguments after ``ingest``.

    Returns:
        0 on success, 1 when ``--verify`` finds problems.
    """
    parser = argparse.ArgumentParser(
        prog="dinogeo ingest",
        description=(
            "Convert an archive into one zarr v3 store (a group per raster, chunks "
            "(bands, chunk, chunk), Blosc LZ4, GeoZarr georeferencing). Runs on a local dask "
            "cluster unless --scheduler names one. Rerun the same command to resume after an "
            "interruption."
        ),
    )
    parser.add_argument("inputs", nargs="+", help="an index .parquet, or raster paths/globs")
    parser.add_argument("-o", "--output", required=True, type=Path, help="the .zarr store")
    parser.add_argument("--chunk", type=int, default=256, help="chunk size in pixels (256)")
    parser.add_argument(
        "--scheduler",
        default=None,
        help="dask scheduler address (tcp://host:8786), or 'synchronous' to run in this process; "
        "default: a local cluster of --workers processes",
    )
    parser.add_argument("--workers", type=int, default=2, help="local cluster workers (2)")
    parser.add_argument("--overwrite", action="store_true", help="delete an existing store first")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="afterwards re-read the whole store and the sources and compare (every chunk is "
        "already read back and compared while ingesting)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    from dinogeo.data.ingest import ingest, verify_store

    single = args.inputs[0] if len(args.inputs) == 1 else None
    source = single if single and single.endswith(".parquet") else args.inputs
    store = ingest(
        source,
        args.output,
        chunk=args.chunk,
        scheduler=args.scheduler,
        overwrite=args.overwrite,
        progress=not args.quiet,
        workers=args.workers,
    )
    if args.verify:
        problems = verify_store(store, sources=True, progress=not args.quiet)
        for line in problems:
            print(line)
        if problems:
            return 1
        print(f"{store}: verified (chunk CRCs and source pixels match)")
    return 0
