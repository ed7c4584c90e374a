"""Tracking products: rasters, alert polygons, QGIS styles, loss by period, accuracy table.

Conventions (Hansen ``lossyear``, GLAD/RADD alerts, OPERA DIST-ALERT): ``loss_date.tif`` holds
the date of the first anomalous observation of an alert as an int32 ``YYYYMMDD`` (0 = no loss,
also its nodata so QGIS draws it transparent); ``confidence.tif`` is uint8 0 none, 1 low, 2 high,
255 not monitored (nodata, or too few history observations); ``magnitude.tif`` is float32, the
mean anomaly score of the alert (NaN none). ``alerts.gpkg`` has one polygon per connected region
(4-connected) of one confidence level with ``first_date``, ``last_date``, ``confidence``,
``area_ha`` (computed in a local Lambert azimuthal equal-area CRS), ``magnitude`` and the
``lon``/``lat`` of a point inside it; regions smaller than the
minimum mapping unit are dropped from the polygons and the rasters.
"""

from __future__ import annotations

import csv
import datetime
import json
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from rasterio.features import shapes
from scipy import ndimage

from dinogeo.inference.encode import OutputSpec
from dinogeo.inference.output_stats import equal_area_crs
from dinogeo.inference.qgis import pseudocolor_qml, raster_qml
from dinogeo.inference.vector_style import vector_qml, vector_sld, write_layer_style
from dinogeo.models.task_card import TaskCard, TaskClass

__all__ = [
    "CONFIDENCE_TASK",
    "apply_mmu_and_polygons",
    "date_ramp_qml",
    "loss_by_period",
    "pixel_area_ha",
    "write_metrics",
    "write_point_table",
    "write_raster",
    "write_styles",
]

NOT_MONITORED = 255
CONFIDENCE_TASK = TaskCard(
    name="loss_alert_confidence",
    kind="segmentation",
    target="loss alert confidence",
    units=None,
    dtype="uint8",
    nodata=NOT_MONITORED,
    valid_range=None,
    classes=(TaskClass(1, "low", "#fdae61"), TaskClass(2, "high", "#d7191c")),
)
MAGNITUDE_TASK = TaskCard(
    name="loss_alert_magnitude",
    kind="regression",
    target="loss alert magnitude (anomaly score, standard deviations of the history)",
    units="sd",
    dtype="float32",
    nodata=None,
    valid_range=None,
)
_DATE_COLORS = ["#fde725", "#90d743", "#35b779", "#21918c", "#31688e", "#443983", "#440154"]


def write_raster(path: Path, array: np.ndarray, profile: dict[str, Any], description: str) -> None:
    """Write one band as a tiled, DEFLATE-compressed GeoTIFF."""
    prof = dict(profile, count=1, dtype=str(array.dtype), compress="deflate", tiled=True)
    prof["blockxsize"] = prof["blockysize"] = 256
    if array.shape[0] < 256 or array.shape[1] < 256:
        prof.pop("blockxsize"), prof.pop("blockysize")
        prof["tiled"] = False
    with rasterio.open(path, "w", **prof) as ds:
        ds.write(array, 1)
        ds.set_band_description(1, description)


