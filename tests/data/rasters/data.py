"""Generate raster fixtures for the reader tests from real imagery in ../shared/data.

Every function writes into a folder given by the caller (pytest's ``tmp_path``) and returns the
paths it wrote; nothing binary is committed. Run as a script to write them into ./generated.
"""

from __future__ import annotations

import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from dinogeo._paths import shared_data_dir

SHARED = shared_data_dir()
BAHAMAS = "landsat7-rgb-bahamas-rasterio/RGB.byte.tif"
VIRGINIA_10M = "sentinel2-l1c-virginia-sattestdata/S2_18SVG_20160112_10m_B02-B03-B04-B08_crop.tif"

# world-file extension per image format
WORLD_EXT = {"png": ("PNG", ".pgw"), "jpg": ("JPEG", ".jgw"), "tif": ("GTiff", ".tfw")}


def write_world_file_image(
    shared: Path, out: Path, fmt: str = "png", window: Window | None = None
) -> tuple[Path, rasterio.coords.BoundingBox]:
    """Cut a window of the real Bahamas Landsat RGB into a plain image + world file + .prj.

    Returns the image path and the bounds of the window in the source (what GDAL should see).
    """
    driver, wext = WORLD_EXT[fmt]
    window = window or Window(200, 150, 96, 80)
    with rasterio.open(shared / BAHAMAS) as src:
        data = src.read(window=window)
        t = src.window_transform(window)
        bounds = rasterio.windows.bounds(window, src.transform)
        wkt = src.crs.to_wkt(version="WKT1_ESRI")
    out.mkdir(parents=True, exist_ok=True)
    img = out / f"bahamas_world.{fmt}"
    profile = {"driver": driver, "width": data.shape[2], "height": data.shape[1]}
    profile.update(count=data.shape[0], dtype="uint8")
    if driver == "GTiff":
        profile["profile"] = "baseline"  # no GeoTIFF tags: the world file is the georeferencing
    with rasterio.Env(GDAL_PAM_ENABLED="NO"), warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(img, "w", **profile) as dst:
            dst.write(data)
    # world file: pixel size x, rotation, rotation, pixel size y, centre of the upper-left pixel
    lines = [t.a, t.d, t.b, t.e, t.c + t.a / 2 + t.b / 2, t.f + t.d / 2 + t.e / 2]
    img.with_suffix(wext).write_text("\n".join(f"{v:.10f}" for v in lines) + "\n")
    img.with_suffix(".prj").write_text(wkt)
    return img, rasterio.coords.BoundingBox(*bounds)


def write_truncated(shared: Path, out: Path) -> Path:
    """A real GeoTIFF cut to 40 % of its bytes (header intact, strips missing)."""
    out.mkdir(parents=True, exist_ok=True)
    raw = (shared / BAHAMAS).read_bytes()
    path = out / "truncated.tif"
    path.write_bytes(raw[: int(len(raw) * 0.4)])
    return path


def write_garbage(out: Path) -> Path:
    """A file named .tif whose bytes are not a TIFF."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "corrupt.tif"
    path.write_bytes(b"II*\x00" + b"this is not a tiff" * 20)
    return path


def write_no_crs(shared: Path, out: Path) -> Path:
    """A window of the real Virginia Sentinel-2 file with its transform but without a CRS."""
    out.mkdir(parents=True, exist_ok=True)
    with rasterio.open(shared / VIRGINIA_10M) as src:
        w = Window(0, 0, 64, 64)
        data = src.read(window=w)
        profile = src.profile | {"width": 64, "height": 64, "transform": src.window_transform(w)}
    profile.pop("crs", None)
    path = out / "no_crs.tif"
    with rasterio.Env(GDAL_PAM_ENABLED="NO"):
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
    return path


def write_all_nodata(shared: Path, out: Path) -> Path:
    """The Virginia grid (real CRS/transform) with every pixel set to the nodata value 0."""
    out.mkdir(parents=True, exist_ok=True)
    with rasterio.open(shared / VIRGINIA_10M) as src:
        profile = src.profile | {"width": 128, "height": 128, "nodata": 0}
    path = out / "all_nodata.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.zeros((profile["count"], 128, 128), dtype=profile["dtype"]))
    return path


def write_tiny_cog(shared: Path, out: Path, size: int = 256) -> Path:
    """A tiled DEFLATE GeoTIFF with overviews cut from the real Virginia 10 m file."""
    out.mkdir(parents=True, exist_ok=True)
    with rasterio.open(shared / VIRGINIA_10M) as src:
        w = Window(64, 64, size, size)
        data = src.read(window=w)
        profile = src.profile | {
            "width": size,
            "height": size,
            "transform": src.window_transform(w),
            "tiled": True,
            "blockxsize": 128,
            "blockysize": 128,
            "compress": "deflate",
        }
        descriptions = src.descriptions
    path = out / "tiny_cog.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = descriptions
        dst.build_overviews([2, 4])
    return path


def write_vrt(shared: Path, out: Path) -> Path:
    """A VRT (XML) pointing at the real Virginia 10 m GeoTIFF."""
    import rasterio.shutil

    out.mkdir(parents=True, exist_ok=True)
    path = out / "virginia.vrt"
    rasterio.shutil.copy(shared / VIRGINIA_10M, path, driver="VRT")
    return path


def write_all(shared: Path, out: Path) -> list[Path]:
    """Write every fixture into ``out``."""
    paths = [write_world_file_image(shared, out, fmt)[0] for fmt in WORLD_EXT]
    paths += [write_truncated(shared, out), write_garbage(out), write_no_crs(shared, out)]
    paths += [write_all_nodata(shared, out), write_tiny_cog(shared, out), write_vrt(shared, out)]
    return paths


if __name__ == "__main__":
    target = Path(__file__).with_name("generated")
    shutil.rmtree(target, ignore_errors=True)
    for p in write_all(Path(sys.argv[1]) if len(sys.argv) > 1 else SHARED, target):
        print(p)
