"""Dated reference points and the accuracy of alerts on them (one scoring code for every method).

A reference file (GeoJSON, GeoPackage, Shapefile or CSV with ``lon``/``lat`` or ``x``/``y``
columns) holds points with a ``date`` column: the date of the disturbance, empty for undisturbed
points (a boolean ``disturbed`` column, when present, must agree). Points are located on the
series grid (pixel centres).

Scoring, per method: a disturbed point with an alert during the monitoring period is a true
positive, an undisturbed point with one a false positive. User's accuracy (precision), producer's
accuracy (recall), F1 and the confusion matrix follow; the detection lag is the date the alert
was issued (for dinogeo the confirmation date of a high-confidence alert; for ``nrt`` the date
the monitor flagged the break) minus the reference date, summarised by its median and quartiles.
Alerts issued before the reference date count as detections and are reported as ``early``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dinogeo.errors import LabelError

__all__ = ["ReferencePoints", "load_reference", "score_alerts"]


@dataclass(frozen=True)
class ReferencePoints:
    """Reference points on a series grid.

    Attributes:
        rows: (N,) pixel rows.
        cols: (N,) pixel columns.
        disturbed: (N,) bool.
        dates: (N,) ``datetime64[D]`` disturbance dates (NaT for undisturbed points).
        path: the file they came from.
    """

    rows: np.ndarray
    cols: np.ndarray
    disturbed: np.ndarray
    dates: np.ndarray
    path: Path

    def __len__(self) -> int:
        return len(self.rows)


def _read(path: Path) -> Any:
    import geopandas as gpd
    import pandas as pd

    if path.suffix.lower() == ".csv":
        df = pd.read_csv(path)
        cols = {c.lower(): c for c in df.columns}
        if "lon" in cols and "lat" in cols:
            geom = gpd.points_from_xy(df[cols["lon"]], df[cols["lat"]])
            return gpd.GeoDataFrame(df, geometry=geom, crs="EPSG:4326")
        raise LabelError(f"{path}: a reference CSV needs lon and lat columns (WGS84)")
    try:
        return gpd.read_file(path)
    except (OSError, ValueError, RuntimeError) as err:  # pyogrio's errors are RuntimeErrors
        raise LabelError(f"{path}: cannot read the reference points ({err})") from err


def load_reference(
    path: str | Path, crs: Any, transform: Any, width: int, height: int
) -> ReferencePoints:
    """Read reference points and place them on a grid.

    Args:
        path: the points file.
        crs: grid CRS.
        transform: grid transform.
        width: grid width.
        height: grid height.

    Returns:
        The points with pixel positions.

    Raises:
        LabelError: no CRS, no ``date`` column, unreadable dates, points outside the grid.
    """
    path = Path(path)
    if not path.exists():
        raise LabelError(f"{path}: reference points file does not exist")
    gdf = _read(path)
    if gdf.crs is None:
        raise LabelError(f"{path}: the reference points have no CRS; save them with one")
    cols = {c.lower(): c for c in gdf.columns}
    if "date" not in cols:
        raise LabelError(
            f"{path}: needs a 'date' column (disturbance date, empty when undisturbed)"
        )
    if len(gdf) == 0 or not (gdf.geom_type == "Point").all():
        raise LabelError(f"{path}: needs one or more Point features")
    pts = gdf.to_crs(crs)
    xs, ys = pts.geometry.x.to_numpy(), pts.geometry.y.to_numpy()
    inv = ~transform
    colf, rowf = inv @ (xs, ys)
    rows, cols_ = np.floor(rowf).astype(int), np.floor(colf).astype(int)
    outside = (rows < 0) | (rows >= height) | (cols_ < 0) | (cols_ >= width)
    if outside.any():
        raise LabelError(
            f"{path}: {int(outside.sum())} of {len(gdf)} reference points lie outside the series "
            f"(first at x={xs[outside][0]:.1f}, y={ys[outside][0]:.1f} in {crs}); clip the points "
            "to the imagery or pass the series that covers them"
        )
    raw = gdf[cols["date"]]
    dates = np.full(len(gdf), np.datetime64("NaT"), "datetime64[D]")
    for i, v in enumerate(raw):
        if (
            v is None
            or (isinstance(v, float) and np.isnan(v))
            or str(v).strip() in ("", "NaT", "None")
        ):
            continue
        try:
            dates[i] = np.datetime64(str(v)[:10], "D")
        except ValueError as err:
            raise LabelError(f"{path}: row {i}: cannot read the date {v!r} (YYYY-MM-DD)") from err
    disturbed = ~np.isnat(dates)
    if "disturbed" in cols:
        flag = gdf[cols["disturbed"]].astype(bool).to_numpy()
        if (flag != disturbed).any():
            raise LabelError(
                f"{path}: 'disturbed' disagrees with 'date' (a disturbed point needs a date)"
            )
    return ReferencePoints(rows, cols_, disturbed, dates, path)


def score_alerts(
    ref: ReferencePoints,
    detected: np.ndarray,
    alert_date: np.ndarray,
    idx: np.ndarray | None = None,
) -> dict[str, Any]:
    """Accuracy of alerts at reference points.

    Args:
        ref: the reference points.
        detected: (N,) bool, an alert at the point during the monitoring period.
        alert_date: (N,) ``datetime64[D]``, the date the alert was issued (NaT when none).
        idx: score only these points (default all).

    Returns:
        ``users_accuracy``, ``producers_accuracy``, ``f1``, ``confusion``
        (``tp, fp, fn, tn``), ``lag_days`` (``median``, ``q25``, ``q75``, ``n``), ``early`` (alerts
        before the reference date) and ``points``.
    """
    sel = np.arange(len(ref)) if idx is None else np.asarray(idx)
    y, d = ref.disturbed[sel], np.asarray(detected, bool)[sel]
    tp, fp = int((y & d).sum()), int((~y & d).sum())
    fn, tn = int((y & ~d).sum()), int((~y & ~d).sum())
    ua = tp / (tp + fp) if tp + fp else 0.0
    pa = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * ua * pa / (ua + pa) if ua + pa else 0.0
    hit = y & d
    lags = (
        (np.asarray(alert_date)[sel][hit] - ref.dates[sel][hit])
        .astype("timedelta64[D]")
        .astype(float)
    )
    lag: dict[str, float | int | None] = {
        "median": None,
        "q25": None,
        "q75": None,
        "n": int(lags.size),
    }
    if lags.size:
        q25, med, q75 = np.percentile(lags, [25, 50, 75])
        lag = {"median": float(med), "q25": float(q25), "q75": float(q75), "n": int(lags.size)}
    return {
        "users_accuracy": ua,
        "producers_accuracy": pa,
        "f1": f1,
        "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
        "lag_days": lag,
        "early": int((lags < 0).sum()),
        "points": int(sel.size),
    }


def as_date(day: np.datetime64) -> dt.date:
    """``datetime64`` to ``datetime.date``."""
    date: dt.date = day.astype("datetime64[D]").astype(dt.date)
    return date
