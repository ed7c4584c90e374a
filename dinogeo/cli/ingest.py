"""``dinogeo ingest INDEX -o store.zarr``: :func:`ingest`, optionally verified afterwards."""

from __future__ import annotations

from typing import Any

__all__ = ["run"]


def run(options: dict[str, Any], *, verify: bool = False) -> int:
    """Ingest an index (or raster paths/globs) into a resumable zarr v3 store.

    Args:
        options: the keyword arguments of :func:`~dinogeo.data.ingest.ingest`.
        verify: afterwards re-read the whole store and the sources and compare (every chunk is
            already read back and compared while ingesting).

    Returns:
        0 on success, 1 when ``verify`` finds problems.
    """
    from dinogeo.data.ingest import ingest
    from dinogeo.data.store_verify import verify_store

    inputs = options["index_or_paths"]
    if isinstance(inputs, list) and len(inputs) == 1 and str(inputs[0]).endswith(".parquet"):
        options = {**options, "index_or_paths": inputs[0]}
    store = ingest(**options)
    if verify:
        problems = verify_store(store, sources=True, progress=options.get("progress", True))
        for line in problems:
            print(line)
        if problems:
            return 1
        print(f"{store}: verified (chunk CRCs and source pixels match)")
    return 0
