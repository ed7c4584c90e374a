"""Vector labels (GeoPackage, Shapefile, GeoJSON, CSV) mapped to task classes, rasterised per chip.

Polygons and points drawn in QGIS carry a class in one attribute, as a name (``"forest"``) or a
code (``5``). :func:`read_vector_labels` reads one layer (a path or a QGIS layer source, see
:mod:`dinogeo.labels.sources`), checks its CRS, finds the class field
(tolerating the 10-character truncation of Shapefile field names), maps every value to a task-card
class and reprojects the geometries to the imagery's CRS. :func:`rasterize_labels` burns the
features onto any chip grid: class channel indices, :data:`IGNORE_INDEX` where unlabelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.features import rasterize
from shapely.geometry import box

from dinogeo.errors import LabelError
from dinogeo.labels.sources import LabelKeys, LabelSource, parse_label_source, read_label_frame
from dinogeo.models.task_card import TaskCard

__all__ = ["IGNORE_INDEX", "VectorLabels", "read_vector_labels", "rasterize_labels"]

#: label value of unlabelled pixels in class masks (the loss ignores it)
IGNORE_INDEX = 255

#: attribute names tried, in order, when no class field is given
DEFAULT_FIELDS = ("class", "classname", "class_name", "label", "landcover", "land_cover", "name")
DEFAULT_CODE_FIELDS = ("code", "class_id", "classid", "id", "value")


@dataclass
class VectorLabels:
    """Labelled features in the imagery's CRS.

    Attributes:
        path: the vector file.
        layer: the layer read (None for single-layer formats).
        field: the attribute holding the class.
        frame: the features (geometry column only is used after mapping), in ``frame.crs``.
        class_index: per-feature class channel index (into ``task.classes``).
        task: the task card the classes come from.
    """

    path: Path
    layer: str | None
    field: str
    frame: gpd.GeoDataFrame
    class_index: np.ndarray
    task: TaskCard
    source: LabelSource | None = None

    @property
    def crs(self) -> CRS:
        """The CRS of the geometries."""
        return CRS.from_user_input(self.frame.crs)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` of all features."""
        left, bottom, right, top = self.frame.total_bounds
        return float(left), float(bottom), float(right), float(top)

    def __len__(self) -> int:
        return len(self.frame)


def _pick_field(path: object, columns: list[str], field: str | None, keys: LabelKeys) -> str:
    lower = {c.lower(): c for c in columns}
    if field is not None:
        if field in columns:
            return field
        # case-insensitive, then the 10-character truncation Shapefile (dBase) applies
        for key in (field.lower(), field.lower()[:10]):
            if key in lower:
                return lower[key]
        raise LabelError(
            f"{path}: no attribute {field!r} holds the class; available fields: {columns}. "
            f"Fix: set {keys.field} to one of them"
        )
    for name in DEFAULT_FIELDS + DEFAULT_CODE_FIELDS:
        if name in lower:
            return lower[name]
    raise LabelError(
        f"{path}: no class attribute found (looked for {list(DEFAULT_FIELDS + DEFAULT_CODE_FIELDS)}); "
        f"available fields: {columns}. Fix: set {keys.field} to the attribute holding the class"
    )


