"""The standard near-real-time monitors of the ``nrt`` package (JRC) on the raw series.

CCDC, EWMA, CuSum and MoSum (the BFAST-monitor test) run with ``nrt``'s default parameters on an
index of the unsmoothed series: VH and the VV/VH ratio (VV - VH in dB) for radar, NDVI for
optical imagery. Each is fitted on the same history period and fed the monitoring dates in
order, exactly as ``nrt`` is used; CCDC's default outlier screening needs green and SWIR bands,
so it runs without screening on radar. The detection dates are then scored by
:func:`dinogeo.tracking.reference.score_alerts`, the code that scores dinogeo's alerts.
"""

from __future__ import annotations

import datetime as dt
import warnings
from typing import Any

import numpy as np

from dinogeo.data.sensors import Sensor
from dinogeo.tracking.statistic import _band, is_radar

__all__ = ["MONITORS", "baseline_indices", "run_monitor"]

MONITORS = ("ccdc", "ewma", "cusum", "mosum")


def baseline_indices(x: np.ndarray, sensor: Sensor) -> dict[str, np.ndarray]:
    """Raw index series of the baselines.

    Args:
        x: (T, C, ...) values in physical units (NaN invalid).
        sensor: the series' sensor.

    Returns:
        ``{name: (T, ...) float32}``: ``VH`` and ``VV/VH`` for radar, ``NDVI`` otherwise.
    """
    if is_radar(sensor):
        vv, vh = x[:, _band(sensor, "vv")], x[:, _band(sensor, "vh")]
        return {"VH": vh.astype(np.float32), "VV/VH": (vv - vh).astype(np.float32)}
    red, nir = x[:, _band(sensor, "red")], x[:, _band(sensor, "nir")]
    return {"NDVI": ((nir - red) / np.maximum(nir + red, 1e-6)).astype(np.float32)}


def run_monitor(
    name: str, y: np.ndarray, dates: np.ndarray, hist: np.ndarray, mon: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Run one ``nrt`` monitor with its defaults on a (T, N) series.

    Args:
        name: ``ccdc``, ``ewma``, ``cusum`` or ``mosum``.
        y: (T, N) index values (NaN invalid).
        dates: (T,) ``datetime64[D]``.
        hist: (T,) bool, history dates.
        mon: (T,) bool, monitoring dates.

    Returns:
        ``detected`` (N,) bool and ``date`` (N,) ``datetime64[D]`` (NaT when none).
    """
    import xarray as xr
    from nrt.monitor.ccdc import CCDC
    from nrt.monitor.cusum import CuSum
    from nrt.monitor.ewma import EWMA
    from nrt.monitor.mosum import MoSum

    classes: dict[str, Any] = {"ccdc": CCDC, "ewma": EWMA, "cusum": CuSum, "mosum": MoSum}
    if name not in classes:
        raise ValueError(f"unknown monitor {name!r}; pick from {MONITORS}")
    n = y.shape[1]
    times = dates.astype("datetime64[ns]")
    da = xr.DataArray(
        y[:, None, :],
        dims=("time", "y", "x"),
        coords={"time": times, "y": [0.0], "x": np.arange(n, dtype=float)},
    )
    monitor = classes[name]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name == "ccdc":
            monitor.fit(da.isel(time=np.where(hist)[0]), screen_outliers=None)
        else:
            monitor.fit(da.isel(time=np.where(hist)[0]))
        for t in np.where(mon)[0]:
            day = dates[t].astype("datetime64[D]").astype(dt.date)
            monitor.monitor(y[t][None, :], dt.datetime(day.year, day.month, day.day))
    days = np.asarray(monitor.detection_date, dtype=np.int64)[0]
    detected = days > 0
    out = np.full(n, np.datetime64("NaT"), "datetime64[D]")
    out[detected] = np.datetime64("1970-01-01", "D") + days[detected]
    return detected, out
