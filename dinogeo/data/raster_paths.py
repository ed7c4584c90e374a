"""Which files are archive members: files, folders and globs expanded into raster paths, once.

Folders are walked recursively and yield GeoTIFF/COG, JPEG2000, VRT, ERDAS and NITF files, PNG/
JPEG/GIF images that have a world file beside them, and zarr stores (not walked into). Globs are
expanded the same way; an explicitly named file is always yielded, so an unreadable one is reported
by whoever reads it.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["RASTER_SUFFIXES", "WORLD_FILES", "iter_raster_paths"]

RASTER_SUFFIXES = frozenset({".tif", ".tiff", ".jp2", ".j2k", ".vrt", ".img", ".ntf"})
#: plain images are archive members only with a world file beside them
WORLD_FILES = {
    ".png": (".pgw", ".pngw"),
    ".jpg": (".jgw", ".jpgw"),
    ".jpeg": (".jgw", ".jpegw"),
    ".gif": (".gfw", ".gifw"),
}


def _has_world_file(path: Path) -> bool:
    sidecars = (*WORLD_FILES.get(path.suffix.lower(), ()), ".wld")
    return any(
        path.with_suffix(s).exists() or path.with_suffix(s.upper()).exists() for s in sidecars
    )


def _is_zarr_dir(path: Path) -> bool:
    return path.suffix.lower() == ".zarr" or (path / "zarr.json").is_file()


def _member(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix in RASTER_SUFFIXES:
        return True
    return suffix in WORLD_FILES and _has_world_file(path)


def _walk(folder: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(folder):
        d = Path(dirpath)
        zarrs = [n for n in dirnames if _is_zarr_dir(d / n)]
        dirnames[:] = sorted(n for n in dirnames if n not in zarrs and not n.startswith("."))
        for name in sorted(zarrs):
            yield d / name
        for name in sorted(filenames):
            if _member(d / name):
                yield d / name


def iter_raster_paths(paths_or_globs: Sequence[str | Path] | str | Path) -> Iterator[Path]:
    """Expand files, folders and globs into raster paths, once, without duplicates.

    Explicitly named files are always yielded (so an unreadable one is reported); files found by
    walking folders or globs are yielded when their suffix is a raster format, or when a plain
    image has a world file.
    """
    items = [paths_or_globs] if isinstance(paths_or_globs, str | Path) else list(paths_or_globs)
    seen: set[str] = set()
    for item in items:
        text = str(Path(item).expanduser())
        if glob.has_magic(text):
            candidates: Iterator[Path] = (Path(p) for p in sorted(glob.iglob(text, recursive=True)))
            explicit = False
        else:
            candidates = iter([Path(text)])
            explicit = True
        for cand in candidates:
            if cand.is_dir() and not _is_zarr_dir(cand):
                found: Iterator[Path] = _walk(cand)
            elif explicit or cand.is_dir() or _member(cand):
                found = iter([cand])
            else:
                continue
            for p in found:
                key = str(p.absolute())
                if key not in seen:
                    seen.add(key)
                    yield Path(key)
