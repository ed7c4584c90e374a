"""Accuracy of dinogeo and of every ``nrt`` monitor on the same reference points, by the same code.

dinogeo's alerts at the points come from the calibration pass (every threshold of the grid);
the ``nrt`` monitors run on the raw (unsmoothed) series at the points. Every method is scored by
:func:`dinogeo.tracking.reference.score_alerts`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from dinogeo.tracking import calibrate
from dinogeo.tracking.baselines import baseline_indices, run_monitor
from dinogeo.tracking.decision import HIGH
from dinogeo.tracking.reference import ReferencePoints, score_alerts
from dinogeo.tracking.tiles import TileScorer

__all__ = ["alert_dates", "compare_methods"]


def alert_dates(a: Any, days: np.ndarray) -> np.ndarray:
    """Confirmation date of high-confidence alerts (NaT otherwise)."""
    out = np.full(a.confirmed.shape, np.datetime64("NaT"), "datetime64[D]")
    ok = a.confirmed >= 0
    out[ok] = days[a.confirmed[ok]]
    return out


def compare_methods(
    ref: ReferencePoints,
    raw: np.ndarray,
    s: TileScorer,
    point_alerts: dict[int, Any],
    thr_history: float,
    cv: calibrate.CrossValidated | None,
    mon_idx: np.ndarray,
    monitors: Sequence[str],
    progress: bool,
) -> dict[str, Any]:
    """Accuracy of dinogeo and every nrt monitor on the same points, by the same code."""
    days = s.series.dates64[mon_idx]
    alerts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    grid = [float(t) for t in calibrate.THRESHOLDS]
    if cv is not None:  # out-of-fold: each point predicted with the threshold of its fold
        det = np.zeros(len(ref), bool)
        when = np.full(len(ref), np.datetime64("NaT"), "datetime64[D]")
        for i in np.unique(cv.oof_index):
            sel = cv.oof_index == i
            a = point_alerts[int(i)]
            det[sel] = (a.confidence == HIGH)[sel]
            when[sel] = alert_dates(a, days)[sel]
        alerts["dinogeo (cross-validated)"] = (det, when)
    if thr_history in grid:
        a = point_alerts[grid.index(thr_history)]
        alerts["dinogeo (history threshold)"] = (a.confidence == HIGH, alert_dates(a, days))
    # nrt on the raw (unsmoothed) series at the points
    idx = baseline_indices(raw, s.series.sensor)
    jobs = [(m, k) for m in monitors for k in idx]
    for m, k in tqdm(jobs, desc="track: nrt baselines", unit="monitor", disable=not progress):
        name = {"ccdc": "CCDC", "ewma": "EWMA", "cusum": "CuSum", "mosum": "MoSum"}[m]
        alerts[f"nrt {name} ({k})"] = run_monitor(m, idx[k], s.series.dates64, s.hist, s.mon)
    methods = {name: score_alerts(ref, det, when) for name, (det, when) in alerts.items()}
    table: dict[str, Any] = {
        "row": ref.rows,
        "col": ref.cols,
        "disturbed": ref.disturbed,
        "reference_date": [str(d) if not np.isnat(d) else "" for d in ref.dates],
    }
    for name, (det, when) in alerts.items():
        table[f"{name} alert date"] = [str(w) if d else "" for d, w in zip(det, when)]
    best = max(
        (n for n in methods if n.startswith("nrt")), key=lambda n: methods[n]["f1"], default=None
    )
    out: dict[str, Any] = {
        "per_point": table,
        "methods": methods,
        "points": len(ref),
        "disturbed": int(ref.disturbed.sum()),
    }
    if best is not None and "dinogeo (cross-validated)" in methods:
        d, b = methods["dinogeo (cross-validated)"], methods[best]
        out["done_criterion"] = {
            "best_nrt": best,
            "f1_margin": d["f1"] - b["f1"],
            "lag_dinogeo": d["lag_days"]["median"],
            "lag_best_nrt": b["lag_days"]["median"],
            "met": bool(
                d["f1"] >= b["f1"] + 0.05
                and d["lag_days"]["median"] is not None
                and b["lag_days"]["median"] is not None
                and d["lag_days"]["median"] <= b["lag_days"]["median"]
            ),
        }
    return out
