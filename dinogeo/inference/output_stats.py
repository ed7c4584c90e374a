"""Statistics of a predicted raster, gathered strip by strip, and the area it covers.

:func:`strip_stats` summarises the first output band of each strip while predicting (a class
histogram, or sums and extremes of heights); :func:`merge_stats` merges them into the raster's
statistics (mean, standard deviation) for its QGIS styles and ``.aux.xml``, and
:func:`merge_output_stats` merges those of several outputs (a mosaic). :func:`footprint_area_km2`
measures a raster's footprint in a local equal-area CRS (:func:`equal_area_crs`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import shapely
from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform
from rasterio.warp import transform_geom

from dinogeo.inference.encode import OutputSpec

__all__ = [
    "equal_area_crs",
    "footprint_area_km2",
    "merge_output_stats",
    "merge_stats",
    "strip_stats",
]


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
