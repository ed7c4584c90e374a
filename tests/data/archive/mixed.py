"""Build a messy real archive: Sentinel-2 scenes mixed with label rasters and broken files.

``make_mixed_archive(folder, shared_data)`` fills ``folder`` with symbolic links to real files of
``shared_data`` and with the generated members of :func:`tests.data.archive.data.make_archive`:

- ``s2/``: four dated Rufiji Sentinel-2 scenes (10-band x1000, 20 m, cloud-masked to 0) and the
  Aberystwyth 10-band scene (the same sensor layout, another place and date);
- ``labels/``: the Rufiji 1997 class maps, the Aberystwyth class map, a detectree tree mask;
- ``other/``: a SWISSIMAGE RGB tile (another sensor) and a Sentinel-2 L1C scene whose band
  descriptions fit three Sentinel-2 products (ambiguous scaling);
- ``broken/``: a corrupt file, a truncated GeoTIFF, a world-file PNG (3-band RGB), a PNG without
  georeferencing (not an archive member) and an all-nodata raster.

Run ``python tests/data/archive/mixed.py OUT_DIR`` to inspect it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.data.archive.data import make_archive

RUFIJI = "sentinel2-timeseries-rufiji-rsgislib"
RUFIJI_SCENES = [
    f"{RUFIJI}/SEN2_{d}_T37MEM_20m_10band.tif"
    for d in ("20160312", "20170715", "20180819", "20190610")
]
ABER = "sentinel2-landcover-aberystwyth-rsgislib/sen2_20210527_aber_10band_crop.tif"
LABELS = [
    f"{RUFIJI}/base_1997_class_img_sub.tif",
    f"{RUFIJI}/base_1997_class_on_ts_grid.tif",
    "sentinel2-landcover-aberystwyth-rsgislib/sen2_20210527_aber_cls_crop.tif",
    "swissimage-treemask-detectree/1091-322_05_treemask.tif",
]
OTHER = [
    "swissimage-treemask-detectree/1091-322_05_img.tif",
    "sentinel2-l1c-virginia-sattestdata/S2_18SVG_20160112_10m_B02-B03-B04-B08_crop.tif",
]


def _link(folder: Path, shared_data: Path, names: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name in names:
        link = folder / Path(name).name
        link.symlink_to(shared_data / name)
        out.append(link)
    return out


def make_mixed_archive(folder: Path, shared_data: Path) -> dict[str, list[Path]]:
    """Fill ``folder`` (see the module docstring); returns the files by group."""
    return {
        "s2": _link(folder / "s2", shared_data, [*RUFIJI_SCENES, ABER]),
        "labels": _link(folder / "labels", shared_data, LABELS),
        "other": _link(folder / "other", shared_data, OTHER),
        "broken": list(make_archive(folder / "broken", shared_data).values()),
    }


if __name__ == "__main__":  # pragma: no cover
    root = Path(__file__).resolve().parents[3]
    made = make_mixed_archive(Path(sys.argv[1]), root.parent / "shared" / "data")
    for group, paths in made.items():
        print(group, *(p.name for p in paths))
