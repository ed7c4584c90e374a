"""``dinogeo index PATHS/GLOBS -o index.parquet``: :func:`build_index`, written to a file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dinogeo.errors import OutputExistsError

__all__ = ["run"]


def run(options: dict[str, Any], *, output: str, overwrite: bool = False) -> int:
    """Scan an archive into a GeoParquet index; unreadable files go to ``<stem>.skipped.csv``.

    Args:
        options: the keyword arguments of :func:`~dinogeo.data.index.build_index`.
        output: the ``.parquet`` to write.
        overwrite: replace an existing index.

    Returns:
        0 when at least one raster was indexed, 1 otherwise.
    """
    from dinogeo.data.index import build_index, summarize, write_index

    out = Path(output)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite or choose another -o path")
    index = build_index(**options)
    write_index(index, out)
    if not options.get("progress", True):
        print(summarize(index))
    print(f"wrote {out} ({len(index)} rasters)")
    return 0 if len(index) else 1