def pixel_area_ha(crs: Any, transform: Any, width: int, height: int) -> float:
    """Area of one pixel at the grid centre, in hectares, in a local equal-area CRS."""
    from rasterio.warp import transform_geom

    cx, cy = transform @ (width / 2, height / 2)
    x0, y0 = transform @ (width // 2, height // 2)
    x1, y1 = transform @ (width // 2 + 1, height // 2 + 1)
    box = shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    laea = equal_area_crs(crs, cx, cy)
    geom = shapely.geometry.shape(transform_geom(crs, laea, shapely.geometry.mapping(box)))
    return float(geom.area) / 1e4


def apply_mmu_and_polygons(
    loss: np.ndarray,
    confidence: np.ndarray,
    magnitude: np.ndarray,
    crs: Any,
    transform: Any,
    gpkg: Path,
    *,
    mmu_ha: float = 0.0,
) -> int:
    """Drop alert regions under the minimum mapping unit (in place) and write the polygons.

    Args:
        loss: (H, W) int32 YYYYMMDD (0 none), edited in place.
        confidence: (H, W) uint8, edited in place.
        magnitude: (H, W) float32, edited in place.
        crs: grid CRS.
        transform: grid transform.
        gpkg: output GeoPackage (layer ``alerts``, default QGIS style in ``layer_styles``).
        mmu_ha: minimum mapping unit in hectares.

    Returns:
        The number of polygons written.
    """
    import geopandas as gpd

    h, w = loss.shape
    laea = equal_area_crs(crs, *(transform @ (w / 2, h / 2)))
    rows: list[dict[str, Any]] = []
    geoms: list[shapely.Geometry] = []
    for level, name in ((1, "low"), (2, "high")):
        labels, count = ndimage.label(confidence == level)
        if count == 0:
            continue
        ids = np.arange(1, count + 1)
        first = ndimage.minimum(loss, labels, ids)
        last = ndimage.maximum(loss, labels, ids)
        mag = ndimage.mean(np.nan_to_num(magnitude), labels, ids)
        polys: dict[int, shapely.Geometry] = {}
        for geom, value in shapes(labels.astype(np.int32), mask=labels > 0, transform=transform):
            polys[int(value)] = shapely.geometry.shape(geom)
        areas = (
            gpd.GeoSeries([polys[int(i)] for i in ids], crs=crs).to_crs(laea).area.to_numpy() / 1e4
        )
        for k, i in enumerate(ids):
            if areas[k] < mmu_ha:
                drop = labels == i
                loss[drop], confidence[drop], magnitude[drop] = 0, 0, np.nan
                continue
            rows.append(
                {
                    "first_date": _iso(int(first[k])),
                    "last_date": _iso(int(last[k])),
                    "confidence": name,
                    "confidence_level": level,
                    "area_ha": round(float(areas[k]), 4),
                    "magnitude": round(float(mag[k]), 3),
                }
            )
            geoms.append(polys[int(i)])
    cols = ["first_date", "last_date", "confidence", "confidence_level", "area_ha", "magnitude"]
    df = gpd.GeoDataFrame(rows if rows else {c: [] for c in cols}, geometry=geoms, crs=crs)
    centre = df.geometry.representative_point().to_crs("EPSG:4326")
    df["lon"], df["lat"] = centre.x.round(6), centre.y.round(6)
    df.to_file(gpkg, layer="alerts", driver="GPKG")
    write_layer_style(
        gpkg,
        "alerts",
        vector_qml(CONFIDENCE_TASK, field="confidence"),
        vector_sld(CONFIDENCE_TASK, "alerts", field="confidence"),
    )
    return len(rows)


def _iso(yyyymmdd: int) -> str:
    s = f"{yyyymmdd:08d}"
    return f"{s[:4]}-{s[4:6]}-{s[6:]}"


def _day_after(yyyymmdd: int) -> int:
    """The calendar day after a ``YYYYMMDD`` date (``20160630`` -> ``20160701``)."""
    day = datetime.date(yyyymmdd // 10000, yyyymmdd // 100 % 100, yyyymmdd % 100)
    nxt = day + datetime.timedelta(days=1)
    return nxt.year * 10000 + nxt.month * 100 + nxt.day


def date_ramp_qml(first: int, last: int) -> str:
    """QGIS style for ``loss_date.tif``: a discrete colour ramp of dates (0 transparent)."""
    y0, y1 = first // 10000, last // 10000
    edges = [y * 10000 + md for y in range(y0, y1 + 1) for md in (630, 1231)]
    edges = [e for e in edges if first <= e < last] + [last]  # the last class ends on the last date
    items = []
    for i, e in enumerate(edges):
        color = _DATE_COLORS[int(round(i * (len(_DATE_COLORS) - 1) / max(len(edges) - 1, 1)))]
        lo = _iso(_day_after(edges[i - 1])) if i else _iso(first)
        items.append((str(e), color, f"{lo} .. {_iso(e)}"))
    return pseudocolor_qml(items, str(first), str(last), discrete=True, transparent="0")


def write_styles(out: Path, loss: np.ndarray, magnitude: np.ndarray) -> list[Path]:
    """Write ``.qml`` styles next to the three rasters."""
    alerts = loss[loss > 0]
    first, last = (int(alerts.min()), int(alerts.max())) if alerts.size else (19700101, 19700102)
    files = [out / "loss_date.qml", out / "confidence.qml", out / "magnitude.qml"]
    files[0].write_text(date_ramp_qml(first, last))
    conf = OutputSpec(CONFIDENCE_TASK, "uint8", NOT_MONITORED, ["confidence"], [1.0], [0.0])
    files[1].write_text(raster_qml(conf, {}))
    finite = magnitude[np.isfinite(magnitude)]
    stats = {"min": float(finite.min()), "max": float(finite.max())} if finite.size else {}
    mag = OutputSpec(MAGNITUDE_TASK, "float32", float("nan"), ["magnitude"], [1.0], [0.0])
    files[2].write_text(raster_qml(mag, stats))
    return files


def loss_by_period(
    loss: np.ndarray, confidence: np.ndarray, area_ha: float, csv_path: Path, png_path: Path
) -> list[dict[str, Any]]:
    """Alert area per year and per month by confidence, as CSV and a bar chart."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

    rows: list[dict[str, Any]] = []
    sel = loss > 0
    days, conf = loss[sel], confidence[sel]
    for kind, key in (("year", days // 10000), ("month", days // 100)):
        for level, name in ((1, "low"), (2, "high")):
            vals, counts = np.unique(key[conf == level], return_counts=True)
            for v, c in zip(vals, counts):
                period = str(v) if kind == "year" else f"{v // 100}-{v % 100:02d}"
                rows.append(
                    {
                        "period_type": kind,
                        "period": period,
                        "confidence": name,
                        "pixels": int(c),
                        "area_ha": round(float(c) * area_ha, 4),
                    }
                )
    with open(csv_path, "w", newline="") as f:
        wr = csv.DictWriter(
            f, fieldnames=["period_type", "period", "confidence", "pixels", "area_ha"]
        )
        wr.writeheader()
        wr.writerows(rows)
    fig = Figure(figsize=(12, 3.8))
    axes = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1]})
    for ax, kind in zip(axes, ("month", "year")):
        periods = sorted({r["period"] for r in rows if r["period_type"] == kind})
        bottom = np.zeros(len(periods))
        for name, color in (("high", "#d7191c"), ("low", "#fdae61")):
            v = np.array(
                [
                    sum(
                        r["area_ha"]
                        for r in rows
                        if r["period_type"] == kind and r["period"] == p and r["confidence"] == name
                    )
                    for p in periods
                ]
            )
            ax.bar(range(len(periods)), v, bottom=bottom, color=color, label=f"{name} confidence")
            bottom += v
        step = max(1, len(periods) // 12)
        ax.set_xticks(
            range(0, len(periods), step), periods[::step], rotation=45, ha="right", fontsize=8
        )
        ax.set_ylabel("alert area (ha)")
        ax.set_title(f"loss alerts by {kind}")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    return rows


def write_point_table(path: Path, table: dict[str, Any]) -> Path:
    """Write the per-point table: reference date and every method's alert date (empty: none)."""
    names = list(table)
    with open(path, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(names)
        wr.writerows(zip(*(table[n] for n in names)))
    return path


def write_metrics(out: Path, metrics: dict[str, Any]) -> list[Path]:
    """Write ``metrics.json`` and the accuracy table (``accuracy.csv``, ``accuracy.md``)."""
    shown = {k: v for k, v in metrics.items() if k != "per_point"}
    (out / "metrics.json").write_text(json.dumps(shown, indent=2) + "\n")
    header = [
        "method",
        "UA",
        "PA",
        "F1",
        "TP",
        "FP",
        "FN",
        "TN",
        "lag median (d)",
        "lag IQR (d)",
        "early",
    ]
    lines = []
    for name, m in metrics["methods"].items():
        c, lag = m["confusion"], m["lag_days"]
        iqr = "" if lag["q25"] is None else f"{lag['q25']:.0f}..{lag['q75']:.0f}"
        med = "" if lag["median"] is None else f"{lag['median']:.0f}"
        lines.append(
            [
                name,
                f"{m['users_accuracy']:.3f}",
                f"{m['producers_accuracy']:.3f}",
                f"{m['f1']:.3f}",
                c["tp"],
                c["fp"],
                c["fn"],
                c["tn"],
                med,
                iqr,
                m["early"],
            ]
        )
    with open(out / "accuracy.csv", "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(header)
        wr.writerows(lines)
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(str(v) for v in row) + " |" for row in lines]
    (out / "accuracy.md").write_text("\n".join(md) + "\n")
    return [out / "metrics.json", out / "accuracy.csv", out / "accuracy.md"]
