"""Generate small dated series for the tracking bad-input tests from the real Rufiji Sentinel-2 files.

Every function writes into a folder given by the caller (pytest's ``tmp_path``) and returns the
paths it wrote; nothing binary is committed. Run as a script to write them into ./generated.
"""

from __future__ import annotations

import sys
from pathlib import Path

import rasterio
from affine import Affine
from rasterio.windows import Window

from dinogeo._paths import shared_data_dir

RUFIJI = shared_data_dir() / "sentinel2-timeseries-rufiji-rsgislib"


def rufiji_files() -> list[Path]:
    """The 21 dated Rufiji files, in date order."""
    return sorted(RUFIJI.glob("SEN2_*_T37MEM_20m_10band.tif"))


def write_crops(
    out: Path,
    n: int = 4,
    *,
    size: int = 32,
    names: list[str] | None = None,
    shift: tuple[float, float] | None = None,
    zero: bool = False,
) -> list[Path]:
    """Write ``n`` crops (``size`` x ``size``) of the first Rufiji dates.

    Args:
        out: folder to write into.
        n: number of dates.
        size: crop side in pixels.
        names: file names (default: the source names, which carry the dates).
        shift: move the last crop by ``(dx, dy)`` map units (grids that do not overlap).
        zero: write every pixel as nodata (0).

    Returns:
        The written paths.
    """
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, src in enumerate(rufiji_files()[:n]):
        with rasterio.open(src) as ds:
            win = Window(60, 60, size, size)
            data = ds.read(window=win)
            profile = ds.profile | {"width": size, "height": size, "transform": ds.window_transform(win)}
        if zero:
            data[:] = 0
        if shift is not None and i == n - 1:
            profile["transform"] = Affine.translation(*shift) @ profile["transform"]
        path = out / (names[i] if names else src.name)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
        written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "generated")
    print(write_crops(target / "rufiji_crops", 4))
