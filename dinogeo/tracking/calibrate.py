"""Alert thresholds: from a target false-alarm rate on the history, or fitted on labelled points.

* :func:`threshold_from_history` (the default, needs no labels): every history date is scored
  against a fit that leaves it out; from those scores, :func:`false_alarm_rates` estimates the
  share of stable pixels that would raise a confirmed alert over the monitoring period, and the
  threshold is the lowest of a grid whose share is at most ``false_alarm_rate``. History that
  already holds disturbances makes it conservative.
* :func:`threshold_from_points`: the threshold of the grid that maximises F1 on labelled points,
  with out-of-fold predictions from stratified k-fold cross-validation so that the reported
  accuracy never scores a point with a threshold fitted on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "THRESHOLDS",
    "CrossValidated",
    "ExceedanceCounter",
    "false_alarm_rates",
    "threshold_from_history",
    "threshold_from_points",
]

#: candidate thresholds (score units, about standard deviations of a stable pixel)
THRESHOLDS = np.round(np.arange(0.5, 6.01, 0.25), 2)


def false_alarm_rates(
    loo: np.ndarray, monitored_obs: float, *, window: int, need: int
) -> np.ndarray:
    """Expected share of stable pixels with a confirmed false alarm over the monitoring period.

    ``p``, the chance that one observation of a stable pixel exceeds a threshold, is the exceedance
    rate of the leave-one-out history scores. Treating observations as independent, an anomaly is
    confirmed with probability ``q = P(Binomial(window, p) >= need)``, and a pixel observed ``M``
    times raises a false alarm with probability ``1 - (1 - p q)^M``. (Running the rule over the
    history itself would underestimate it: two neighbouring anomalies inflate each other's
    left-out fit.)

    Args:
        loo: leave-one-out history scores of sampled pixels (any shape, NaN = no observation).
        monitored_obs: mean number of valid monitoring observations per pixel (``M``).
        window: confirmation window (as in the decision).
        need: confirmations needed.

    Returns:
        (len(THRESHOLDS),) false-alarm share for every candidate threshold.
    """
    counter = ExceedanceCounter()
    counter.add(loo)
    return counter.false_alarm_rates(monitored_obs, window=window, need=need)


class ExceedanceCounter:
    """Exceedance counts of leave-one-out history scores at every candidate threshold.

    Tile by tile, :meth:`add` counts the finite scores above each of :data:`THRESHOLDS`, so the
    history false-alarm rates of a whole scene need memory for one tile, not a sample of scores.
    """

    def __init__(self) -> None:
        self.above = np.zeros(len(THRESHOLDS), np.int64)
        self.total = 0

    def add(self, loo: np.ndarray) -> None:
        """Count the finite scores of ``loo`` (any shape) above each threshold."""
        s = np.sort(loo[np.isfinite(loo)], axis=None)
        self.above += s.size - np.searchsorted(s, THRESHOLDS, side="right")
        self.total += int(s.size)

    def false_alarm_rates(self, monitored_obs: float, *, window: int, need: int) -> np.ndarray:
        """:func:`false_alarm_rates` of every score counted so far."""
        from math import comb

        if self.total == 0:
            return np.zeros(len(THRESHOLDS))
        p = self.above / self.total
        q = sum(
            comb(window, j) * p**j * (1 - p) ** (window - j)
            for j in range(max(need, 0), window + 1)
        )
        return 1.0 - (1.0 - p * q) ** max(monitored_obs, 1.0)


def threshold_from_history(rates: np.ndarray, false_alarm_rate: float) -> float:
    """Lowest candidate threshold whose history false-alarm rate is at most the target."""
    ok = np.where(rates <= false_alarm_rate)[0]
    return float(THRESHOLDS[ok[0]] if ok.size else THRESHOLDS[-1])


@dataclass
class CrossValidated:
    """Result of :func:`threshold_from_points`.

    Attributes:
        threshold: fitted on every point (used for the map).
        fold_thresholds: threshold chosen in each fold.
        oof_index: per point, index into ``THRESHOLDS`` of the threshold it was predicted with.
        f1_by_threshold: F1 of every candidate on all points (for the report; not a CV figure).
    """

    threshold: float
    fold_thresholds: list[float]
    oof_index: np.ndarray
    f1_by_threshold: list[float]


def _folds(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), int)
    for cls in (False, True):
        idx = np.where(labels == cls)[0]
        idx = idx[rng.permutation(len(idx))]
        fold[idx] = np.arange(len(idx)) % k
    return fold


def threshold_from_points(
    labels: np.ndarray,
    f1_of: Callable[[int, np.ndarray], float],
    *,
    folds: int = 5,
    seed: int = 0,
) -> CrossValidated:
    """Fit the threshold on labelled points with stratified k-fold cross-validation.

    Args:
        labels: (N,) bool, disturbed points.
        f1_of: ``f1_of(threshold_index, point_indices) -> F1`` of that candidate on those points.
        folds: number of folds.
        seed: fold assignment seed.

    Returns:
        The fitted threshold and the out-of-fold assignment.
    """
    n = len(labels)
    fold = _folds(np.asarray(labels, bool), folds, seed)
    oof = np.zeros(n, int)
    chosen: list[float] = []

    def best(idx: np.ndarray) -> int:
        f1s = np.array([f1_of(i, idx) for i in range(len(THRESHOLDS))])
        return int(np.flatnonzero(f1s >= f1s.max() - 1e-12)[-1])  # ties: the strictest

    for k in range(folds):
        train, test = np.where(fold != k)[0], np.where(fold == k)[0]
        i = best(train)
        oof[test] = i
        chosen.append(float(THRESHOLDS[i]))
    every = np.arange(n)
    return CrossValidated(
        float(THRESHOLDS[best(every)]),
        chosen,
        oof,
        [float(f1_of(i, every)) for i in range(len(THRESHOLDS))],
    )


def summary(cv: CrossValidated) -> dict[str, Any]:
    """JSON-ready summary."""
    return {
        "threshold": cv.threshold,
        "fold_thresholds": cv.fold_thresholds,
        "f1_by_threshold_all_points": dict(zip([float(t) for t in THRESHOLDS], cv.f1_by_threshold)),
    }
