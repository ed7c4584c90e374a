"""Label sources as QGIS writes them: layer URIs, multi-layer GeoPackages and CSV tables.

QGIS users hand dinogeo what QGIS gives them:

* a layer source copied from the layer properties, ``/data/labels.gpkg|layername=train`` (also
  ``|layerid=N`` and ``|subset=<filter>``);
* a GeoPackage in which QGIS saved the layer style: besides the feature layers it holds the
  non-spatial ``layer_styles`` table (dinogeo's own prediction GeoPackages have it too), which is
  not a label layer;
* a CSV written by *Export > Save Features As* with ``GEOMETRY=AS_WKT`` (a ``WKT`` column) or
  ``AS_XY`` (``X`` and ``Y`` columns), or a delimited-text table with coordinates. A CSV has no
  CRS: it comes from a ``.prj`` beside it or from the ``label_crs`` option.

:func:`parse_label_source` splits a URI into path, layer and filter; :func:`read_label_frame`
returns the features of one source as a GeoDataFrame with a CRS, or a :class:`LabelError` that
names the option to set.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio
import shapely
from rasterio.crs import CRS
from rasterio.errors import CRSError

from dinogeo.errors import LabelError

__all__ = [
    "RASTER_SUFFIXES",
    "LabelKeys",
    "LabelSource",
    "is_raster_source",
    "parse_label_source",
    "read_label_frame",
    "spatial_layers",
]

#: label files read as rasters; everything else is read as vector features
RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".img", ".jp2", ".png", ".asc", ".nc"}
TABLE_SUFFIXES = {".csv", ".txt", ".tsv"}
WKT_COLUMNS = ("wkt", "geometry", "geom", "the_geom", "wkt_geom", "shape")
XY_COLUMNS = (
    ("x", "y"),
    ("lon", "lat"),
    ("longitude", "latitude"),
    ("long", "lat"),
    ("easting", "northing"),
    ("xcoord", "ycoord"),
)


@dataclass(frozen=True)
class LabelKeys:
    """Names of the options that steer label reading, as the caller's configuration spells them.

    Error messages name these keys so the fix can be typed in as given
    (``data.init_args.label_layer`` in a ``dinogeo fit`` config, ``label_layer`` for
    ``dinogeo validate``).
    """

    labels: str = "labels"
    layer: str = "label_layer"
    field: str = "label_field"
    crs: str = "label_crs"
    point_radius: str = "point_radius"

    @classmethod
    def prefixed(cls, prefix: str, *, validation: bool = False) -> LabelKeys:
        """Keys under a config prefix, e.g. ``prefixed("data.init_args.", validation=True)``."""
        v = "val_" if validation else ""
        return cls(
            labels=f"{prefix}{v}labels",
            layer=f"{prefix}{v}label_layer",
            field=f"{prefix}{v}label_field" if validation else f"{prefix}label_field",
            crs=f"{prefix}label_crs",
            point_radius=f"{prefix}point_radius",
        )


@dataclass(frozen=True)
class LabelSource:
    """One label source: a file, the layer to read and an optional attribute filter.

    Attributes:
        path: the file.
        layer: layer name (None: the file's only spatial layer).
        where: attribute filter (the ``subset`` of a QGIS layer source), or None.
    """

    path: Path
    layer: str | None = None
    where: str | None = None

    def __str__(self) -> str:
        out = str(self.path)
        if self.layer is not None:
            out += f"|layername={self.layer}"
        if self.where is not None:
            out += f"|subset={self.where}"
        return out


def parse_label_source(
    source: str | Path, *, layer: str | None = None, keys: LabelKeys | None = None
) -> LabelSource:
    """Split a path or QGIS layer URI (``file.gpkg|layername=train|subset=...``).

    Args:
        source: a path, or a QGIS OGR layer source.
        layer: the layer option; must agree with a ``layername`` in ``source``.
        keys: option names for error messages.

    Returns:
        The source; ``layerid=N`` is resolved to the N-th layer's name when reading.

    Raises:
        LabelError: unknown URI parts or a layer given twice with different names.
    """
    keys = keys or LabelKeys()
    text = str(source)
    if "|" not in text:
        return LabelSource(Path(text), layer)
    path, *parts = text.split("|")
    uri_layer: str | None = None
    where: str | None = None
    for part in parts:
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if not sep or name not in ("layername", "layerid", "subset", "geometrytype"):
            raise LabelError(
                f"{text}: cannot read {part!r} in this layer source; dinogeo understands "
                "'|layername=NAME', '|layerid=N' and '|subset=FILTER'. Fix: set "
                f"{keys.labels} to the file path and {keys.layer} to the layer name"
            )
        if name == "layername":
            uri_layer = value
        elif name == "layerid":
            if not value.strip().isdigit():
                raise LabelError(f"{text}: layerid must be a number, got {value!r}")
            uri_layer = f"#{int(value)}"
        elif name == "subset":
            where = value or None
    if layer is not None and uri_layer is not None and layer != uri_layer:
        raise LabelError(
            f"{text} names layer {uri_layer!r} but {keys.layer} is {layer!r}. Fix: drop one "
            "of them or make them agree"
        )
    return LabelSource(Path(path), layer if layer is not None else uri_layer, where)


def is_raster_source(source: LabelSource) -> bool:
    """True when the labels are a raster (class or height map) rather than features."""
    return source.layer is None and source.path.suffix.lower() in RASTER_SUFFIXES


def spatial_layers(path: Path) -> list[tuple[str, bool]]:
    """``(name, has geometry)`` of every layer of a vector file, in file order.

    Raises:
        LabelError: the file cannot be opened as vector data.
    """
    try:
        rows = pyogrio.list_layers(path)
    except pyogrio.errors.DataSourceError as err:
        raise LabelError(
            f"{path}: cannot open the label file ({err}); export it from QGIS as GeoPackage, "
            "Shapefile, GeoJSON or CSV (Save Features As)"
        ) from err
    return [(str(name), geom is not None) for name, geom in rows]


def _pick_layer(source: LabelSource, keys: LabelKeys) -> str | None:
    layers = spatial_layers(source.path)
    names = [n for n, _ in layers]
    spatial = [n for n, has_geom in layers if has_geom]
    layer = source.layer
    if layer is not None and layer.startswith("#") and layer[1:].isdigit():
        index = int(layer[1:])
        if index >= len(names):
            raise LabelError(f"{source.path}: no layer number {index}; layers: {names}")
        layer = names[index]
    if layer is not None:
        if layer not in names:
            raise LabelError(
                f"{source.path}: no layer {layer!r}; available layers: {spatial or names}. Fix: "
                f"set {keys.layer} to one of them"
            )
        return layer
    if len(spatial) > 1:
        ignored = [n for n in names if n not in spatial]
        note = f" (non-spatial tables {ignored} are ignored)" if ignored else ""
        raise LabelError(
            f"{source.path}: has {len(spatial)} feature layers {spatial}{note}; set "
            f"{keys.layer} to the one holding the labels"
        )
    if spatial:
        return spatial[0]
    return names[0] if names else None


def _column(columns: list[str], candidates: tuple[str, ...]) -> str | None:
    lower = {c.lower(): c for c in columns}
    for name in candidates:
        if name in lower:
            return lower[name]
    return None


def _table_crs(path: Path, crs: str | None, keys: LabelKeys) -> CRS:
    prj = path.with_suffix(".prj")
    text, origin = crs, keys.crs
    if prj.is_file():
        declared = prj.read_text(encoding="utf-8", errors="replace")
        if crs is not None and not _same_crs(declared, crs):
            raise LabelError(
                f"{path}: its {prj.name} declares another CRS than {keys.crs} ({crs}). Fix: "
                f"drop {keys.crs} or correct the .prj"
            )
        text, origin = declared, str(prj)
    if text is None:
        raise LabelError(
            f"{path}: a CSV table has no CRS, so its coordinates cannot be placed on the imagery. "
            f"Fix: set {keys.crs} to the CRS of its coordinates (e.g. EPSG:4326 for longitude/"
            "latitude, or the layer CRS shown in QGIS), or export the layer as GeoPackage"
        )
    try:
        return CRS.from_user_input(text)
    except CRSError as err:
        raise LabelError(f"{path}: cannot read the CRS {text!r} from {origin} ({err})") from err


def _same_crs(a: object, b: object) -> bool:
    try:
        return bool(CRS.from_user_input(a) == CRS.from_user_input(b))
    except CRSError:
        return False


def _read_table(source: LabelSource, crs: str | None, keys: LabelKeys) -> gpd.GeoDataFrame:
    """A CSV/delimited table with a WKT column or X/Y columns, as features."""
    path = source.path
    sep = "\t" if path.suffix.lower() == ".tsv" else None
    try:
        table = pd.read_csv(path, sep=sep, engine="python")
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise LabelError(f"{path}: cannot read the table ({err})") from err
    if source.where:
        try:
            table = table.query(source.where)
        except (ValueError, SyntaxError, KeyError, pd.errors.UndefinedVariableError) as err:
            raise LabelError(
                f"{source}: cannot apply the filter {source.where!r} to a CSV ({err})"
            ) from err
    columns = [str(c) for c in table.columns]
    wkt = _column(columns, WKT_COLUMNS)
    if wkt is not None:
        try:
            geoms = shapely.from_wkt(table[wkt].astype("string").fillna("").to_numpy(str))
        except shapely.errors.GEOSException as err:
            raise LabelError(
                f"{path}: column {wkt!r} does not hold WKT geometries ({err})"
            ) from err
        table = table.drop(columns=[wkt])
    else:
        pairs = [(_column(columns, (a,)), _column(columns, (b,))) for a, b in XY_COLUMNS]
        xy = next(((x, y) for x, y in pairs if x is not None and y is not None), None)
        if xy is None:
            raise LabelError(
                f"{path}: no geometry in this table: dinogeo looks for a WKT column "
                f"({', '.join(WKT_COLUMNS)}) or coordinate columns (X/Y, lon/lat, easting/"
                f"northing); columns are {columns}. Fix: export from QGIS with Save Features As "
                "> CSV and GEOMETRY=AS_WKT or AS_XY, or as GeoPackage"
            )
        x = pd.to_numeric(table[xy[0]], errors="coerce")
        y = pd.to_numeric(table[xy[1]], errors="coerce")
        geoms = shapely.points(x.to_numpy(float), y.to_numpy(float))
        geoms[(x.isna() | y.isna()).to_numpy()] = None
        table = table.drop(columns=list(xy))
    return gpd.GeoDataFrame(table, geometry=geoms, crs=_table_crs(path, crs, keys).to_wkt())


def read_label_frame(
    source: LabelSource, *, crs: str | None = None, keys: LabelKeys | None = None
) -> tuple[gpd.GeoDataFrame, str | None]:
    """Read the features of one label source, with a CRS.

    Args:
        source: the parsed source.
        crs: CRS of coordinates that carry none (CSV tables without ``.prj``); refused when
            the file declares a different one.
        keys: option names for error messages.

    Returns:
        ``(features, layer read)``.

    Raises:
        LabelError: missing file, unreadable file or layer, no geometry, or no CRS.
    """
    keys = keys or LabelKeys()
    path = source.path
    if not path.exists():
        raise LabelError(f"label file {path} does not exist: check {keys.labels}")
    if path.suffix.lower() in TABLE_SUFFIXES:
        return _read_table(source, crs, keys), None
    layer = _pick_layer(source, keys)
    try:
        frame = gpd.read_file(path, layer=layer, where=source.where)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as err:
        raise LabelError(f"{source}: cannot read features ({err})") from err
    if not isinstance(frame, gpd.GeoDataFrame) or frame.geometry.name not in frame:
        raise LabelError(
            f"{path}: layer {layer!r} is a table without geometry; set {keys.layer} to a layer "
            "of points or polygons"
        )
    if frame.crs is None:
        if crs is None:
            raise LabelError(
                f"{path}: the labels have no CRS, so they cannot be placed on the imagery. Fix: "
                "set the layer CRS in QGIS (Layer > Set CRS, then export), add the .prj of a "
                f"Shapefile, or set {keys.crs}"
            )
        frame = frame.set_crs(CRS.from_user_input(crs).to_wkt())
    elif crs is not None and not _same_crs(frame.crs.to_wkt(), crs):
        raise LabelError(
            f"{source}: the layer declares the CRS {frame.crs.name!r}, not {keys.crs} ({crs}). "
            f"Fix: drop {keys.crs} (it is only for tables without a CRS) or reproject the layer"
        )
    return frame, layer


def with_layer(source: LabelSource, layer: str | None) -> LabelSource:
    """The same source with another layer (the validation layer of a training GeoPackage)."""
    return replace(source, layer=layer)
