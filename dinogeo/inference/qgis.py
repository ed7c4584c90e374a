"""QGIS-ready sidecars: ``.qml`` styles, GDAL ``.aux.xml`` (PAM) and GeoPackage ``layer_styles``.

* Classes (segmentation, change): a paletted raster style with the task card's class names and
  colours, a palette embedded in the COG itself and, in the ``.aux.xml`` (GDAL's place for what a
  TIFF cannot hold), category names, a colour table whose unused entries are transparent (a TIFF
  palette has no alpha and always 256 entries; GDAL >= 3.6 prefers the ``.aux.xml`` one) and a
  thematic raster attribute table (value, class name, colour, pixel count), so the ``.tif``
  shows class names and only the task's classes without its ``.qml``.
* Regression (heights): a pseudocolour ramp in task units between ``valid_range`` (or the data's
  minimum and maximum).
* Polygons: a categorized fill style stored as the default in the GeoPackage's ``layer_styles``
  table (the table QGIS itself writes), so the layer opens styled.

Statistics are gathered strip by strip while predicting (:func:`strip_stats`) and merged at the
end; sidecars are written to a temporary name and renamed, replacing stale ones.
"""

from __future__ import annotations

import math
import os
import sqlite3
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import numpy as np
import shapely
from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform
from rasterio.warp import transform_geom

from dinogeo.inference.encode import OutputSpec
from dinogeo.inference.writer import BandLayout
from dinogeo.models.task_card import TaskCard

__all__ = [
    "GPKG_OPTIONS",
    "equal_area_crs",
    "footprint_area_km2",
    "layout_for",
    "merge_output_stats",
    "merge_stats",
    "point_qml",
    "pseudocolor_qml",
    "raster_qml",
    "strip_stats",
    "vector_qml",
    "vector_sld",
    "write_layer_style",
    "write_styles",
]

QGIS_VERSION = "3.34.0"
#: GeoPackage 1.2: read without a "may only be partially supported" warning by the GDAL (3.6) of
#: QGIS 3.22 LTR packages, and holds everything dinogeo writes (features, layer_styles)
GPKG_OPTIONS = {"VERSION": "1.2"}
#: SQLite expression of the current UTC time in ISO 8601 (what GeoPackage DATETIME columns hold)
_ISO_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ','now')"
_RAMP = ["#ffffcc", "#c2e699", "#78c679", "#31a354", "#006837"]


def _rgba(color: str, alpha: int = 255) -> tuple[int, int, int, int]:
    c = color.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16), alpha


def layout_for(spec: OutputSpec) -> BandLayout:
    """Return the writer's band layout (palette, category names, overview resampling)."""
    task = spec.task
    colormap = categories = None
    resampling = "average"
    if task.is_classification:
        resampling = "nearest"
        if spec.dtype == "uint8":
            colormap = {c.value: _rgba(c.color) for c in task.classes}
        categories = {c.value: c.name for c in task.classes}
    return BandLayout(
        dtype=spec.dtype,
        nodata=spec.nodata,
        descriptions=list(spec.descriptions),
        scales=list(spec.scales),
        offsets=list(spec.offsets),
        colormap=colormap,
        categories=categories,
        resampling=resampling,
    )


def strip_stats(band: np.ndarray, spec: OutputSpec) -> dict[str, Any]:
    """Statistics of the first output band of one strip (JSON-ready).

    Args:
        band: ``(rows, width)`` output values.
        spec: the output spec (nodata, task kind).

    Returns:
        ``{"count", "hist"}`` for classes, ``{"count", "sum", "sumsq", "min", "max"}`` (raw
        stored values) for regression.
    """
    nodata = spec.nodata
    valid = ~np.isnan(band) if math.isnan(nodata) else band != band.dtype.type(nodata)
    values = band[valid]
    if spec.task.is_classification:
        uniq, counts = np.unique(values, return_counts=True)
        return {
            "count": int(values.size),
            "hist": {str(int(u)): int(c) for u, c in zip(uniq, counts)},
        }
    v = values.astype(np.float64)
    return {
        "count": int(v.size),
        "sum": float(v.sum()),
        "sumsq": float((v * v).sum()),
        "min": float(v.min()) if v.size else None,
        "max": float(v.max()) if v.size else None,
    }


