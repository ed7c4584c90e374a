"""Generate second-date fixtures on other grids from the real Rufiji Sentinel-2 time series.

Every function writes into a folder given by the caller (pytest's ``tmp_path``) and returns the
path it wrote; nothing binary is committed. Run as a script to write them into ./generated.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.warp import calculate_default_transform, reproject

from dinogeo._paths import shared_data_dir

SHARED = shared_data_dir()
RUFIJI = "sentinel2-timeseries-rufiji-rsgislib"
DATE1 = f"{RUFIJI}/SEN2_20160312_T37MEM_20m_10band.tif"  # half cloud-masked (0 = nodata)
DATE2 = f"{RUFIJI}/SEN2_20160710_T37MEM_20m_10band.tif"  # fully valid
#: the files' bands in file order (rsgislib's 10-band 20 m stack)
FILE_BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]
#: pixel shift of :func:`write_shifted`: (columns, rows) of padding before the data
PAD = (3, 2)
#: columns of the source cut off the right edge by :func:`write_shifted`
CUT = 10


def _profile(ds: rasterio.DatasetReader) -> dict:
    profile = {k: v for k, v in ds.profile.items() if k not in ("blockxsize", "blockysize")}
    profile["tiled"] = False
    return profile


def write_shifted(src: Path, out: Path) -> Path:
    """Copy ``src`` onto a grid shifted by whole pixels (same CRS and resolution).

    The copy's origin lies ``PAD`` pixels left of and above ``src``'s, and its last ``CUT``
    columns of ``src`` are left out, so read back on ``src``'s grid it equals ``src`` exactly
    where it covers it and is invalid in the ``CUT`` right-most columns.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(src) as ds:
        profile, data = _profile(ds), ds.read()
    t = profile["transform"]
    pc, pr = PAD
    c, h, w = data.shape
    shifted = np.zeros((c, h + pr + 1, w + pc - CUT), dtype=data.dtype)
    shifted[:, pr : pr + h, pc:] = data[:, :, : w - CUT]
    grid = {
        "transform": t @ Affine.translation(-pc, -pr),
        "width": shifted.shape[2],
        "height": shifted.shape[1],
    }
    with rasterio.open(out, "w", **{**profile, **grid}) as dst:
        dst.write(shifted)
    return out


def write_reprojected(src: Path, out: Path, crs: str = "EPSG:32736", res: float = 15.0) -> Path:
    """Reproject ``src`` (bilinear, nodata kept) into another CRS at another resolution."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(src) as ds:
        profile, data = _profile(ds), ds.read()
        transform, width, height = calculate_default_transform(
            ds.crs, crs, ds.width, ds.height, *ds.bounds, resolution=res
        )
    moved = np.zeros((data.shape[0], height, width), dtype=data.dtype)
    reproject(
        data, moved, src_transform=profile["transform"], src_crs=profile["crs"],
        dst_transform=transform, dst_crs=crs, resampling=Resampling.bilinear,
        src_nodata=0, dst_nodata=0,
    )  # fmt: skip
    grid = {"crs": crs, "transform": transform, "width": width, "height": height}
    with rasterio.open(out, "w", **{**profile, **grid}) as dst:
        dst.write(moved)
    return out


if __name__ == "__main__":
    here = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "generated"
    print(write_shifted(SHARED / DATE1, here / "date1_shifted.tif"))
    print(write_reprojected(SHARED / DATE2, here / "date2_utm36s.tif"))
