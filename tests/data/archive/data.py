"""Generate the bad and unusual archive members used by the index/ingest tests.

``make_archive(folder, shared_data)`` writes, from real imagery in ``shared_data``:

- ``corrupt.tif``: bytes that are not a TIFF at all;
- ``truncated.tif``: the first 40 % of a real striped GeoTIFF (header intact, pixel data cut);
- ``swiss_worldfile.png`` + ``.pgw`` + ``.prj``: a crop of a real SWISSIMAGE tile as a plain PNG
  georeferenced only by a world file and an ESRI .prj (EPSG:2056);
- ``no_worldfile.png``: the same PNG without any georeferencing (not an archive member when a
  folder is walked);
- ``all_nodata.tif``: a real grid whose pixels all equal nodata.

Run ``python tests/data/archive/data.py OUT_DIR`` to inspect them.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import WktVersion
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

SWISS = "swissimage-treemask-detectree/1091-322_00_big.tif"
STRIPED = "landsat8-sr-portovelho-scikiteo/LC08_232066_20190727.tif"


def make_archive(folder: Path, shared_data: Path) -> dict[str, Path]:
    """Write the fixture files into ``folder`` and return them by short name."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}

    corrupt = folder / "corrupt.tif"
    corrupt.write_bytes(b"this is not a GeoTIFF\n" * 50)
    out["corrupt"] = corrupt

    raw = (shared_data / STRIPED).read_bytes()
    truncated = folder / "truncated.tif"
    truncated.write_bytes(raw[: int(len(raw) * 0.4)])
    out["truncated"] = truncated

    window = Window(100, 50, 300, 200)
    with rasterio.open(shared_data / SWISS) as src:
        rgb = src.read(window=window)
        transform = src.window_transform(window)
        crs = src.crs
    png = folder / "swiss_worldfile.png"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(
            png, "w", driver="PNG", width=300, height=200, count=3, dtype="uint8"
        ) as dst:
            dst.write(rgb)
    for aux in folder.glob("swiss_worldfile.png.aux.xml"):
        aux.unlink()  # keep the world file as the only georeferencing
    # world file: pixel size x, rotation, rotation, pixel size y, centre of the upper-left pixel
    a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f
    cx, cy = c + a / 2 + b / 2, f + d / 2 + e / 2
    (folder / "swiss_worldfile.pgw").write_text(f"{a}\n{d}\n{b}\n{e}\n{cx}\n{cy}\n")
    (folder / "swiss_worldfile.prj").write_text(crs.to_wkt(version=WktVersion.WKT1_ESRI))
    out["worldfile_png"] = png
    out["worldfile_rgb"] = folder / "swiss_worldfile.rgb.npy"
    np.save(out["worldfile_rgb"], rgb)

    plain = folder / "no_worldfile.png"
    plain.write_bytes(png.read_bytes())
    out["plain_png"] = plain

    profile = {
        "driver": "GTiff", "width": 64, "height": 64, "count": 1, "dtype": "uint8",
        "nodata": 0, "crs": crs, "transform": transform, "compress": "deflate",
    }  # fmt: skip
    empty = folder / "all_nodata.tif"
    with rasterio.open(empty, "w", **profile) as dst:
        dst.write(np.zeros((1, 64, 64), dtype=profile["dtype"]))
    out["all_nodata"] = empty
    return out


if __name__ == "__main__":
    here = Path(__file__).resolve()
    shared = here.parents[3].parent / "shared" / "data"
    for name, path in make_archive(Path(sys.argv[1]), shared).items():
        print(f"{name}: {path}")