def merge_stats(parts: list[dict[str, Any]], spec: OutputSpec) -> dict[str, Any]:
    """Merge strip statistics into raster statistics (adds ``mean``, ``std``, ``valid_percent``)."""
    count = sum(int(p.get("count", 0)) for p in parts)
    out: dict[str, Any] = {"count": count}
    if spec.task.is_classification:
        hist: dict[int, int] = {}
        for p in parts:
            for k, v in p.get("hist", {}).items():
                hist[int(k)] = hist.get(int(k), 0) + int(v)
        out["hist"] = dict(sorted(hist.items()))
        total = sum(hist.values())
        if total:
            vals = np.array(list(hist), dtype=np.float64)
            w = np.array(list(hist.values()), dtype=np.float64)
            out["min"], out["max"] = float(vals.min()), float(vals.max())
            out["mean"] = float((vals * w).sum() / total)
            out["std"] = float(math.sqrt(max(0.0, (w * (vals - out["mean"]) ** 2).sum() / total)))
        return out
    if count:
        s = sum(float(p["sum"]) for p in parts)
        sq = sum(float(p["sumsq"]) for p in parts)
        out["min"] = min(float(p["min"]) for p in parts if p.get("min") is not None)
        out["max"] = max(float(p["max"]) for p in parts if p.get("max") is not None)
        out["mean"] = s / count
        out["std"] = math.sqrt(max(0.0, sq / count - out["mean"] ** 2))
    return out


def merge_output_stats(stats: list[dict[str, Any]], spec: OutputSpec) -> dict[str, Any]:
    """Merge the statistics of several outputs (from :func:`merge_stats`), e.g. for a mosaic."""
    if spec.task.is_classification:
        return merge_stats(
            [{"count": s.get("count", 0), "hist": s.get("hist", {})} for s in stats], spec
        )
    parts = [
        {"count": s["count"], "sum": s["mean"] * s["count"],
         "sumsq": (s["std"] ** 2 + s["mean"] ** 2) * s["count"], "min": s["min"], "max": s["max"]}
        for s in stats if s.get("count")
    ]  # fmt: skip
    return merge_stats(parts, spec)


def equal_area_crs(src_crs: CRS, x: float, y: float) -> CRS:
    """Return a Lambert azimuthal equal-area CRS centred on point ``(x, y)`` of ``src_crs``."""
    lon, lat = warp_transform(src_crs, "EPSG:4326", [x], [y])
    return CRS.from_proj4(
        f"+proj=laea +lat_0={lat[0]:.6f} +lon_0={lon[0]:.6f} +datum=WGS84 +units=m"
    )


def footprint_area_km2(src: Any) -> float:
    """Return the area of a raster's footprint in km2 (computed in a local equal-area CRS)."""
    b = src.bounds
    box = shapely.box(b.left, b.bottom, b.right, b.top)
    box = shapely.segmentize(box, max(b.right - b.left, b.top - b.bottom) / 32)
    laea = equal_area_crs(src.crs, (b.left + b.right) / 2, (b.bottom + b.top) / 2)
    geom = shapely.geometry.shape(transform_geom(src.crs, laea, shapely.geometry.mapping(box)))
    return float(geom.area) / 1e6


