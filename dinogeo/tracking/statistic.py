"""Per-pixel change statistic of every date against a stable history period.

For each pixel and each *index channel* (backscatter VV and VH in dB for radar, NDVI for optical
imagery, or every band), the history period gives a mean (optionally a seasonal harmonic) and a
standard deviation. Each date then gets a standardised residual ``z = (value - expected) / sd``
per channel, and the channels combine into one score:

* ``drop`` (loss indices: backscatter, NDVI): ``s = -sum_k z_k / sqrt(K)``; about N(0, 1) for a
  stable pixel, large and positive when the indices fall;
* ``magnitude`` (every band, or backbone features): ``s = sqrt(mean_k z_k^2)``, direction-free.

Speckle and noise are damped first by a ``smooth x smooth`` NaN-aware moving average (in linear
power for dB values). The same statistic on the history dates, each left out of its own fit
(:func:`history_scores`), gives the null distribution that sets a threshold for a target false
alarm rate (:mod:`dinogeo.tracking.calibrate`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import uniform_filter

from dinogeo.data.sensors import Sensor
from dinogeo.errors import SensorError

__all__ = ["ChangeStatistic", "IndexSeries", "index_series"]

_EPS = np.float32(1e-6)


@dataclass(frozen=True)
class IndexSeries:
    """Index channels of a window: values (T, K, h, w), and how the score combines them."""

    values: np.ndarray
    names: tuple[str, ...]
    mode: str  # "drop" or "magnitude"


def _band(sensor: Sensor, *names: str) -> int:
    for i, b in enumerate(sensor.bands):
        if b.name.lower() in names or any(a.lower() in names for a in b.aliases):
            return i
    raise SensorError(f"sensor {sensor.name} has no band named {names[0]!r}; pick index='bands'")


def _smooth(x: np.ndarray, size: int, *, db: bool) -> np.ndarray:
    """NaN-aware ``size x size`` moving average over the last two axes (in linear power if db)."""
    if size <= 1:
        return x
    lin = np.power(np.float32(10), x / np.float32(10)) if db else x
    valid = np.isfinite(lin)
    filled = np.where(valid, lin, 0).astype(np.float32)
    axes = (0,) * (x.ndim - 2) + (size, size)
    num = uniform_filter(filled, size=axes, mode="nearest")
    den = uniform_filter(valid.astype(np.float32), size=axes, mode="nearest")
    out = num / np.maximum(den, _EPS)
    out[~valid] = np.nan  # an invalid observation stays invalid (clouds are not filled in)
    result: np.ndarray = np.float32(10) * np.log10(np.maximum(out, _EPS)) if db else out
    return result


def is_radar(sensor: Sensor) -> bool:
    """True for backscatter sensors (bands named VV/VH)."""
    names = {b.name.upper() for b in sensor.bands}
    return bool(names & {"VV", "VH"})


def index_series(
    x: np.ndarray, sensor: Sensor, index: str = "auto", smooth: int = 3
) -> IndexSeries:
    """Index channels of a window read by :meth:`TimeSeries.read`.

    Args:
        x: (T, C, h, w) values in physical units, NaN where invalid.
        sensor: the series' sensor.
        index: ``auto`` (``backscatter`` for radar, ``ndvi`` when red and NIR exist, else
            ``bands``), ``backscatter`` (VV, VH in dB, loss = decrease), ``vh`` (VH only),
            ``ndvi`` (loss = decrease) or ``bands`` (every band, direction-free).
        smooth: moving-average size in pixels (1 = none).

    Returns:
        The index channels.
    """
    if index == "auto":
        if is_radar(sensor):
            index = "backscatter"
        else:
            try:
                _band(sensor, "red"), _band(sensor, "nir")
                index = "ndvi"
            except SensorError:
                index = "bands"
    if index in ("backscatter", "vh"):
        names = ("VV", "VH") if index == "backscatter" else ("VH",)
        idx = [_band(sensor, n.lower()) for n in names]
        return IndexSeries(_smooth(x[:, idx], smooth, db=True), names, "drop")
    if index == "ndvi":
        red, nir = x[:, _band(sensor, "red")], x[:, _band(sensor, "nir")]
        red, nir = _smooth(red, smooth, db=False), _smooth(nir, smooth, db=False)
        ndvi = (nir - red) / np.maximum(nir + red, _EPS)
        return IndexSeries(ndvi[:, None].astype(np.float32), ("NDVI",), "drop")
    if index == "bands":
        return IndexSeries(_smooth(x, smooth, db=False), tuple(sensor.band_names), "magnitude")
    raise SensorError(f"unknown index {index!r}; pick auto, backscatter, vh, ndvi or bands")


def _design(doy: np.ndarray, order: int) -> np.ndarray:
    cols = [np.ones_like(doy, dtype=np.float64)]
    for k in range(1, order + 1):
        ang = 2 * np.pi * k * doy / 365.25
        cols += [np.cos(ang), np.sin(ang)]
    return np.stack(cols, 1)


@dataclass(frozen=True)
class ChangeStatistic:
    """History model and scores.

    Attributes:
        seasonal_order: harmonics of the history fit (0 = mean only).
        min_history: fewest valid history observations for a pixel to be monitored.
    """

    seasonal_order: int = 0
    min_history: int = 6

    def _fit(
        self, y: np.ndarray, hist: np.ndarray, doy: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Expected values (T, K, h, w), sd (K, h, w), valid history count (h, w), residuals."""
        X = _design(doy, self.seasonal_order)  # (T, P)
        p = X.shape[1]
        yh = y[hist]
        w = np.isfinite(yh)
        n = w.all(axis=1).sum(axis=0)  # (h, w) history observations valid in every channel
        if p == 1:
            mean = np.nansum(yh, axis=0) / np.maximum(w.sum(axis=0), 1)
            expected = np.broadcast_to(mean, y.shape)
        else:
            Xh = X[hist]
            wf = w.astype(np.float64)
            A = np.einsum("tp,tq,tkhw->khwpq", Xh, Xh, wf) + 1e-6 * np.eye(p)
            b = np.einsum("tp,tkhw->khwp", Xh, np.where(w, yh, 0).astype(np.float64))
            beta = np.linalg.solve(A, b[..., None])[..., 0]  # (K, h, w, P)
            expected = np.einsum("tp,khwp->tkhw", X, beta).astype(np.float32)
        res = y - expected
        dof = np.maximum(w.sum(axis=0) - p, 1)
        sd = np.sqrt(np.nansum(res[hist] ** 2, axis=0) / dof).astype(np.float32)
        return expected, np.maximum(sd, _EPS), n, res

    def scores(
        self, idx: IndexSeries, hist: np.ndarray, doy: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scores of every date, leave-one-out scores of the history dates, and the monitored mask.

        Args:
            idx: index channels (T, K, h, w).
            hist: (T,) bool, the history dates.
            doy: (T,) day of year of every date.

        Returns:
            ``scores`` (T, h, w) float32 (NaN where invalid), ``loo`` (T_hist, h, w) float32
            (each history date scored against a fit without it), ``monitored`` (h, w) bool
            (enough valid history observations).
        """
        y = idx.values.astype(np.float32)
        _, sd, n, res = self._fit(y, hist, doy)
        z = res / sd
        # leave-one-out on the history: for a mean-only fit, the residual of a left-out point is
        # e / (1 - 1/n) and the variance without it follows from the sums (exact); with harmonics
        # the in-sample residuals are inflated by n / (n - p) (approximate).
        p = 2 * self.seasonal_order + 1
        nk = np.maximum(np.isfinite(y[hist]).sum(axis=0), p + 2).astype(np.float32)
        e = res[hist]
        e_loo = e * nk / (nk - 1) if p == 1 else e * np.sqrt(nk / (nk - p))
        ss = sd**2 * (nk - p)
        var_loo = np.maximum((ss - e**2 * nk / (nk - 1)) / (nk - 1 - p), _EPS**2)
        z_loo = e_loo / np.sqrt(var_loo)
        monitored = n >= self.min_history
        return self._combine(z, idx.mode), self._combine(z_loo, idx.mode), monitored

    @staticmethod
    def _combine(z: np.ndarray, mode: str) -> np.ndarray:
        k = z.shape[1]
        if mode == "drop":
            s = -np.sum(z, axis=1) / np.sqrt(np.float32(k))
        else:
            s = np.sqrt(np.mean(z**2, axis=1))
        result: np.ndarray = s.astype(np.float32)
        return result