def read_vector_labels(
    path: str | Path | LabelSource,
    task: TaskCard,
    *,
    field: str | None = None,
    layer: str | None = None,
    target_crs: CRS | str | None = None,
    crs: str | None = None,
    keys: LabelKeys | None = None,
) -> VectorLabels:
    """Read labelled polygons/points and map their class attribute to the task's classes.

    Args:
        path: GeoPackage, Shapefile, GeoJSON or CSV (WKT or X/Y columns), or a QGIS layer
            source such as ``labels.gpkg|layername=train``.
        task: the task card; values are matched by class name, alias or value.
        field: the class attribute; guessed from common names when None.
        layer: the layer to read (required when a GeoPackage has several feature layers;
            non-spatial tables such as ``layer_styles`` do not count).
        target_crs: reproject the geometries to this CRS (the imagery's).
        crs: CRS of coordinates stored without one (a CSV without ``.prj``).
        keys: option names used in error messages (e.g. ``LabelKeys.prefixed("data.")``).

    Returns:
        The features with a class index each, in ``target_crs`` when given.

    Raises:
        LabelError: missing file, no CRS, unknown field or class, or no usable feature.
    """
    keys = keys or LabelKeys()
    source = (
        path if isinstance(path, LabelSource) else parse_label_source(path, layer=layer, keys=keys)
    )
    if not task.is_classification:
        raise LabelError(
            f"{source}: vector labels need a segmentation or change task card, not the "
            f"{task.kind} card {task.name!r}; pass a label raster for regression targets"
        )
    frame, chosen = read_label_frame(source, crs=crs, keys=keys)
    columns = [c for c in frame.columns if c != frame.geometry.name]
    name = _pick_field(source, columns, field, keys)
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty & frame[name].notna()]
    if len(frame) == 0:
        raise LabelError(f"{source}: no feature has both a geometry and a value in {name!r}")
    values = frame[name].tolist()
    unique = list(dict.fromkeys(values))
    lut: dict[object, int] = {}
    unknown = []
    for v in unique:
        try:
            lut[v] = task.class_index(v, source=source.path)
        except LabelError:
            unknown.append(v)
    if unknown:
        known = ", ".join(f"{c.value}={c.name}" for c in task.classes)
        raise LabelError(
            f"{source}: field {name!r} has value(s) {unknown[:20]} that match no class of task "
            f"card {task.name!r} ({known}). Fix: relabel those features, set {keys.field} to "
            "another field, or use a task card whose class names/aliases/values include them"
        )
    index = np.asarray([lut[v] for v in values], dtype=np.int64)
    if target_crs is not None:
        frame = frame.to_crs(CRS.from_user_input(target_crs).to_wkt())
    frame = frame[[frame.geometry.name]].reset_index(drop=True)
    return VectorLabels(source.path, chosen, name, frame, index, task, source)


def rasterize_labels(
    labels: VectorLabels,
    transform: Affine,
    width: int,
    height: int,
    *,
    point_radius: float = 0.0,
) -> np.ndarray:
    """Burn the labels onto one chip grid (in the labels' CRS).

    Polygons are burnt largest first so small polygons drawn inside large ones win; points go last,
    as single pixels (``point_radius=0``) or disks of ``point_radius`` pixels.

    Args:
        labels: the features (already in the chip grid's CRS).
        transform: the chip's affine transform.
        width: chip width in pixels.
        height: chip height in pixels.
        point_radius: disk radius of point labels in pixels; 0 burns the pixel holding the point.

    Returns:
        ``uint8`` (height, width) class channel indices, :data:`IGNORE_INDEX` where unlabelled.
    """
    out = np.full((height, width), IGNORE_INDEX, dtype=np.uint8)
    x0, y0 = transform @ (0, 0)
    x1, y1 = transform @ (width, height)
    chip = box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    geoms = labels.frame.geometry
    pixel = max(abs(transform.a), abs(transform.e))
    pad = point_radius * pixel
    hit = np.asarray(geoms.intersects(chip.buffer(pad) if pad else chip))
    if not hit.any():
        return out
    sel = geoms[hit]
    idx = labels.class_index[hit]
    is_point = np.asarray(sel.geom_type.isin(["Point", "MultiPoint"]))
    areas = np.asarray(sel.area)
    order = np.argsort(-areas, kind="stable")
    shapes = [(sel.iloc[i], int(idx[i])) for i in order if not is_point[i]]
    if shapes:
        rasterize(shapes, out=out, transform=transform)
    points = [(sel.iloc[i], int(idx[i])) for i in range(len(sel)) if is_point[i]]
    if points:
        if point_radius > 0:
            disks = [(g.buffer(pad), v) for g, v in points]
            rasterize(disks, out=out, transform=transform, all_touched=False)
        # every point keeps at least the pixel it falls in
        rasterize(points, out=out, transform=transform, all_touched=True)
    return out
