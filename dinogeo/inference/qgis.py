"""QGIS-ready raster sidecars: ``.qml`` styles and GDAL ``.aux.xml`` (PAM), and the QML helpers.

* Classes (segmentation, change): a paletted raster style with the task card's class names and
  colours, a palette embedded in the COG itself (:func:`layout_for`) and, in the ``.aux.xml``
  (GDAL's place for what a TIFF cannot hold), category names, a colour table whose unused
  entries are transparent (a TIFF palette has no alpha and always 256 entries; GDAL >= 3.6
  prefers the ``.aux.xml`` one) and a thematic raster attribute table (value, class name,
  colour, pixel count), so the ``.tif`` shows class names and only the task's classes without
  its ``.qml``.
* Regression (heights): a pseudocolour ramp in task units between ``valid_range`` (or the data's
  minimum and maximum).

The statistics come from :mod:`dinogeo.inference.output_stats`; vector styles (polygons, points,
GeoPackage ``layer_styles``) are in :mod:`dinogeo.inference.vector_style`. Sidecars are written
to a temporary name and renamed, replacing stale ones.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from dinogeo.inference.encode import OutputSpec
from dinogeo.inference.writer import BandLayout

__all__ = [
    "QGIS_VERSION",
    "layout_for",
    "pseudocolor_qml",
    "qml_text",
    "raster_qml",
    "rgba",
    "write_styles",
]

#: the QGIS version written into the styles
QGIS_VERSION = "3.34.0"
_RAMP = ["#ffffcc", "#c2e699", "#78c679", "#31a354", "#006837"]


def rgba(color: str, alpha: int = 255) -> tuple[int, int, int, int]:
    """``#rrggbb`` as an (r, g, b, alpha) tuple."""
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
            colormap = {c.value: rgba(c.color) for c in task.classes}
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


def _write_text(path: Path, text: str) -> Path:
    """Write a text file under a temporary name, then rename it (no partial file)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def qml_text(root: ET.Element) -> str:
    """A QGIS style document (QML) of an XML tree, indented."""
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
    return qml_text(root)


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
    return qml_text(root)


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
        colors = {c.value: rgba(c.color) for c in classes}
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
        for value in (c.value, c.name, *rgba(c.color), hist.get(c.value, 0)):
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
