"""QGIS styles of vector outputs: categorized polygons and points, SLD, GeoPackage ``layer_styles``.

:func:`vector_qml` and :func:`vector_sld` style polygons by the task card's classes,
:func:`point_qml` styles points (validation samples, alerts), and :func:`write_layer_style`
stores a style as the layer's default in the GeoPackage's ``layer_styles`` table (the table QGIS
itself writes), so the layer opens styled.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from xml.etree import ElementTree as ET

from dinogeo.inference.qgis import QGIS_VERSION, qml_text, rgba
from dinogeo.models.task_card import TaskCard

__all__ = ["GPKG_OPTIONS", "point_qml", "vector_qml", "vector_sld", "write_layer_style"]

#: GeoPackage 1.2: read without a "may only be partially supported" warning by the GDAL (3.6) of
#: QGIS 3.22 LTR packages, and holds everything dinogeo writes (features, layer_styles)
GPKG_OPTIONS = {"VERSION": "1.2"}
#: SQLite expression of the current UTC time in ISO 8601 (what GeoPackage DATETIME columns hold)
_ISO_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ','now')"


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
        r, g, b, a = rgba(c.color)
        for name, value in (
            ("color", f"{r},{g},{b},{a}"),
            ("outline_color", "35,35,35,255"),
            ("outline_style", "solid"),
            ("outline_width", "0.1"),
            ("outline_width_unit", "MM"),
            ("style", "solid"),
        ):
            ET.SubElement(opts, "Option", type="QString", name=name, value=value)
    return qml_text(root)


def _marker(parent: ET.Element, name: str, color: str) -> None:
    sym = ET.SubElement(
        parent, "symbol", type="marker", name=name, alpha="1", clip_to_extent="1", force_rhr="0"
    )
    layer = ET.SubElement(
        sym, "layer", attrib={"class": "SimpleMarker", "enabled": "1", "locked": "0", "pass": "0"}
    )
    opts = ET.SubElement(layer, "Option", type="Map")
    r, g, b, a = rgba(color)
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
        return qml_text(root)
    rend = ET.SubElement(
        root, "renderer-v2", type="categorizedSymbol", attr=field, symbollevels="0"
    )
    cats = ET.SubElement(rend, "categories")
    syms = ET.SubElement(rend, "symbols")
    for i, (value, label, color) in enumerate(categories):
        ET.SubElement(cats, "category", value=value, symbol=str(i), label=label, render="true")
        _marker(syms, str(i), color)
    return qml_text(root)


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