def _write_text(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _xml(root: ET.Element) -> str:
    ET.indent(root)
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + ET.tostring(
        root, encoding="unicode"
    )


def _pipe_tail(pipe: ET.Element) -> None:
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(pipe, "huesaturation", saturation="0", grayscaleMode="0", colorizeOn="0")
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")


def raster_qml(spec: OutputSpec, stats: dict[str, Any]) -> str:
    """Return a QGIS raster style: a paletted legend for classes, a colour ramp for values.

    Args:
        spec: output spec (task card, dtype, scale/offset).
        stats: merged statistics (used for the ramp when the task has no ``valid_range``).

    Returns:
        The ``.qml`` XML text.
    """
    task = spec.task
    root = ET.Element("qgis", version=QGIS_VERSION, styleCategories="AllStyleCategories")
    pipe = ET.SubElement(root, "pipe")
    if task.is_classification:
        rr = ET.SubElement(
            pipe, "rasterrenderer", type="paletted", band="1", opacity="1", alphaBand="-1"
        )
        ET.SubElement(rr, "rasterTransparency")
        pal = ET.SubElement(rr, "colorPalette")
        for c in task.classes:
            ET.SubElement(
                pal, "paletteEntry", value=str(c.value), color=c.color, label=c.name, alpha="255"
            )
    else:
        lo, hi = _ramp_range(spec, stats)
        units = f" {task.units}" if task.units else ""
        scale, offset = spec.scales[0], spec.offsets[0]
        items = []
        for i, color in enumerate(_RAMP):
            v = lo + (hi - lo) * i / (len(_RAMP) - 1)
            items.append((repr(v), color, f"{v * scale + offset:.1f}{units}"))
        return pseudocolor_qml(items, repr(lo), repr(hi))
    _pipe_tail(pipe)
    ET.SubElement(root, "blendMode").text = "0"
    return _xml(root)


def pseudocolor_qml(
    items: list[tuple[str, str, str]],
    minimum: str,
    maximum: str,
    *,
    discrete: bool = False,
    transparent: str | None = None,
) -> str:
    """Return a QGIS single-band pseudocolour raster style (``.qml`` XML text).

    Args:
        items: ``(value, colour, label)`` of each colour-ramp entry, values as written in the XML.
        minimum: lowest value of the ramp (kept: QGIS does not restretch to the data).
        maximum: highest value of the ramp.
        discrete: one colour per interval up to each value (a legend of periods) instead of an
            interpolated ramp.
        transparent: a pixel value drawn fully transparent (e.g. 0 = no alert).
    """
    root = ET.Element("qgis", version=QGIS_VERSION, styleCategories="AllStyleCategories")
    pipe = ET.SubElement(root, "pipe")
    renderer = {"type": "singlebandpseudocolor", "band": "1", "opacity": "1", "alphaBand": "-1"}
    rr = ET.SubElement(pipe, "rasterrenderer", renderer)
    rr.attrib.update(classificationMin=minimum, classificationMax=maximum)
    transparency = ET.SubElement(rr, "rasterTransparency")
    if transparent is not None:
        pixels = ET.SubElement(transparency, "singleValuePixelList")
        ET.SubElement(
            pixels, "pixelListEntry", min=transparent, max=transparent, percentTransparent="100"
        )
    mmo = ET.SubElement(rr, "minMaxOrigin")
    for tag, text in (("limits", "None"), ("extent", "WholeRaster")):
        ET.SubElement(mmo, tag).text = text
    shader = ET.SubElement(ET.SubElement(rr, "rastershader"), "colorrampshader")
    shader.attrib.update(
        colorRampType="DISCRETE" if discrete else "INTERPOLATED",
        classificationMode="2" if discrete else "1",
        clip="0",
        minimumValue=minimum,
        maximumValue=maximum,
        labelPrecision="1",
    )
    for value, color, label in items:
        ET.SubElement(shader, "item", value=value, color=color, alpha="255", label=label)
    _pipe_tail(pipe)
    ET.SubElement(root, "blendMode").text = "0"
    return _xml(root)


def _ramp_range(spec: OutputSpec, stats: dict[str, Any]) -> tuple[float, float]:
    """Ramp limits in stored values: the data's min/max clipped to the valid range, else the range."""
    scale, offset = spec.scales[0], spec.offsets[0]
    vr = spec.task.valid_range
    stored = None if vr is None else ((vr[0] - offset) / scale, (vr[1] - offset) / scale)
    if stats.get("min") is None or stats.get("max") is None:
        return stored if stored is not None else (0.0, 1.0)
    lo, hi = float(stats["min"]), float(stats["max"])
    if stored is not None:
        lo, hi = max(lo, stored[0]), min(hi, stored[1])
    if not hi > lo:
        hi = lo + 1.0
    return lo, hi


#: GDAL raster attribute table field types and usages (gdal.h GDALRATFieldType / GDALRATFieldUsage)
_RAT_INTEGER, _RAT_STRING = 0, 2
_GFU_GENERIC, _GFU_PIXEL_COUNT, _GFU_NAME, _GFU_MIN_MAX = 0, 1, 2, 5
_GFU_RED, _GFU_GREEN, _GFU_BLUE, _GFU_ALPHA = 6, 7, 8, 9


def _class_tables(band: ET.Element, spec: OutputSpec, stats: dict[str, Any]) -> None:
    """Category names, a colour table (unused entries transparent) and a thematic RAT."""
    classes = spec.task.classes
    names = {c.value: c.name for c in classes}
    top = max(names)
    cats = ET.SubElement(band, "CategoryNames")
    for v in range(top + 1):
        ET.SubElement(cats, "Category").text = names.get(v, "")
    if spec.dtype == "uint8":
        ET.SubElement(band, "ColorInterp").text = "Palette"
        table = ET.SubElement(band, "ColorTable")
        colors = {c.value: _rgba(c.color) for c in classes}
        for v in range(top + 1):
            r, g, b, a = colors.get(v, (0, 0, 0, 0))
            ET.SubElement(table, "Entry", c1=str(r), c2=str(g), c3=str(b), c4=str(a))
    rat = ET.SubElement(band, "GDALRasterAttributeTable", tableType="thematic")
    fields = [
        ("Value", _RAT_INTEGER, _GFU_MIN_MAX),
        ("Class", _RAT_STRING, _GFU_NAME),
        ("Red", _RAT_INTEGER, _GFU_RED),
        ("Green", _RAT_INTEGER, _GFU_GREEN),
        ("Blue", _RAT_INTEGER, _GFU_BLUE),
        ("Alpha", _RAT_INTEGER, _GFU_ALPHA),
        ("Count", _RAT_INTEGER, _GFU_PIXEL_COUNT),
    ]
    for i, (name, kind, usage) in enumerate(fields):
        defn = ET.SubElement(rat, "FieldDefn", index=str(i))
        ET.SubElement(defn, "Name").text = name
        ET.SubElement(defn, "Type").text = str(kind)
        ET.SubElement(defn, "Usage").text = str(usage)
    hist = {int(k): int(v) for k, v in (stats.get("hist") or {}).items()}
    for i, c in enumerate(classes):
        row = ET.SubElement(rat, "Row", index=str(i))
        for value in (c.value, c.name, *_rgba(c.color), hist.get(c.value, 0)):
            ET.SubElement(row, "F").text = str(value)


def _aux_xml(spec: OutputSpec, stats: dict[str, Any], pixels: int | None) -> str:
    root = ET.Element("PAMDataset")
    band = ET.SubElement(root, "PAMRasterBand", band="1")
    ET.SubElement(band, "Description").text = spec.descriptions[0]
    if spec.task.is_classification:
        _class_tables(band, spec, stats)
    if stats.get("count"):
        md = ET.SubElement(band, "Metadata")
        items = {
            "STATISTICS_MINIMUM": stats["min"],
            "STATISTICS_MAXIMUM": stats["max"],
            "STATISTICS_MEAN": stats["mean"],
            "STATISTICS_STDDEV": stats["std"],
        }
        if pixels:
            items["STATISTICS_VALID_PERCENT"] = 100.0 * stats["count"] / pixels
        for key, value in items.items():
            ET.SubElement(md, "MDI", key=key).text = repr(float(value))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def write_styles(
    path: Path,
    spec: OutputSpec,
    stats: dict[str, Any],
    *,
    aux: bool = True,
    pixels: int | None = None,
) -> list[Path]:
    """Write ``<path stem>.qml`` and (optionally) ``<path>.aux.xml`` next to a raster.

    Args:
        path: the raster (COG or VRT).
        spec: output spec.
        stats: merged statistics.
        aux: write the PAM ``.aux.xml`` (category names and statistics), replacing a stale one.
        pixels: total pixels of the raster (for ``STATISTICS_VALID_PERCENT``).

    Returns:
        The files written.
    """
    out = [_write_text(path.with_suffix(".qml"), raster_qml(spec, stats))]
    if aux:
        if pixels is None:
            import rasterio

            with rasterio.open(path) as ds:
                pixels = ds.width * ds.height
        out.append(_write_text(Path(str(path) + ".aux.xml"), _aux_xml(spec, stats, pixels)))
    return out


def vector_qml(task: TaskCard, field: str = "class_name") -> str:
    """Return a categorized polygon style (one fill colour per class of the task card)."""
    root = ET.Element("qgis", version=QGIS_VERSION, styleCategories="Symbology")
    rend = ET.SubElement(
        root,
        "renderer-v2",
        type="categorizedSymbol",
        attr=field,
        symbollevels="0",
        enableorderby="0",
        forceraster="0",
    )
    cats = ET.SubElement(rend, "categories")
    syms = ET.SubElement(rend, "symbols")
    for i, c in enumerate(task.classes):
        ET.SubElement(cats, "category", value=c.name, symbol=str(i), label=c.name, render="true")
        sym = ET.SubElement(
            syms, "symbol", type="fill", name=str(i), alpha="1", clip_to_extent="1", force_rhr="0"
        )
        layer = ET.SubElement(
            sym,
            "layer",
            attrib={"class": "SimpleFill", "enabled": "1", "locked": "0", "pass": "0"},
        )
        opts = ET.SubElement(layer, "Option", type="Map")
        r, g, b, a = _rgba(c.color)
        for name, value in (
            ("color", f"{r},{g},{b},{a}"),
            ("outline_color", "35,35,35,255"),
            ("outline_style", "solid"),
            ("outline_width", "0.1"),
            ("outline_width_unit", "MM"),
            ("style", "solid"),
        ):
            ET.SubElement(opts, "Option", type="QString", name=name, value=value)
    return _xml(root)


def _marker(parent: ET.Element, name: str, color: str) -> None:
    sym = ET.SubElement(
        parent, "symbol", type="marker", name=name, alpha="1", clip_to_extent="1", force_rhr="0"
    )
    layer = ET.SubElement(
        sym, "layer", attrib={"class": "SimpleMarker", "enabled": "1", "locked": "0", "pass": "0"}
    )
    opts = ET.SubElement(layer, "Option", type="Map")
    r, g, b, a = _rgba(color)
    for key, value in (
        ("color", f"{r},{g},{b},{a}"),
        ("name", "circle"),
        ("outline_color", "35,35,35,255"),
        ("outline_width", "0.1"),
        ("outline_width_unit", "MM"),
        ("size", "2"),
        ("size_unit", "MM"),
    ):
        ET.SubElement(opts, "Option", type="QString", name=key, value=value)


def point_qml(field: str | None, categories: list[tuple[str, str, str]]) -> str:
    """Return a point style: categorized on ``field`` or, without one, a single grey marker.

    Args:
        field: the attribute to categorise on, or None.
        categories: ``(value, label, "#rrggbb")`` per category.
    """
    root = ET.Element("qgis", version=QGIS_VERSION, styleCategories="Symbology")
    if field is None:
        rend = ET.SubElement(root, "renderer-v2", type="singleSymbol", symbollevels="0")
        _marker(ET.SubElement(rend, "symbols"), "0", "#808080")
        return _xml(root)
    rend = ET.SubElement(
        root, "renderer-v2", type="categorizedSymbol", attr=field, symbollevels="0"
    )
    cats = ET.SubElement(rend, "categories")
    syms = ET.SubElement(rend, "symbols")
    for i, (value, label, color) in enumerate(categories):
        ET.SubElement(cats, "category", value=value, symbol=str(i), label=label, render="true")
        _marker(syms, str(i), color)
    return _xml(root)


def vector_sld(task: TaskCard, layer: str, field: str = "class_name") -> str:
    """Return an OGC SLD 1.1 with one rule per class (used by tools other than QGIS)."""
    ns = {
        "xmlns": "http://www.opengis.net/sld",
        "xmlns:ogc": "http://www.opengis.net/ogc",
        "xmlns:se": "http://www.opengis.net/se",
        "version": "1.1.0",
    }
    root = ET.Element("StyledLayerDescriptor", ns)
    nl = ET.SubElement(root, "NamedLayer")
    ET.SubElement(nl, "se:Name").text = layer
    fts = ET.SubElement(ET.SubElement(nl, "UserStyle"), "se:FeatureTypeStyle")
    for c in task.classes:
        rule = ET.SubElement(fts, "se:Rule")
        ET.SubElement(rule, "se:Name").text = c.name
        flt = ET.SubElement(ET.SubElement(rule, "ogc:Filter"), "ogc:PropertyIsEqualTo")
        ET.SubElement(flt, "ogc:PropertyName").text = field
        ET.SubElement(flt, "ogc:Literal").text = c.name
        fill = ET.SubElement(ET.SubElement(rule, "se:PolygonSymbolizer"), "se:Fill")
        ET.SubElement(fill, "se:SvgParameter", name="fill").text = c.color
    ET.indent(root)
    return ET.tostring(root, encoding="unicode")


def write_layer_style(
    gpkg: Path, layer: str, qml: str, sld: str, *, geometry_column: str | None = None
) -> None:
    """Store a default style for ``layer`` in the GeoPackage's ``layer_styles`` table (QGIS schema).

    Args:
        gpkg: the GeoPackage.
        layer: the styled layer.
        qml: QGIS style XML.
        sld: OGC SLD XML.
        geometry_column: the layer's geometry column (read from ``gpkg_geometry_columns`` when
            None).
    """
    con = sqlite3.connect(gpkg)
    try:
        if geometry_column is None:
            row = con.execute(
                "SELECT column_name FROM gpkg_geometry_columns WHERE table_name = ?", (layer,)
            ).fetchone()
            geometry_column = row[0] if row else "geom"
        con.execute(
            "CREATE TABLE IF NOT EXISTS layer_styles (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "f_table_catalog TEXT(256), f_table_schema TEXT(256), f_table_name TEXT(256), "
            "f_geometry_column TEXT(256), styleName TEXT(30), styleQML TEXT, styleSLD TEXT, "
            "useAsDefault BOOLEAN, description TEXT, owner TEXT(30), ui TEXT(30), "
            f"update_time DATETIME DEFAULT ({_ISO_NOW}))"
        )
        con.execute(
            "INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier, description, "
            f"last_change) VALUES ('layer_styles', 'attributes', 'layer_styles', '', {_ISO_NOW})"
        )
        con.execute("DELETE FROM layer_styles WHERE f_table_name = ?", (layer,))
        con.execute(
            "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, "
            "f_geometry_column, styleName, styleQML, styleSLD, useAsDefault, description, owner, "
            f"ui, update_time) VALUES ('', '', ?, ?, ?, ?, ?, 1, ?, '', '', {_ISO_NOW})",
            (layer, geometry_column, layer, qml, sld, "dinogeo default style"),
        )
        con.commit()
    finally:
        con.close()
